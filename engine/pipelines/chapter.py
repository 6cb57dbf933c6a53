"""Page and chapter runs of RAP -> ICP -> GSRP emitting typed events; retrieval-only runs."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from PIL import Image

from engine.rap.canvas import WorkSize, choose_work_size, restore_page
from engine.io.chapter import Chapter, ImageSource, PageImage
from engine.rap.curation import Choices
from engine.core.errors import ColorFlowError
from engine.core.events import (
    CancelToken,
    Cancelled,
    EventSink,
    Finished,
    Notice,
    PageDone,
    PageFailed,
    Preview,
    Progress,
    Started,
    ignore,
)
from engine.io.fileio import atomic_save_image, atomic_write_json, make_temp_folder, refuse_symlink
from engine.io.naming import page_folder_name
from engine.io.storage import is_storage_error
from engine.project.state import ChapterProject
from engine.rap.retrieval import PageRetrieval, Retriever
from engine.core.options import InputStyle, OutputSize, Procedure
from engine.pipelines.run_guard import color_with_memory_retry, storage_stop
from engine.pipelines.settings import InputSettings, PipelineSettings


def write_retrieval(result: PageRetrieval, folder: Path) -> dict[str, str]:
    """Write canvas.png, mask.png and retrieval.json for one page, all or nothing. A page folder
    that is a symbolic link is refused (OutputError naming it), never written through or replaced."""
    refuse_symlink(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = make_temp_folder(folder.parent, f".{folder.name}.")
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
    warnings: list[str] = field(default_factory=list)  # about the whole run: references not usable
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage


def _page_failed(project: ChapterProject, report: ChapterReport, emit: EventSink, name: str, reason: str) -> None:
    report.failed[name] = reason
    project.set_status(name, "failed", reason)
    project.save()
    emit(PageFailed(name, reason))


def _tell_unusable_references(retriever: Retriever, report: ChapterReport, emit: EventSink) -> None:
    """A Notice per reference that cannot be used (an image bomb, a damaged file), once per run:
    each page's retrieval.json lists it too, the command line and the app say it once."""
    for reason in retriever.unusable_references():
        if reason not in report.warnings:
            report.warnings.append(reason)
            emit(Notice(reason))


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


def prepare_page(preparer, page: PageImage, inputs: InputSettings):
    """The page framed, G computed (or cached) and the query made (preprocess stage)."""
    size = choose_work_size(page.image.size, inputs.size)
    return preparer.prepare(page.image, page.sha256, size, inputs.style, inputs.fit, inputs.screen_seed)


def retrieve_chapter(
    chapter: Chapter,
    references: Sequence[ImageSource],
    retriever: Retriever,
    project: ChapterProject,
    size: WorkSize | None = None,
    emit: EventSink = ignore,
    cancel: CancelToken | None = None,
    preparer=None,
    inputs: InputSettings | None = None,
) -> ChapterReport:
    """RAP for every page: per-page outputs in the project folder, status saved as we go.
    With a preparer (preprocess.PagePreparer) each page's query is its G (see InputSettings).
    The working size is `inputs.size` when inputs are given, else `size`."""
    if inputs is not None and size is not None and size != inputs.size:
        raise ValueError(f"two working sizes: size={size} and inputs.size={inputs.size}; give it once")
    inputs = inputs or InputSettings(style=InputStyle.GRAY, size=size)
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
            prepared = prepare_page(preparer, page, inputs) if preparer is not None else None
            result = retriever.retrieve(page, references, project.choices_for(source.name), inputs.size, prepared)
        except Exception as exc:  # one bad page never ends the chapter
            _page_failed(project, report, emit, source.name, _reason(exc))
            continue
        finally:
            _tell_unusable_references(retriever, report, emit)
        try:
            outputs = write_retrieval(result, project.folder / page_folder_name(index, source.name))
            project.record_outputs(source.name, outputs, "retrieved")
            project.save()
        except Exception as exc:  # a full or read-only output folder ends the run: every page would fail
            if is_storage_error(exc):
                raise storage_stop(project, report, emit, source.name, exc, "run the same command again") from exc
            _page_failed(project, report, emit, source.name, _reason(exc))
            continue
        report.done.append(source.name)
        emit(PageDone(source.name, outputs, {"warnings": result.warnings}))
    emit(Finished(len(report.done), len(report.failed)))
    return report


