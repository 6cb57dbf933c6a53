"""Pass 2 of a chapter run: ICP + GSRP page by page (or N pages a call), each page's CPU work done ahead on a helper thread.

While page n is in diffusion, one helper thread owned by the run decodes page n+1, makes its G
(cached, or the ScreenStyle pass again) and its retrieval and canvas (embeddings cached by pass
1). Everything else stays on the calling thread, in page order: the resume and variation
decisions, status, events, the atomic page write and the project save. The pixels are those of
the sequential run: procedure "ours" draws nothing from the global RNG during ICP and GSRP (its
own generators), so the ScreenStyle pass's seeded global draws on the helper cannot interleave
with them; the official procedure draws from the global RNG in ICP and GSRP and runs one page at
a time, without the helper. The CLIP encoder still leaves the GPU after pass 1, before any
diffusion: pass 2 does not start while pass 1 is embedding, so the encoder and the diffusion
models never share the GPU (what 8-12 GB cards need).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from PIL import Image

from engine.core.errors import ColorFlowError
from engine.core.events import CancelToken, Cancelled, EventSink, Notice, PageDone, Progress
from engine.io.chapter import Chapter, ImageSource, PageImage
from engine.io.fileio import atomic_save_image
from engine.io.storage import is_storage_error
from engine.pipelines.run_guard import color_with_memory_retry, storage_stop
from engine.pipelines.settings import PipelineSettings
from engine.pipelines.variations import VariationRequest, variation_file
from engine.project.reference_pool import ReferencePool, retrieval_record
from engine.project.state import ChapterProject
from engine.project.variations import next_id
from engine.rap.curation import Choices
from engine.rap.retrieval import PageRetrieval

PREFETCH_THREAD = "colorflow-prefetch"  # the helper thread's name (joined before the run returns)


def load_page(chapter: Chapter, index: int) -> PageImage:
    """A page decoded, or its reading error (found when the chapter was opened) raised."""
    source = chapter.sources[index]
    if source.ref in chapter.errors:
        raise ColorFlowError(chapter.errors[source.ref])
    return chapter.load_page(index)


def retrieval_inputs(project: ChapterProject, references: Sequence[ImageSource], pool: ReferencePool | None,
                     name: str) -> tuple[Sequence[ImageSource], Choices]:
    """What page `name` is retrieved from, and its pins and rejects: the pool's references without the
    page's own accepted result, under the series' choices; without a pool `references` and the project's."""
    if pool is None:
        return references, project.choices_for(name)
    return pool.for_page(name), project.choices_for(name, pool.series_choices)


def failure_reason(exc: Exception) -> str:
    """User-facing reason: our own errors speak for themselves, others name their type."""
    return str(exc) if isinstance(exc, ColorFlowError) else f"{type(exc).__name__}: {exc}"


@dataclass
class Ready:
    """A page ready for ICP: decoded, G made, retrieved (canvas built); `inputs` is what it was
    prepared from (its settings, choices and the references it is retrieved from), `interval` when (perf_counter)."""

    index: int
    inputs: tuple
    page: PageImage
    prepared: Any
    retrieval: PageRetrieval
    interval: tuple[float, float]


class _Stopped(Exception):
    """The run ended before the helper prepared this page: nobody will take it."""


class Lookahead:
    """Pages prepared in order on one helper thread, up to `depth` pages ahead of the one taken;
    without overlap each page is prepared when taken, on the calling thread (the sequential run).
    `inputs_for` runs on the calling thread; `prepare(index, inputs, stopped)` on the helper."""

    def __init__(self, inputs_for: Callable[[int], tuple], prepare: Callable[[int, tuple, threading.Event], Ready],
                 *, depth: int, overlap: bool) -> None:
        self._inputs_for, self._prepare, self._depth = inputs_for, prepare, depth
        self._stopped = threading.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=PREFETCH_THREAD) if overlap else None
        self._futures: dict[int, Future] = {}

    def take(self, order: Sequence[int], position: int) -> Ready:
        """The page at `position` of `order` (its error raised here), the next ones queued behind it."""
        index = order[position]
        if self._executor is None:
            return self._prepare(index, self._inputs_for(index), self._stopped)
        for ahead in order[position:position + 1 + self._depth]:
            if ahead not in self._futures:
                self._futures[ahead] = self._submit(ahead)
        ready = self._futures.pop(index).result()
        inputs = self._inputs_for(index)
        if ready.inputs != inputs:  # a pin, reject or accepted page since it was queued (the app): retrieved again
            ready = self._executor.submit(self._prepare, index, inputs, self._stopped).result()
        return ready

    def drop(self, index: int) -> None:
        """Page `index` will not be taken (cancelled on its own): not prepared if it has not begun."""
        future = self._futures.pop(index, None)
        if future is not None:
            future.cancel()

    def _submit(self, index: int) -> Future:
        try:
            inputs = self._inputs_for(index)
        except Exception as exc:  # that page's failure, raised when it is taken
            failed: Future = Future()
            failed.set_exception(exc)
            return failed
        return self._executor.submit(self._prepare, index, inputs, self._stopped)

    def close(self) -> None:
        """Drop what is queued, stop the page being prepared at its next stage, join the thread."""
        self._stopped.set()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        self._futures.clear()


