"""Pass 2 of a chapter on Ray actors: pages prepared here, colored on the workers, written here as they come back.

How it works: RayExecutor (a context manager, one per run, shared by every chapter of it) connects
(ray_cluster.connect), starts one PageWorker actor per GPU Ray sees (or CPU actors), each loading the models
once, refuses them unless each runs this computer's software and models (check_workers: else its pages would
not have a local run's bytes), and owns the run's event queue and cancel flag. RayPagePass replaces
PagePass.run: this process prepares the pages in order as a local run does (decode, G, retrieval and canvas on
the Lookahead's helper thread, a few pages ahead per worker; the resume and variation decisions of
PagePass._job), sends each page to an idle worker, relays the workers' events to `emit` while it waits
(ray.wait), and writes each page as its result comes back, in whatever order (PagePass._write: atomic file,
project saved here only, PageDone, its info["worker"] the number of the worker that colored it).
A page whose worker died (RayActorError) goes to another worker, up to `max_retries` times, then fails
("worker lost") and the run goes on without that worker; a page's own error (RayTaskError) fails that page
with the worker's reason. Cancel sets the flag: every worker stops within one denoising step, pages not
written go back to pending, Cancelled is emitted. One page cancelled on its own (CancelToken.cancel_page: the
app's queue) is skipped if it has not gone out, else its worker stops it within a step; it goes back to
pending, Cancelled(page) is emitted and the run goes on. Why Ray core actors and not Ray Data's map_batches (the
same actor-per-GPU pattern): per-page events, retries, writes as pages come, resume and cancel need each
page's call in hand. Refused up front: --procedure official and --batch-pages > 1 (check_ray_settings).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from engine.core.errors import ColorFlowError, InputError, RunStopped
from engine.core.events import Cancelled, Notice, PageDone, Progress
from engine.core.options import Procedure
from engine.models.sources import MODEL_SOURCE_NAMES
from engine.pipelines.chapter_pages import Lookahead, PagePass, _Job, _StageClock, failure_reason
from engine.pipelines.ray_cluster import WAITING, actor_resources, connect, import_ray
from engine.pipelines.ray_identity import identity_differences, software_and_models
from engine.pipelines.ray_workers import CancelFlag, PagePayload, PageWorker, WorkerSpec

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


class RayExecutor:
    """The run's Ray workers (see the module doc): `with RayExecutor(spec) as executor:`; `workers` the
    live ones, `actors` every one started (a lost one stays at its index)."""

    def __init__(self, spec: WorkerSpec, *, address: str | None = None, workers: int | None = None,
                 max_retries: int = 2) -> None:
        if spec.models not in MODEL_SOURCE_NAMES:  # a folder: this absolute path on every node (each its own copy)
            spec = replace(spec, models=str(Path(spec.models).expanduser().resolve()))
        self.spec, self.address, self.requested, self.max_retries = spec, address, workers, max_retries
        self.actors: list = []
        self.lost: set[int] = set()
        self.devices: list[str] = []
        self.events = self.flag = None

    @property
    def workers(self) -> int:
        return len(self.actors) - len(self.lost)

    def live(self) -> list[int]:
        return [number for number in range(len(self.actors)) if number not in self.lost]

    def __enter__(self) -> RayExecutor:
        connect(self.address)
        ray = import_ray()
        from ray.util.queue import Queue

        count, resources = actor_resources(self.requested, cpu_only=self.spec.device == "cpu")
        try:
            self.events = Queue(actor_options={"num_cpus": 0})
            self.flag = ray.remote(CancelFlag).options(num_cpus=0).remote()
            worker = ray.remote(PageWorker).options(**resources, max_restarts=0, max_task_retries=0)
            self.actors = [worker.remote(self.spec) for _ in range(count)]
            self.devices = ray.get([actor.ready.remote() for actor in self.actors])
            self.check_workers(software_and_models(self.spec.models))  # refused: stopped below, as a failed load
        except BaseException as exc:
            self.__exit__(None, None, None)
            cause = getattr(exc, "cause", None)
            if isinstance(cause, ColorFlowError):
                raise cause from None  # the models' own error (a bad folder, a failed check)
            if isinstance(exc, ray.exceptions.RayError):
                reason = failure_reason(cause) if isinstance(cause, Exception) else str(exc).splitlines()[0]
                raise ColorFlowError(f"a Ray worker could not load the models: {reason}") from exc
            raise
        return self

    def check_workers(self, expected: dict[str, str]) -> None:
        """Every live worker's identity (PageWorker.identity) against `expected` (this computer's
        ray_identity.software_and_models): ColorFlowError with one sentence per item and node that differs, in
        one line (the CLI and the app print an error's newlines escaped). It only raises: the workers keep
        running (__enter__ stops them)."""
        identities = import_ray().get([self.actors[number].identity.remote() for number in self.live()])
        lines = [line for identity in identities for line in identity_differences(expected, identity)]
        if lines:
            raise ColorFlowError(". ".join(dict.fromkeys(lines)))  # two workers of one node: said once

    def __exit__(self, *exc) -> None:
        ray = import_ray()
        for actor in [*self.actors, self.flag]:
            if actor is not None:
                ray.kill(actor)
        if self.events is not None:
            ray.kill(self.events.actor)
        self.actors, self.events, self.flag = [], None, None
        self.lost.clear()  # no worker left to count

    def lose(self, number: int) -> None:
        """Worker `number` died (or is unreachable): no more pages for it, in this run or the next."""
        self.lost.add(number)
        import_ray().kill(self.actors[number])

    def drain(self) -> list:
        """The workers' events queued so far, in order."""
        size = self.events.size()
        return self.events.get_nowait_batch(size) if size else []


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
        """A page is prepared ahead of the workers: once ready it says it waits for one (the app's Queue shows
        that, not a retrieval that ended long ago)."""
        ready = super()._prepare(index, inputs, stopped)
        self.emit(Progress(WAITING, 0, 1, self.chapter.sources[index].name))
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
                if not self._flights:
                    if self._retry or rest:
                        self._no_worker_left(rest)
                    return
                ready, _ = ray.wait(list(self._flights), num_returns=1, timeout=WAIT_S)
                self._relay()
                for ref in ready:
                    self._outcome(ref, self._flights.pop(ref))
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

    def _stop_cancelled_pages(self) -> None:
        """Pages cancelled on their own while on a worker: that worker stops them within a step."""
        for flight in self._flights.values():
            name = flight.job.name
            if name not in self._stopping and name in self.cancel.pages_cancelled:
                self._stopping.add(name)
                self.executor.flag.cancel_page.remote(name)

    def _page_cancelled(self, job: _Job) -> None:
        """One page cancelled on its own: back to pending, nothing written; the run goes on."""
        if self.again is None:
            self.project.set_status(job.name, "pending")
            self.project.save()
        self.emit(Cancelled(job.name))

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
