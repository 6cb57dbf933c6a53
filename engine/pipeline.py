"""Page and chapter runs of RAP -> ICP -> GSRP emitting typed events; retrieval-only runs."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from .canvas import WorkSize, restore_page
from .chapter import Chapter, ImageSource, PageImage
from .curation import Choices
from .errors import ColorFlowError
from .events import (
    CancelToken,
    Cancelled,
    EventSink,
    Finished,
    PageDone,
    PageFailed,
    Preview,
    Progress,
    Started,
    ignore,
)
from .fileio import atomic_save_image, atomic_write_json
from .project import ChapterProject
from .retrieval import PageRetrieval, Retriever


def page_folder_name(index: int, name: str) -> str:
    """A safe, ordered name for page `index` (0-based), e.g. `003_page-10`."""
    stem = Path(name).stem
    safe = re.sub(r"[^\w.-]+", "_", stem).strip("._") or "page"
    return f"{index + 1:03d}_{safe[:60]}"


def write_retrieval(result: PageRetrieval, folder: Path) -> dict[str, str]:
    """Write canvas.png, mask.png and retrieval.json for one page, all or nothing."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        atomic_save_image(result.canvas, staging / "canvas.png")
        atomic_save_image(result.mask, staging / "mask.png")
        atomic_write_json(staging / "retrieval.json", result.to_json())
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {k: f"{folder.name}/{k}.{ext}" for k, ext in (("canvas", "png"), ("mask", "png"), ("retrieval", "json"))}


@dataclass
class ChapterReport:
    """Outcome of a chapter job, per page."""

    done: list[str]
    failed: dict[str, str]
    cancelled: bool = False
    skipped: list[str] = field(default_factory=list)  # already done with the same settings
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage


def _page_failed(project: ChapterProject, report: ChapterReport, emit: EventSink, name: str, reason: str) -> None:
    report.failed[name] = reason
    project.set_status(name, "failed", reason)
    project.save()
    emit(PageFailed(name, reason))


def _reason(exc: Exception) -> str:
    """User-facing reason: our own errors speak for themselves, others name their type."""
    return str(exc) if isinstance(exc, ColorFlowError) else f"{type(exc).__name__}: {exc}"


def _prepare(project: ChapterProject, chapter: Chapter, references: Sequence[ImageSource]) -> None:
    project.sync_pages([(s.name, s.ref) for s in chapter.sources])
    project.add_references([r.ref for r in references])
    project.save()


def _load(chapter: Chapter, index: int) -> PageImage:
    source = chapter.sources[index]
    if source.ref in chapter.errors:
        raise ColorFlowError(chapter.errors[source.ref])
    return chapter.load_page(index)


def retrieve_chapter(
    chapter: Chapter,
    references: Sequence[ImageSource],
    retriever: Retriever,
    project: ChapterProject,
    size: WorkSize | None = None,
    emit: EventSink = ignore,
    cancel: CancelToken | None = None,
) -> ChapterReport:
    """RAP for every page: per-page outputs in the project folder, status saved as we go."""
    cancel = cancel or CancelToken()
    _prepare(project, chapter, references)
    report = ChapterReport([], {})
    total = len(chapter.sources)
    emit(Started("retrieve", total))
    for index, source in enumerate(chapter.sources):
        if cancel.cancelled:
            report.cancelled = True
            emit(Cancelled(source.name))
            break
        emit(Progress("RAP", index, total, source.name))
        try:
            page = _load(chapter, index)
            result = retriever.retrieve(page, references, project.choices_for(source.name), size)
            outputs = write_retrieval(result, project.folder / page_folder_name(index, source.name))
        except Exception as exc:  # one bad page never ends the chapter
            _page_failed(project, report, emit, source.name, _reason(exc))
            continue
        project.record_outputs(source.name, outputs, "retrieved")
        project.save()
        report.done.append(source.name)
        emit(PageDone(source.name, outputs, {"warnings": result.warnings}))
    emit(Finished(len(report.done), len(report.failed)))
    return report