class ColorFlowPipeline:
    """The stages for one page (preprocess, RAP, ICP, GSRP) on loaded models; the chapter loop
    lives below."""

    def __init__(self, retriever: Retriever, colorizer, upscaler, models_id: str, preparer=None) -> None:
        from engine.preprocess.page import PagePreparer

        self.retriever, self.colorizer, self.upscaler = retriever, colorizer, upscaler
        self.preparer = preparer or PagePreparer()  # without ScreenStyle networks: "gray" only
        self.models_id = models_id
        self.timings = {"ScreenStyle": 0.0, "RAP": 0.0, "ICP": 0.0, "GSRP": 0.0}

    def prepare(self, page: PageImage, inputs: InputSettings):
        start = time.perf_counter()
        try:
            return prepare_page(self.preparer, page, inputs)
        finally:
            self.timings["ScreenStyle"] += time.perf_counter() - start

    def retrieve(self, page: PageImage, references: Sequence[ImageSource], choices: Choices, prepared) -> PageRetrieval:
        start = time.perf_counter()
        try:
            return self.retriever.retrieve(page, references, choices, prepared.work_size, prepared)
        finally:
            self.timings["RAP"] += time.perf_counter() - start

    def color(
        self,
        page: PageImage,
        retrieval: PageRetrieval,
        prepared,
        settings: PipelineSettings,
        emit: EventSink = ignore,
        cancel: CancelToken | None = None,
    ) -> Image.Image:
        """ICP then GSRP, then the output size (see PipelineSettings). Raises
        colorize.Interrupted when cancelled (within one denoising step)."""
        import contextlib

        from engine.core.rng import official_seeding

        cancel = cancel or CancelToken()
        name = page.source.name

        def on_step(info) -> bool:
            emit(Progress("ICP", info.step, info.total, name))
            if info.preview is not None:
                emit(Preview(name, info.preview))
            return not cancel.cancelled

        # Official: one global RNG stream seeded like fix_random_seeds, drawn by ICP's
        # conditioning samples and then by the GSRP sample.
        official = settings.procedure == Procedure.OFFICIAL
        device = getattr(self.upscaler, "device", "cpu")
        rng = official_seeding(settings.colorize.seed, device) if official else contextlib.nullcontext()
        try:
            with rng:
                start = time.perf_counter()
                colored = self.colorizer(retrieval.canvas, retrieval.mask, retrieval.work_size, settings.colorize, on_step)
                self.timings["ICP"] += time.perf_counter() - start
                start = time.perf_counter()
                emit(Progress("GSRP", 0, 1, name))
                frame = self.upscaler(colored, prepared.frame, settings.upscale)
            final = finish_page(frame, page.image, prepared.frame_fit, settings.output_size, settings.keep_ink)
        finally:
            offload = getattr(getattr(self.colorizer, "c", None), "offload", None)
            if offload is not None:
                offload.offload()  # the page is done: every model back to the CPU
        emit(Progress("GSRP", 1, 1, name))
        self.timings["GSRP"] += time.perf_counter() - start
        return final

    def use_lowest_memory(self) -> list[str]:
        """After an out-of-memory error: tiled VAE, and model offload on an accelerator."""
        from engine.models.loading import use_lowest_memory

        components = getattr(self.colorizer, "c", None)
        return use_lowest_memory(components) if components is not None else []

    def release_retrieval(self) -> None:
        """Free the CLIP encoder's GPU memory before diffusion."""
        release = getattr(self.retriever.embedder, "release", None)
        if release:
            release()


