"""Chapter runs of RAP -> ICP -> GSRP emitting typed events; retrieval-only runs."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from engine.core.errors import ColorFlowError
from engine.core.geometry import WorkSize
from engine.io.chapter import Chapter, ImageSource
from engine.core.events import (
    CancelToken,
    Cancelled,
    EventSink,
    Finished,
    Notice,
    PageDone,
    PageFailed,
    Progress,
    Started,
    ignore,
)
from engine.io.fileio import atomic_save_image, atomic_write_json, make_temp_folder, refuse_symlink
from engine.io.naming import page_folder_name
from engine.io.storage import is_storage_error
from engine.project.reference_pool import ReferencePool
from engine.project.state import ChapterProject
from engine.rap.retrieval import PageRetrieval, Retriever
from engine.core.options import AUTO_STYLE, InputStyle, Procedure
from engine.pipelines.chapter_pages import PagePass, failure_reason as _reason, load_page as _load, retrieval_inputs
from engine.pipelines.families import FamilyPipelines, OnePipeline
from engine.pipelines.page import ColorFlowPipeline, prepare_page
from engine.pipelines.run_guard import storage_stop
from engine.pipelines.settings import InputSettings, PipelineSettings
from engine.pipelines.variations import VariationRequest, page_settings


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
    styles: dict[str, str] = field(default_factory=dict)  # page -> the input style it was prepared with
    # (page, stage, start, end) in time.perf_counter seconds, for pass 2's stages of each page:
    # "prepare" (decode, G, retrieval, canvas), "ICP", "GSRP", "write" (file and project save)
    intervals: list[tuple[str, str, float, float]] = field(default_factory=list)


def _page_failed(project: ChapterProject, report: ChapterReport, emit: EventSink, *, name: str,
                 reason: str) -> None:
    report.failed[name] = reason
    project.set_status(name, "failed", reason)
    project.save()
    emit(PageFailed(name, reason))


def _tell_unusable_references(retriever: Retriever, report: ChapterReport, emit: EventSink,
                              pool: ReferencePool | None = None) -> None:
    """A Notice per reference or accepted page that cannot be used (an image bomb, a damaged or deleted
    file), once per run: each page's retrieval.json lists it too, the command line and the app say it once."""
    for reason in [*retriever.unusable_references(), *(pool.warnings if pool is not None else [])]:
        if reason not in report.warnings:
            report.warnings.append(reason)
            emit(Notice(reason))


def _prepare(project: ChapterProject, chapter: Chapter, references: Sequence[ImageSource]) -> None:
    project.sync_pages([(s.name, s.ref) for s in chapter.sources])
    project.add_references([r.ref for r in references])
    project.save()