@dataclass
class _Job:
    """A page to color: ready, with its settings, resume key and the variation file it becomes."""

    ready: Ready
    name: str
    run: PipelineSettings
    made_with: dict
    key: str
    target: int | None
    number: int
    output: Path
    notes: list[str] = field(default_factory=list)

    @property
    def batch_key(self) -> tuple:
        """Pages with equal keys may share one denoising call: one working size, every setting but the seed."""
        run = replace(self.run, colorize=replace(self.run.colorize, seed=0), upscale=replace(self.run.upscale, seed=0))
        return self.ready.retrieval.work_size, run


class _StageClock:
    """The emit of one color call, timing each page's ICP (from the call's start to its first GSRP
    progress) and GSRP (to its last) from the call's own events."""

    def __init__(self, emit: EventSink) -> None:
        self.emit, self.start, self.marks = emit, time.perf_counter(), {}

    def __call__(self, event) -> None:
        if isinstance(event, Progress) and event.stage == "GSRP" and event.page is not None:
            self.marks[event.page, event.step == event.total] = time.perf_counter()
        self.emit(event)

    def intervals(self, name: str) -> list[tuple[str, str, float, float]]:
        end = time.perf_counter()
        icp_end = self.marks.get((name, False), end)
        return [(name, "ICP", self.start, icp_end), (name, "GSRP", icp_end, self.marks.get((name, True), end))]