def finish_page(frame: Image.Image, page: Image.Image, frame_fit, output_size: OutputSize,
                keep_ink: bool) -> Image.Image:
    """The GSRP frame to the output: "page" cuts the page out and restores its own size;
    "gsrp" cuts the page out at 1.5x the working size. With keep-ink, lightness comes from
    the original page (resized to the output when it differs)."""
    from engine.gsrp.upscale import keep_ink as apply_keep_ink

    if output_size == OutputSize.PAGE:
        final = restore_page(frame, frame_fit)
    else:
        final = frame.crop(frame_fit.content_box)
    if keep_ink:
        ink = page if page.size == final.size else page.resize(final.size, Image.BICUBIC)
        final = apply_keep_ink(final, ink)
    return final


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
    from engine.icp.colorize import Interrupted

    cancel = cancel or CancelToken()
    settings.check()
    with project.lock:  # recorded with the chapter, so a reopened project shows how it was made
        project.settings.update(settings.recorded())
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
        try:
            page = _load(chapter, index)
            if settings.input_style == InputStyle.SCREEN:
                emit(Progress("ScreenStyle", position, len(indices), name))
            prepared = pipeline.prepare(page, settings.inputs)
            emit(Progress("RAP", position, len(indices), name))
            pipeline.retrieve(page, references, project.choices_for(name), prepared)
            usable.append(index)
        except Exception as exc:  # one bad page never ends the chapter
            _page_failed(project, report, emit, name, _reason(exc))
        finally:
            _tell_unusable_references(pipeline.retriever, report, emit)
    pipeline.release_retrieval()

    # Pass 2, page by page: retrieval again (all embeddings cached: no encoder pass), ICP, GSRP.
    for index in usable:
        name = chapter.sources[index].name
        try:
            page = _load(chapter, index)
            prepared = pipeline.prepare(page, settings.inputs)
            retrieval = pipeline.retrieve(page, references, project.choices_for(name), prepared)
        except Exception as exc:
            _page_failed(project, report, emit, name, _reason(exc))
            continue
        state = project.page(name)
        key = settings.key(page, retrieval, pipeline.models_id)
        output = project.folder / f"{page_folder_name(index, name)}.png"
        recorded = state.outputs.get("colored") == output.name  # the file this run would write, nothing else
        if resume and state.status == "done" and state.settings_key == key and recorded and output.exists():
            report.skipped.append(name)
            emit(PageDone(name, {"colored": str(output)}, {"skipped": True}))
            continue
        if cancel.cancelled:
            report.cancelled = True
            emit(Cancelled(name))
            break
        project.set_status(name, "running")
        notes = list(retrieval.warnings)
        try:
            final = color_with_memory_retry(pipeline, page, retrieval, prepared, settings, emit, cancel, notes)
        except Interrupted:
            project.set_status(name, "pending")
            project.save()
            report.cancelled = True
            emit(Cancelled(name))
            break
        except Exception as exc:  # a bug or out-of-memory on one page must not end the chapter
            _page_failed(project, report, emit, name, _reason(exc))
            continue
        try:
            atomic_save_image(final, output)
            project.record_outputs(name, {"colored": output.name}, "done", key)
            project.save()
        except OSError as exc:
            if not is_storage_error(exc):
                raise
            raise storage_stop(project, report, emit, name, exc) from exc
        report.done.append(name)
        emit(PageDone(name, {"colored": str(output)}, {"warnings": notes}))
    report.timings = dict(pipeline.timings)
    emit(Finished(len(report.done), len(report.failed)))
    return report


def load_retriever(models: str, device: str = "cpu", cache_dir: Path | None = None) -> Retriever:
    """The RAP retriever of a model source: its CLIP image encoder and the embedding cache
    (the per-user cache folder unless `cache_dir`)."""
    from engine.rap.embedding import ClipEmbedder, EmbeddingCache
    from engine.models.sources import resolve_models
    from engine.core.paths import embeddings_dir

    embedder = ClipEmbedder(resolve_models(models).image_encoder, device=device)
    return Retriever(embedder, EmbeddingCache(Path(cache_dir) if cache_dir else embeddings_dir()))


def load_preparer(models: str, device: str = "cpu", cache_dir: Path | None = None, style: str = "screen"):
    """The preprocess stage: the ScreenStyle networks of a model source (for style "screen")
    and G's cache (the per-user cache folder unless `cache_dir`)."""
    from engine.models.sources import resolve_models
    from engine.core.paths import cache_dir as user_cache_dir
    from engine.preprocess.page import PagePreparer
    from engine.preprocess.screenstyle import load_screenstyle

    networks = load_screenstyle(resolve_models(models).colorflow, device) if style == "screen" else None
    folder = (Path(cache_dir) if cache_dir else user_cache_dir()) / "screenstyle"
    return PagePreparer(networks, folder)


def load_pipeline(
    models: str,
    device: str = "cpu",
    low_vram: bool = False,
    cache_dir: Path | None = None,
    retriever: Retriever | None = None,
    preparer=None,
    vae_tiling: bool = False,
    input_style: str = "screen",
) -> ColorFlowPipeline:
    """Resolve a model source and load every stage on `device` (reusing `retriever` and
    `preparer` when the caller already has them for the same models)."""
    from engine.icp.colorize import Colorizer
    from engine.models.loading import load_diffusion
    from engine.models import fingerprint_models
    from engine.models.sources import resolve_models
    from engine.gsrp.upscale import Upscaler

    paths = resolve_models(models)
    retriever = retriever or load_retriever(models, device, cache_dir)
    preparer = preparer or load_preparer(models, device, cache_dir, input_style)
    components = load_diffusion(paths, device, low_vram=low_vram, vae_tiling=vae_tiling)
    colorizer = Colorizer(components)
    upscaler = Upscaler(components.vae_runner, components.fusion, components.device, components.dtype)
    # The files themselves (paths, sizes, mtimes; a models DIR's recorded sha256s too), so weights
    # replaced in place count as new models, even with their mtime put back.
    models_id = f"{fingerprint_models(paths)}|{retriever.embedder.encoder_id}"
    return ColorFlowPipeline(retriever, colorizer, upscaler, models_id, preparer)