def retrieve_chapter(
    chapter: Chapter,
    references: Sequence[ImageSource],
    retriever: Retriever,
    project: ChapterProject,
    *,
    size: WorkSize | None = None,
    emit: EventSink = ignore,
    cancel: CancelToken | None = None,
    preparer=None,
    inputs: InputSettings | None = None,
    preparers: Callable[[InputStyle], Any] | None = None,
    pool: ReferencePool | None = None,
) -> ChapterReport:
    """RAP for every page: per-page outputs in the project folder, status saved as we go.
    With a `pool` (reference_pool.build_pool) each page is retrieved from it (never from its own
    accepted result) under the series' pins and rejects; without one, from `references`.
    With a preparer (preprocess.PagePreparer) each page's query is its G (see InputSettings);
    with `preparers` (style -> PagePreparer: families.style_preparers) each page is prepared with its
    own input style (ChapterProject.page_style, as colorize_chapter), `inputs.style` the chapter's.
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
            page_inputs, page_preparer = inputs, preparer
            if preparers is not None:
                style = project.page_style(source.name, inputs.style)
                page_inputs, page_preparer = replace(inputs, style=style), preparers(style)
            prepared = prepare_page(page_preparer, page, page_inputs) if page_preparer is not None else None
            sources, choices = retrieval_inputs(project, references, pool, source.name)
            result = retriever.retrieve(page, sources, choices, inputs.size, prepared)
        except Exception as exc:  # one bad page never ends the chapter
            _page_failed(project, report, emit, name=source.name, reason=_reason(exc))
            continue
        finally:
            _tell_unusable_references(retriever, report, emit, pool)
        try:
            outputs = write_retrieval(result, project.folder / page_folder_name(index, source.name))
            kept = project.page(source.name).accepted is not None  # an accepted page stays done
            project.record_outputs(source.name, outputs, "done" if kept else "retrieved")
            project.save()
        except Exception as exc:  # a full or read-only output folder ends the run: every page would fail
            if is_storage_error(exc):
                raise storage_stop(project, report, emit, name=source.name, exc=exc,
                                   again="run the same command again") from exc
            _page_failed(project, report, emit, name=source.name, reason=_reason(exc))
            continue
        report.done.append(source.name)
        emit(PageDone(source.name, outputs, {"warnings": result.warnings}))
    emit(Finished(len(report.done), len(report.failed)))
    return report


def _keep_accepted(project: ChapterProject, report: ChapterReport, emit: EventSink, name: str) -> None:
    """An accepted page is not colored again by a run: it stays done, as the colorist accepted it."""
    report.skipped.append(name)
    emit(Notice("accepted: kept; un-accept it to color it again", name))
    emit(PageDone(name, {"colored": str(project.folder / project.page(name).outputs.get("colored", ""))},
                  {"skipped": True, "accepted": True}))


def _suggest(project: ChapterProject, name: str, page, emit: EventSink) -> None:
    """Auto: the page's style suggested from its pixels, recorded in the project and said (applied by the run)."""
    from engine.preprocess.style_suggest import suggest_style

    suggestion = suggest_style(page.image)
    project.record_suggestion(name, suggestion.style, suggestion.reason)
    emit(Notice(f"input style {suggestion.style} (auto: {suggestion.reason})", name))


