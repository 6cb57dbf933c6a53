"""Pass 2 of a chapter on Ray actors: pages prepared here, colored on the workers, written here as they come back.

How it works: the run's workers are a RayExecutor (ray_executor: started once per run, checked against this
computer's software and models, lost ones replaced). RayPagePass replaces PagePass.run: this process prepares
the pages in order as a local run does (decode, G, retrieval and canvas on the Lookahead's helper thread, a few
pages ahead per worker; the resume and variation decisions of PagePass._job), sends each page to an idle worker,
relays the workers' events to `emit` while it waits (ray.wait), and writes each page as its result comes back,
in whatever order (PagePass._write: atomic file, project saved here only, PageDone, its info["worker"] the
number of the worker that colored it).
A page whose worker died (RayActorError) goes to another worker, up to `max_retries` times, then fails
("worker lost") and the run goes on; a new worker starts in the lost one's place and takes pages once ready
(with none live, the run waits for it). A page's own error (RayTaskError) fails that page with the worker's
reason. Cancel sets the flag: every worker stops within one denoising step, pages not
written go back to pending, Cancelled is emitted. One page cancelled on its own (CancelToken.cancel_page: the
app's queue) is skipped if it has not gone out, else its worker stops it within a step; it goes back to
pending, Cancelled(page) is emitted and the run goes on. Why Ray core actors and not Ray Data's map_batches (the
same actor-per-GPU pattern): per-page events, retries, writes as pages come, resume and cancel need each
page's call in hand. Refused up front: --procedure official and --batch-pages > 1 (check_ray_settings).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

from engine.core.errors import InputError, RunStopped
from engine.core.events import Cancelled, Notice, PageDone, Progress
from engine.core.options import InputStyle, Procedure
from engine.pipelines.chapter_pages import Lookahead, PagePass, _Job, _StageClock, failure_reason
from engine.pipelines.ray_cluster import WAITING, import_ray
from engine.pipelines.ray_executor import WORKER_START_S, RayExecutor
from engine.pipelines.ray_workers import PagePayload

__all__ = ["RayExecutor", "RayPagePass", "check_ray_settings"]  # RayExecutor: where callers have always found it

AHEAD_PER_WORKER = 2  # pages prepared ahead of the workers, per worker
WAIT_S = 0.05  # how often the workers' events are relayed while none of them returns


def check_ray_settings(settings) -> None:
    """What Ray cannot run as a local run would (InputError), before anything loads or starts."""
    if settings.procedure == Procedure.OFFICIAL:
        raise InputError("--ray cannot run --procedure official: its ICP and GSRP draw from one process's global "
                         "random state, so pages colored on several workers would not match a local run; use "
                         "--procedure ours, or run without --ray")
    if settings.batch_pages > 1:
        raise InputError("--ray colors one page per worker call: drop --batch-pages (the workers color pages side "
                         "by side instead), or run without --ray")


@dataclass
class _Flight:
    """A page on a worker: its job, the worker's number, its stage clock, how many workers it lost."""

    job: _Job
    worker: int
    clock: _StageClock
    lost: int