@dataclass(frozen=True)
class PipelineSettings:
    """Everything that determines a colored page, besides the inputs and the models."""

    colorize: Any  # colorize.ColorizeSettings
    upscale: Any  # upscale.UpscaleSettings
    keep_ink: bool = True
    size: WorkSize | None = None

    def key(self, page: PageImage, retrieval: PageRetrieval, models_id: str) -> str:
        """Hash of settings, page content, picks and models: equal keys, equal output."""
        parts = {
            "colorize": asdict(self.colorize),
            "upscale": asdict(self.upscale),
            "keep_ink": self.keep_ink,
            "work_size": str(retrieval.work_size),
            "page": page.sha256,
            "picks": retrieval.to_json()["picks"],
            "models": models_id,
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


class ColorFlowPipeline:
    """The three stages for one page, on loaded models; the chapter loop lives below."""

    def __init__(self, retriever: Retriever, colorizer, upscaler, models_id: str) -> None:
        self.retriever, self.colorizer, self.upscaler = retriever, colorizer, upscaler
        self.models_id = models_id
        self.timings = {"RAP": 0.0, "ICP": 0.0, "GSRP": 0.0}

    def retrieve(self, page: PageImage, references: Sequence[ImageSource], choices: Choices, size: WorkSize | None) -> PageRetrieval:
        start = time.perf_counter()
        try:
            return self.retriever.retrieve(page, references, choices, size)
        finally:
            self.timings["RAP"] += time.perf_counter() - start

    def color(
        self,
        page: PageImage,
        retrieval: PageRetrieval,
        settings: PipelineSettings,
        emit: EventSink = ignore,
        cancel: CancelToken | None = None,
    ) -> Image.Image:
        """ICP then GSRP; the colored page at the page's own size. Raises colorize.Interrupted
        when cancelled (within one denoising step)."""
        from .upscale import keep_ink

        cancel = cancel or CancelToken()
        name = page.source.name

        def on_step(info) -> bool:
            emit(Progress("ICP", info.step, info.total, name))
            if info.preview is not None:
                emit(Preview(name, info.preview))
            return not cancel.cancelled

        start = time.perf_counter()
        colored = self.colorizer(retrieval.canvas, retrieval.mask, retrieval.work_size, settings.colorize, on_step)
        self.timings["ICP"] += time.perf_counter() - start
        start = time.perf_counter()
        emit(Progress("GSRP", 0, 1, name))
        frame, frame_fit = self.upscaler(colored, page.image, retrieval.work_size, settings.upscale)
        final = restore_page(frame, frame_fit)
        if settings.keep_ink:
            final = keep_ink(final, page.image)
        emit(Progress("GSRP", 1, 1, name))
        self.timings["GSRP"] += time.perf_counter() - start
        return final

    def release_retrieval(self) -> None:
        """Free the CLIP encoder's GPU memory before diffusion."""
        release = getattr(self.retriever.embedder, "release", None)
        if release:
            release()


def colorize_chapter(
    chapter: Chapter,
    references: Sequence[ImageSource],
    pipeline: ColorFlowPipeline,
    project: ChapterProject,
    settings: PipelineSettings,
    emit: EventSink = ignore,
    cancel: CancelToken | None = None,
    resume: bool = False,
    only: set[str] | None = None,
) -> ChapterReport:
    """Color a chapter: RAP for every page, then RAP (cached) + ICP + GSRP page by page. Each page is written
    as `NNN_name.png` at its own size and the project saved, so a killed run loses at most the
    page in flight. With `resume`, pages done with the same settings key are skipped."""
    from .colorize import Interrupted

    cancel = cancel or CancelToken()
    _prepare(project, chapter, references)
    report = ChapterReport([], {})
    indices = [i for i, s in enumerate(chapter.sources) if only is None or s.name in only]
    emit(Started("colorize", len(indices)))

    # Pass 1: RAP for every page, which fills the embedding cache; then the CLIP encoder
    # leaves the GPU. Nothing is kept but the list of usable pages, so memory stays bounded.
    usable: list[int] = []
    for position, index in enumerate(indices):
        name = chapter.sources[index].name
        if cancel.cancelled:
            break
        emit(Progress("RAP", position, len(indices), name))
        try:
            pipeline.retrieve(_load(chapter, index), references, project.choices_for(name), settings.size)
            usable.append(index)
        except Exception as exc:  # one bad page never ends the chapter
            _page_failed(project, report, emit, name, _reason(exc))
    pipeline.release_retrieval()

    # Pass 2, page by page: retrieval again (all embeddings cached: no encoder pass), ICP, GSRP.
    for index in usable:
        name = chapter.sources[index].name
        try:
            page = _load(chapter, index)
            retrieval = pipeline.retrieve(page, references, project.choices_for(name), settings.size)
        except Exception as exc:
            _page_failed(project, report, emit, name, _reason(exc))
            continue
        state = project.page(name)
        key = settings.key(page, retrieval, pipeline.models_id)
        output = project.folder / f"{page_folder_name(index, name)}.png"
        if resume and state.status == "done" and state.settings_key == key and output.exists():
            report.skipped.append(name)
            emit(PageDone(name, {"colored": str(output)}, {"skipped": True}))
            continue
        if cancel.cancelled:
            report.cancelled = True
            emit(Cancelled(name))
            break
        project.set_status(name, "running")
        try:
            final = pipeline.color(page, retrieval, settings, emit, cancel)
            atomic_save_image(final, output)
        except Interrupted:
            project.set_status(name, "pending")
            project.save()
            report.cancelled = True
            emit(Cancelled(name))
            break
        except Exception as exc:  # a bug or out-of-memory on one page must not end the chapter
            _page_failed(project, report, emit, name, _reason(exc))
            continue
        project.record_outputs(name, {"colored": output.name}, "done", key)
        project.save()
        report.done.append(name)
        emit(PageDone(name, {"colored": str(output)}, {"warnings": retrieval.warnings}))
    report.timings = dict(pipeline.timings)
    emit(Finished(len(report.done), len(report.failed)))
    return report


def load_retriever(models: str, device: str = "cpu", cache_dir: Path | None = None) -> Retriever:
    """The RAP retriever of a model source: its CLIP image encoder and the embedding cache
    (the per-user cache folder unless `cache_dir`)."""
    from .embedding import ClipEmbedder, EmbeddingCache
    from .models import resolve_models
    from .paths import embeddings_dir

    embedder = ClipEmbedder(resolve_models(models).image_encoder, device=device)
    return Retriever(embedder, EmbeddingCache(Path(cache_dir) if cache_dir else embeddings_dir()))


def load_pipeline(
    models: str,
    device: str = "cpu",
    low_vram: bool = False,
    cache_dir: Path | None = None,
    retriever: Retriever | None = None,
) -> ColorFlowPipeline:
    """Resolve a model source and load all three stages on `device` (reusing `retriever`
    when the caller already has one for the same models)."""
    from .colorize import Colorizer
    from .loading import load_diffusion
    from .models import resolve_models
    from .upscale import Upscaler

    paths = resolve_models(models)
    retriever = retriever or load_retriever(models, device, cache_dir)
    components = load_diffusion(paths, device, low_vram=low_vram)
    colorizer = Colorizer(components, low_vram)
    upscaler = Upscaler(components.vae, components.fusion, components.device, components.dtype)
    models_id = f"{paths.colorflow}|{retriever.embedder.encoder_id}"
    return ColorFlowPipeline(retriever, colorizer, upscaler, models_id)