@dataclass
class PagePass:
    """Pass 2 of colorize_chapter over the pages pass 1 found usable (see the module doc)."""

    chapter: Chapter
    references: Sequence[ImageSource]
    pipeline: Any  # families.FamilyPipelines: prepare/retrieve shared, for_style(style) colors
    project: ChapterProject
    report: Any  # chapter.ChapterReport
    emit: EventSink
    cancel: CancelToken
    run_for: Callable[[str], tuple]  # page -> (its settings, what its variation records)
    failed: Callable[[str, str], None]
    resume: bool
    again: VariationRequest | None
    overlap: bool = True
    batch_pages: int = 1
    pool: ReferencePool | None = None  # the references and series choices (None: `references`, the project's)

    def run(self, order: list[int]) -> None:
        ahead = Lookahead(self._inputs_for, self._prepare, depth=self.batch_pages, overlap=self.overlap)
        group: list[_Job] = []
        try:
            for position, index in enumerate(order):
                name = self.chapter.sources[index].name
                try:
                    ready = ahead.take(order, position)
                except Exception as exc:  # one bad page never ends the chapter
                    self.failed(name, failure_reason(exc))
                    continue
                self.report.intervals.append((name, "prepare", *ready.interval))
                job = self._job(ready, name)
                if job is None:
                    continue
                if self.cancel.cancelled:
                    self.report.cancelled = True
                    self.emit(Cancelled(group[0].name if group else name))  # pages not begun stay pending
                    return
                if group and job.batch_key != group[0].batch_key:  # another working size or settings: the group goes first
                    if not self._color_and_write(group):
                        return
                    group = []
                group.append(job)
                if len(group) == self.batch_pages:
                    if not self._color_and_write(group):
                        return
                    group = []
            if group:
                self._color_and_write(group)
        finally:
            ahead.close()

    # --- calling thread ---------------------------------------------------------------
    def _inputs_for(self, index: int) -> tuple:
        name = self.chapter.sources[index].name
        sources, choices = retrieval_inputs(self.project, self.references, self.pool, name)
        return self.run_for(name)[0], choices, tuple(sources)

    def _job(self, ready: Ready, name: str) -> _Job | None:
        """The page's resume key and variation file; None (and its events) when it is skipped."""
        index, page, retrieval = ready.index, ready.page, ready.retrieval
        run, made_with = self.run_for(name)
        made_with = {**made_with, "retrieval": retrieval_record(retrieval, self.pool)}  # the drift check reads it
        key = run.key(page, retrieval, self.pipeline.models_id_for(run.input_style))
        project, again = self.project, self.again
        with project.lock:
            state = project.page(name)
            target = None if again else state.picked  # a plain run makes the picked variation again
            number = target or next_id(state.variations)
            same = next((v for v in state.variations if v.settings_key == key), None)
        output = project.folder / variation_file(index, name, number)
        recorded = state.outputs.get("colored") == output.name  # the file this run would write, nothing else
        if again is None and self.resume and state.status == "done" and state.settings_key == key and recorded \
                and output.exists():
            self.report.skipped.append(name)
            self.emit(PageDone(name, {"colored": str(output)}, {"skipped": True}))
            return None
        if again is not None and same is not None and (project.folder / same.file).exists():
            self.report.skipped.append(name)
            self.emit(Notice(f"variation {same.id} has these settings already, nothing new was colored: choose a "
                             "new seed or another guidance", name))
            return None
        return _Job(ready, name, run, made_with, key, target, number, output, list(retrieval.warnings))

    def _color_and_write(self, group: list[_Job]) -> bool:
        """ICP + GSRP of the group (one call when several pages) and each page written as it is
        done; False when cancelled (the pages not written go back to pending)."""
        from engine.icp.colorize import Interrupted

        if self.again is None:
            for job in group:
                self.project.set_status(job.name, "running")
        if len(group) > 1:
            try:
                finals = self._color_batch(group)
            except Interrupted:
                self._cancelled(group)
                return False
            if finals is not None:
                for position, (job, final) in enumerate(zip(group, finals)):
                    self._write(job, final, group[position + 1:])
                return True
        for position, job in enumerate(group):  # one at a time
            clock = _StageClock(self.emit)
            try:
                family = self.pipeline.for_style(job.run.input_style)  # loaded once; the other set leaves the GPU
                final = color_with_memory_retry(family, job.ready.page, job.ready.retrieval, job.ready.prepared,
                                                job.run, emit=clock, cancel=self.cancel, notes=job.notes)
            except Interrupted:
                self._cancelled(group[position:])
                return False
            except Exception as exc:  # a bug or out-of-memory on one page must not end the chapter
                self.failed(job.name, failure_reason(exc))
                continue
            self.report.intervals.extend(clock.intervals(job.name))
            self._write(job, final, group[position + 1:])
        return True

    def _color_batch(self, group: list[_Job]) -> list[Image.Image] | None:
        """The group in one denoising call (Interrupted when cancelled); None when the call failed
        otherwise, out of memory above all: the pages are then colored one at a time, each with
        its own out-of-memory retry, and a failing page fails alone."""
        from engine.core.offload import free_memory, is_out_of_memory
        from engine.icp.colorize import Interrupted
        from engine.pipelines.page import ColorJob

        clock = _StageClock(self.emit)
        jobs = [ColorJob(j.ready.page, j.ready.retrieval, j.ready.prepared, j.run) for j in group]
        try:
            finals = self.pipeline.for_style(group[0].run.input_style).color_batch(jobs, emit=clock, cancel=self.cancel)
        except Interrupted:
            raise
        except Exception as exc:
            oom = is_out_of_memory(exc)
            if oom:
                free_memory()
            why = "out of memory" if oom else failure_reason(exc)
            self.emit(Notice(f"{len(group)} pages in one denoising call failed ({why}); coloring them one at a time"))
            for job in group:
                job.notes.append(f"colored alone: {len(group)} pages in one call failed ({why})")
            return None
        for job in group:
            self.report.intervals.extend(clock.intervals(job.name))
        return finals

    def _cancelled(self, unfinished: list[_Job], run: bool = True) -> None:
        """Pages stopped by a cancel go back to pending; `run` False: only these pages were cancelled (the
        run goes on)."""
        if self.again is None:
            for job in unfinished:
                self.project.set_status(job.name, "pending")
            self.project.save()
        self.report.cancelled = self.report.cancelled or run
        self.emit(Cancelled(unfinished[0].name))

    def _write(self, job: _Job, final: Image.Image, rest: list[_Job]) -> None:
        """The page's file (atomic), its variation recorded and the project saved, then PageDone.
        A full or read-only disk stops the run (RunStopped); `rest` (colored with it, not written)
        goes back to pending."""
        start = time.perf_counter()
        project, name = self.project, job.name
        try:
            atomic_save_image(final, job.output)
            dropped = project.record_variation(name, job.output.name, job.key, job.made_with, replace=job.target)
            project.save()
        except OSError as exc:
            if not is_storage_error(exc):
                raise
            if self.again is None:
                for other in rest:
                    project.set_status(other.name, "pending")
            raise storage_stop(project, self.report, self.emit, name=name, exc=exc,
                               in_flight=self.again is None) from exc
        project.remove_files(dropped)  # only once the saved project no longer names them
        self.report.done.append(name)
        self.report.intervals.append((name, "write", start, time.perf_counter()))
        self.emit(PageDone(name, {"colored": str(job.output)}, {"warnings": job.notes, "variation": job.number}))

    # --- helper thread: no events, no project state -----------------------------------
    def _prepare(self, index: int, inputs: tuple, stopped: threading.Event) -> Ready:
        run, choices, sources = inputs
        start = time.perf_counter()

        def go_on() -> None:  # between stages: a run that ended takes nothing more
            if stopped.is_set():
                raise _Stopped

        go_on()
        page = load_page(self.chapter, index)
        go_on()
        prepared = self.pipeline.prepare(page, run.inputs)
        go_on()
        retrieval = self.pipeline.retrieve(page, sources, choices, prepared)
        return Ready(index, inputs, page, prepared, retrieval, (start, time.perf_counter()))