def colorize_chapter(
    chapter: Chapter,
    references: Sequence[ImageSource],
    pipeline: ColorFlowPipeline | FamilyPipelines,
    project: ChapterProject,
    *,
    settings: PipelineSettings,
    emit: EventSink = ignore,
    cancel: CancelToken | None = None,
    resume: bool = False,
    only: set[str] | None = None,
    again: VariationRequest | None = None,
    overlap: bool = True,
    pool: ReferencePool | None = None,
    executor: Any = None,
) -> ChapterReport:
    """Color a chapter: RAP for every page, then RAP (cached) + ICP + GSRP page by page (`settings.batch_pages`
    pages a call), the next page's CPU work done meanwhile (`overlap`; False: strictly one page after
    another, the same bytes, for tests and measurements). Each page is written
    as its picked variation's file (`NNN_name.png` for the first) at its own size and the project saved,
    so a killed run loses at most the page in flight. With `resume`, pages done with the same
    settings key are skipped. With `again` ("Colorize again") each page gets a new variation in a
    file of its own, beside the others; the page's status and picked result stay as they were.
    Each page is prepared and colored with its own input style (ChapterProject.page_style: the page's
    own, else `settings.input_style`; under "auto" the style suggest_style picks, recorded in the
    project and said in a Notice). A FamilyPipelines colors each style with its model set; a single
    ColorFlowPipeline colors every page. With a `pool` (reference_pool.build_pool) each page is retrieved
    from it (never from its own accepted result) under the series' pins and rejects; without one, from
    `references`. Accepted pages are kept as they are (skipped, with a Notice) unless `again`. Every
    variation records what it was retrieved from (made_with["retrieval"]: reference_pool.retrieval_record).
    With an `executor` (ray_executor.RayExecutor, entered) pass 2's pages are colored on its Ray workers
    (ray_pass.RayPagePass); runs Ray cannot reproduce are refused first (InputError)."""
    cancel = cancel or CancelToken()
    settings.check()
    if executor is not None:
        from engine.pipelines.ray_pass import check_ray_settings

        check_ray_settings(settings)
    pipeline = pipeline if isinstance(pipeline, FamilyPipelines) else OnePipeline(pipeline)
    runs: dict[str, tuple] = {}  # page -> (its settings, what its variation records): a new seed is drawn once

    def run_for(name: str) -> tuple:
        if name not in runs:
            style = project.page_style(name, settings.input_style)
            if style is None:
                raise ColorFlowError(f"page {name}: no input style suggested yet (auto)")
            with project.lock:
                runs[name] = page_settings(settings.for_style(style), project.page(name), again)
            report.styles[name] = str(style)
        return runs[name]

    def failed(name: str, reason: str) -> None:  # a new variation that failed leaves the page's result alone
        if again is None:
            _page_failed(project, report, emit, name=name, reason=reason)
        else:
            report.failed[name] = reason
            emit(PageFailed(name, reason))

    with project.lock:  # recorded with the chapter, so a reopened project shows how it was made
        project.settings.update(settings.recorded())
    _prepare(project, chapter, references)
    report = ChapterReport([], {})
    indices = [i for i, s in enumerate(chapter.sources) if only is None or s.name in only]
    emit(Started("colorize", len(indices)))

    # Pass 1: RAP for every page, which fills the embedding cache; then the CLIP encoder
    # leaves the GPU. Nothing is kept but the list of usable pages, so memory stays bounded.
    # On Ray workers the driver colors nothing (its encoder takes no GPU a page needs): pass 1 keeps only its
    # bookkeeping, and each page is prepared and retrieved as it goes out, so the workers start with page 1.
    usable: list[int] = []
    for position, index in enumerate(indices):
        name = chapter.sources[index].name
        if cancel.cancelled:
            break
        if again is None and project.page(name).accepted is not None:
            _keep_accepted(project, report, emit, name)
            continue
        try:
            if executor is not None and not (settings.input_style == AUTO_STYLE and project.page(name).input_style is None):
                run_for(name)
                usable.append(index)
                continue
            page = _load(chapter, index)
            if settings.input_style == AUTO_STYLE and project.page(name).input_style is None:
                _suggest(project, name, page, emit)
            inputs = run_for(name)[0].inputs
            if executor is not None:
                usable.append(index)
                continue
            if inputs.style == InputStyle.SCREEN:
                emit(Progress("ScreenStyle", position, len(indices), name))
            prepared = pipeline.prepare(page, inputs)
            emit(Progress("RAP", position, len(indices), name))
            pipeline.retrieve(page, *retrieval_inputs(project, references, pool, name), prepared)
            usable.append(index)
        except Exception as exc:  # one bad page never ends the chapter
            failed(name, _reason(exc))
        finally:
            _tell_unusable_references(pipeline.retriever, report, emit, pool)
    if executor is None:  # (on Ray the encoder is still needed: pages are retrieved as they go out)
        pipeline.release_retrieval()

    # Pass 2 (chapter_pages.py): retrieval again (all embeddings cached: no encoder pass), ICP, GSRP,
    # each page's decode, G and retrieval done on a helper thread while the page before is in ICP.
    official = settings.procedure == Procedure.OFFICIAL  # global-RNG draws in ICP/GSRP: one page at a time
    pass_args = (chapter, references, pipeline, project, report, emit, cancel, run_for, failed, resume, again)
    if executor is not None:
        from engine.pipelines.ray_pass import RayPagePass

        RayPagePass(*pass_args, overlap=overlap, pool=pool, executor=executor).run(usable)
        _tell_unusable_references(pipeline.retriever, report, emit, pool)  # found as the pages went out
    else:
        PagePass(*pass_args, overlap=overlap and not official, batch_pages=1 if official else settings.batch_pages,
                 pool=pool).run(usable)
    report.timings = dict(pipeline.timings)
    if executor is not None:  # colored on the workers: their ICP and GSRP seconds as the pages' events timed them,
        for _page, stage, start, end in report.intervals:  # summed over the workers (more than the wall clock)
            if stage in ("ICP", "GSRP"):
                report.timings[stage] = report.timings.get(stage, 0.0) + end - start
    emit(Finished(len(report.done), len(report.failed)))
    return report
