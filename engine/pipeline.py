"""Chapter-level jobs that emit typed events: retrieval only, and RAP -> ICP colorization."""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .canvas import WorkSize
from .chapter import Chapter, ImageSource
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
    """A safe, ordered folder name for page `index` (0-based), e.g. `003_page-10`."""
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
    project.sync_pages([(s.name, s.ref) for s in chapter.sources])
    project.add_references([r.ref for r in references])
    project.save()
    report = ChapterReport([], {})
    total = len(chapter.sources)
    emit(Started("retrieve", total))
    for index, source in enumerate(chapter.sources):
        if cancel.cancelled:
            report.cancelled = True
            emit(Cancelled(source.name))
            break
        emit(Progress("RAP", index, total, source.name))
        reason = chapter.errors.get(source.ref)
        try:
            if reason:
                raise ColorFlowError(reason)
            page = chapter.load_page(index)
            result = retriever.retrieve(page, references, project.curation.effective(source.name), size)
            outputs = write_retrieval(result, project.folder / page_folder_name(index, source.name))
        except ColorFlowError as exc:
            report.failed[source.name] = str(exc)
            project.set_status(source.name, "failed", str(exc))
            project.save()
            emit(PageFailed(source.name, str(exc)))
            continue
        state = project.page(source.name)
        state.outputs.update(outputs)
        project.set_status(source.name, "retrieved")
        project.save()
        report.done.append(source.name)
        emit(PageDone(source.name, outputs, {"warnings": result.warnings}))
    emit(Progress("RAP", total if not report.cancelled else index, total))
    emit(Finished(len(report.done), len(report.failed)))
    return report


def settings_key(**parts) -> str:
    """A short hash of everything that determines a page's output (for --resume)."""
    import hashlib
    import json

    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def colorize_chapter(
    chapter: Chapter,
    references: Sequence[ImageSource],
    retriever: Retriever,
    colorizer,
    project: ChapterProject,
    settings,
    size: WorkSize | None = None,
    emit: EventSink = ignore,
    cancel: CancelToken | None = None,
) -> ChapterReport:
    """RAP for every page, then ICP page by page (the CLIP encoder leaves the GPU between the
    two); each colored page is written as `NNN_name.png` at the page's own size."""
    from .canvas import restore_page
    from .colorize import Interrupted, StepInfo

    cancel = cancel or CancelToken()
    project.sync_pages([(s.name, s.ref) for s in chapter.sources])
    project.add_references([r.ref for r in references])
    project.save()
    report = ChapterReport([], {})
    total = len(chapter.sources)
    emit(Started("colorize", total))

    def fail(name: str, reason: str) -> None:
        report.failed[name] = reason
        project.set_status(name, "failed", reason)
        project.save()
        emit(PageFailed(name, reason))

    retrieved: dict[int, PageRetrieval] = {}
    for index, source in enumerate(chapter.sources):
        if cancel.cancelled:
            break
        emit(Progress("RAP", index, total, source.name))
        try:
            if source.ref in chapter.errors:
                raise ColorFlowError(chapter.errors[source.ref])
            page = chapter.load_page(index)
            retrieved[index] = retriever.retrieve(page, references, project.curation.effective(source.name), size)
        except ColorFlowError as exc:
            fail(source.name, str(exc))
    release = getattr(retriever.embedder, "release", None)
    if release:
        release()

    for index, result in retrieved.items():
        name = chapter.sources[index].name
        if cancel.cancelled:
            report.cancelled = True
            emit(Cancelled(name))
            break
        project.set_status(name, "running")

        def on_step(info: StepInfo, name: str = name) -> bool:
            emit(Progress("ICP", info.step, info.total, name))
            if info.preview is not None:
                emit(Preview(name, info.preview))
            return not cancel.cancelled

        try:
            colored = colorizer(result.canvas, result.mask, result.work_size, settings, on_step)
            final = restore_page(colored, result.fit)
            output = project.folder / f"{page_folder_name(index, name)}.png"
            atomic_save_image(final, output)
        except Interrupted:
            project.set_status(name, "pending")
            project.save()
            report.cancelled = True
            emit(Cancelled(name))
            break
        except ColorFlowError as exc:
            fail(name, str(exc))
            continue
        except Exception as exc:  # a bug or out-of-memory on one page must not end the chapter
            fail(name, f"{type(exc).__name__}: {exc}")
            continue
        state = project.page(name)
        state.outputs["colored"] = output.name
        state.settings_key = settings_key(settings=settings, size=str(result.work_size), picks=result.to_json()["picks"])
        project.set_status(name, "done")
        project.save()
        report.done.append(name)
        emit(PageDone(name, {"colored": str(output)}, {"warnings": result.warnings}))
    emit(Finished(len(report.done), len(report.failed)))
    return report