@dataclass
class RayPagePass(PagePass):
    """PagePass with the pages colored on `executor`'s workers (see the module doc)."""

    executor: Any = None  # RayExecutor, entered

    def _prepare(self, index: int, inputs: tuple, stopped) -> Any:
        """A page is prepared (G, retrieval: there is no pass 1 on Ray) as the workers take pages, a few ahead;
        once ready it says it waits for one (the app's Queue shows that, not a retrieval that ended long ago)."""
        name = self.chapter.sources[index].name
        screen = inputs[0].inputs.style == InputStyle.SCREEN
        self.emit(Progress("ScreenStyle + RAP" if screen else "RAP", 0, 1, name))
        ready = super()._prepare(index, inputs, stopped)
        self.emit(Progress(WAITING, 0, 1, name))
        return ready

    def run(self, order: list[int]) -> None:
        ray, executor = import_ray(), self.executor
        ray.get(executor.flag.clear.remote())
        executor.drain()  # nothing left from a run before
        ahead = Lookahead(self._inputs_for, self._prepare, depth=AHEAD_PER_WORKER * max(executor.workers, 1),
                          overlap=self.overlap)
        self._flights: dict = {}
        self._retry: deque[tuple[_Job, int]] = deque()
        self._idle = deque(executor.live())
        self._position = 0  # the next page of `order` to prepare
        self._stopping: set[str] = set()  # pages cancelled on their own, told to the workers
        try:
            while True:
                self._stop_cancelled_pages()
                self._send(ahead, order)
                rest = order[self._position:]
                if self.cancel.cancelled:
                    self._stop(next((self.chapter.sources[i].name for i in rest), None))
                    return
                if not self._flights and not (self._retry or rest):
                    return
                if not self._flights and not executor.starting:
                    self._no_worker_left(rest)
                ready, _ = ray.wait([*self._flights, *executor.starting], num_returns=1, timeout=WAIT_S)
                self._relay()
                for ref in ready:
                    if ref in executor.starting:
                        self._joined(ref)
                    else:
                        self._outcome(ref, self._flights.pop(ref))
                for ref in executor.overdue(time.monotonic()):
                    self.emit(Notice(f"the Ray worker started in place of worker {executor.give_up(ref)} was not "
                                     f"ready after {WORKER_START_S:g} s (no free GPU in the cluster?): given up"))
        finally:
            ahead.close()
            if self._flights:  # stopped by an error here (a full disk, Ctrl+C): the workers stop too
                ray.get(executor.flag.set.remote())
                ray.wait(list(self._flights), num_returns=len(self._flights), timeout=60)

    def _send(self, ahead: Lookahead, order: list[int]) -> None:
        """Every idle worker given a page: one lost by a worker first, else the next page of `order`."""
        while self._idle and not self.cancel.cancelled and (self._retry or self._position < len(order)):
            if self._retry:
                job, lost = self._retry.popleft()
                if self.cancel.page_cancelled(job.name):
                    self._page_cancelled(job)
                    continue
            else:
                job, lost = self._next(ahead, order, self._position), 0
                self._position += 1
                if job is None:
                    continue
            self._submit(job, self._idle.popleft(), lost)

    def _next(self, ahead: Lookahead, order: list[int], position: int) -> _Job | None:
        """The page at `position` prepared and its job (None: failed or skipped, its events sent)."""
        name = self.chapter.sources[order[position]].name
        if self.cancel.page_cancelled(name):  # taken off the queue before it went out: left as it was
            ahead.drop(order[position])
            self.emit(Cancelled(name))
            return None
        try:
            ready = ahead.take(order, position)
        except Exception as exc:  # one bad page never ends the chapter
            self.failed(name, failure_reason(exc))
            return None
        self.report.intervals.append((name, "prepare", *ready.interval))
        job = self._job(ready, name)
        if job is not None and self.again is None:
            self.project.set_status(name, "running")
        return job

    def _submit(self, job: _Job, worker: int, lost: int) -> None:
        executor = self.executor
        payload = PagePayload(job.ready.page, job.ready.retrieval, job.ready.prepared, job.run)
        ref = executor.actors[worker].color.remote(payload, executor.events, executor.flag)
        self._flights[ref] = _Flight(job, worker, _StageClock(self.emit), lost)

    def _joined(self, ref) -> None:
        """A worker started in a lost one's place is ready (its next page goes to it), or could not start."""
        number, problem = self.executor.revive(ref)
        if problem is None:
            self._idle.append(number)
            self.emit(Notice(f"a new Ray worker took lost worker {number}'s place"))
        else:
            self.emit(Notice(f"the Ray worker started in place of worker {number} could not start: {problem}"))

    def _stop_cancelled_pages(self) -> None:
        """Pages cancelled on their own while on a worker: that worker stops them within a step."""
        for flight in self._flights.values():
            name = flight.job.name
            if name not in self._stopping and name in self.cancel.pages_cancelled:
                self._stopping.add(name)
                self.executor.flag.cancel_page.remote(name)

    def _page_cancelled(self, job: _Job) -> None:
        """One page cancelled on its own: back to pending, nothing written; the run goes on."""
        self._cancelled([job], run=False)

    def _relay(self) -> None:
        """The workers' events to `emit`, each page's through its stage clock (its ICP and GSRP times)."""
        clocks = {flight.job.name: flight.clock for flight in self._flights.values()}
        for event in self.executor.drain():
            clocks.get(getattr(event, "page", None), self.emit)(event)

    def _outcome(self, ref, flight: _Flight) -> bool:
        """A page's call came back: written, failed or sent again; False when it did not finish."""
        ray, job = import_ray(), flight.job
        try:
            final, notes = ray.get(ref)
        except ray.exceptions.RayActorError as exc:  # the worker died (or cannot be reached)
            self.executor.lose(flight.worker)
            lost = flight.lost + 1
            if self.cancel.cancelled:
                return False
            if self.executor.replace(flight.worker):
                self.emit(Notice(f"a new Ray worker is starting in place of lost worker {flight.worker} (it loads "
                                 "the models first)", job.name))
            if self.cancel.page_cancelled(job.name):
                self._page_cancelled(job)
                return True
            if lost > self.executor.max_retries:
                times = "once" if lost == 1 else f"{lost} times"
                self.failed(job.name, f"Ray worker lost {times} while coloring this page (the last: {_first_line(exc)}); "
                                      "the run went on without it: run again with --resume to color the page")
                return True
            self.emit(Notice(f"a Ray worker was lost ({_first_line(exc)}); the page is colored again on another "
                             f"worker (retry {lost} of {self.executor.max_retries})", job.name))
            self._retry.append((job, lost))
            return False
        except Exception as exc:  # the page's own error, raised on the worker (RayTaskError: its cause)
            from engine.icp.colorize import Interrupted

            self._idle.append(flight.worker)
            cause = exc.cause if isinstance(exc, ray.exceptions.RayTaskError) else exc
            if isinstance(cause, Interrupted) and self.cancel.cancelled:
                return False
            if isinstance(cause, Interrupted) and self.cancel.page_cancelled(job.name):
                self._page_cancelled(job)
                return True
            self.failed(job.name, failure_reason(cause if isinstance(cause, Exception) else exc))
            return True
        self._idle.append(flight.worker)  # its next page once this one is written (and PageDone said)
        job.notes.extend(notes)
        self.report.intervals.extend(flight.clock.intervals(job.name))
        in_flight = [f.job for f in self._flights.values()] + [job for job, _ in self._retry]
        emit = self.emit  # PagePass._write, its PageDone saying which worker colored the page
        self.emit = lambda event: emit(_with_worker(event, job.name, flight.worker))
        try:
            self._write(job, final, in_flight)
        finally:
            self.emit = emit
        return True

    def _stop(self, next_page: str | None) -> None:
        """Cancelled: the workers stop within a step; pages written stay, the others go back to pending."""
        ray = import_ray()
        ray.get(self.executor.flag.set.remote())
        unfinished = [job for job, _ in self._retry]
        while self._flights:
            ready, _ = ray.wait(list(self._flights), num_returns=len(self._flights), timeout=WAIT_S)
            self._relay()
            for ref in ready:
                flight = self._flights.pop(ref)
                if not self._outcome(ref, flight):
                    unfinished.append(flight.job)
        self._retry.clear()
        if unfinished:
            self._cancelled(unfinished)
        else:
            self.report.cancelled = True
            self.emit(Cancelled(next_page))

    def _no_worker_left(self, rest: list[int]) -> None:
        """Every worker was lost: the pages not colored go back to pending and the run stops (RunStopped)."""
        names = [job.name for job, _ in self._retry] + [self.chapter.sources[i].name for i in rest]
        if self.again is None:
            for name in names:
                if self.project.page(name).status == "running":
                    self.project.set_status(name, "pending")
            self.project.save()
        raise RunStopped(f"every Ray worker was lost ({len(self.executor.actors)} started); the "
                         f"{len(self.report.done)} page(s) written are kept. Start the workers again, then run "
                         "again with --resume", self.report)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _with_worker(event, name: str, worker: int):
    if isinstance(event, PageDone) and event.page == name:
        return replace(event, info={**event.info, "worker": worker})
    return event
