"""The one worker thread: runs engine jobs off the main thread and re-emits engine events as
Qt signals. Widgets are never touched from the worker; cancel is a cooperative flag."""

from __future__ import annotations

import itertools
import traceback
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

from PySide6.QtCore import QObject, QThread, Signal, Slot

from engine.core.errors import ColorFlowError, printable
from engine.core.events import (
    CancelToken,
    Cancelled,
    Finished,
    Notice,
    PageDone,
    PageFailed,
    Preview,
    Progress,
    Started,
)

from .gui_messages import gui_text

Job = Callable[[Callable[[object], None], CancelToken], Any]


class _Runner(QObject):
    """Lives in the worker thread; runs one job at a time in submission order."""

    began = Signal(int)
    event = Signal(int, object)
    succeeded = Signal(int, object)
    failed = Signal(int, str)
    skipped = Signal(int)

    @Slot(int, object, object)
    def run(self, job_id: int, job: Job, cancel: CancelToken) -> None:
        if cancel.cancelled:
            self.skipped.emit(job_id)
            return
        self.began.emit(job_id)
        try:
            result = job(lambda event: self.event.emit(job_id, event), cancel)
        except ColorFlowError as exc:  # a user-facing problem: its message says it all
            self.failed.emit(job_id, printable(str(exc)))
            return
        except Exception as exc:  # a bug: reported in the UI with its type, never a crash
            detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
            self.failed.emit(job_id, printable(detail))
            return
        self.succeeded.emit(job_id, result)


@dataclass
class _PageGroup:
    """One engine call coloring several pages side by side (Ray workers), followed as one job per page."""

    token: CancelToken
    ids: dict[str, int]  # page -> its job id
    started: set[int] = field(default_factory=set)
    ended: set[int] = field(default_factory=set)

    def live(self) -> list[int]:
        return [job for job in self.ids.values() if job not in self.ended]

    def page_of(self, job_id: int) -> str:
        return next(page for page, job in self.ids.items() if job == job_id)


class EngineWorker(QObject):
    """Main-thread side of the worker: `submit` queues a job; results arrive as signals.

    Signals carry the job id so callers can match results to requests.
    """

    started = Signal(int, str, int)  # job, name, total
    progress = Signal(int, object)  # job, engine Progress
    preview = Signal(int, str, object)  # job, page, PIL image
    page_done = Signal(int, str, dict)
    page_failed = Signal(int, str, str)
    cancelled = Signal(int, str)
    notice = Signal(int, str)  # job, message worth showing (not a failure)
    # Each job ends with exactly one of these three.
    job_finished = Signal(int, object)  # job, result
    job_failed = Signal(int, str)  # job, reason
    job_cancelled = Signal(int)  # job: cancelled before it started, so it never ran
    job_started = Signal(int)  # job: it left the queue and runs now
    busy_changed = Signal(bool)
    _dispatch = Signal(int, object, object)
    instances: "weakref.WeakSet[EngineWorker]" = weakref.WeakSet()  # lets tests find leaked threads

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        EngineWorker.instances.add(self)
        self._ids = itertools.count(1)
        self._pending: dict[int, CancelToken] = {}
        self._groups: dict[int, _PageGroup] = {}  # by the id their engine call runs under
        self._group_of: dict[int, int] = {}  # a grouped page's job id -> its group's id
        self._thread = QThread()
        self._thread.setObjectName("colorflow-engine")
        self._runner = _Runner()
        self._runner.moveToThread(self._thread)
        self._dispatch.connect(self._runner.run)
        self._runner.began.connect(self._on_began)
        self._runner.event.connect(self._on_event)
        self._runner.succeeded.connect(self._on_succeeded)
        self._runner.failed.connect(self._on_failed)
        self._runner.skipped.connect(self._on_skipped)
        self._thread.start()

    # --- API ----------------------------------------------------------------------------
    def submit(self, job: Job) -> int:
        job_id = next(self._ids)
        token = CancelToken()
        self._pending[job_id] = token
        if len(self._pending) == 1:
            self.busy_changed.emit(True)
        self._dispatch.emit(job_id, job, token)
        return job_id

    def submit_pages(self, job: Job, pages: list[str]) -> list[int]:
        """Queue one engine call that colors `pages` side by side (on Ray workers), followed as one job per
        page (their ids, in `pages` order): a page's job starts with its first event, gets its page's events
        and ends with its page (PageDone, PageFailed or Cancelled) or with the call; cancelling one cancels
        that page only (CancelToken.cancel_page), cancelling all of them the call."""
        group_id, token = next(self._ids), CancelToken()
        group = self._groups[group_id] = _PageGroup(token, {page: next(self._ids) for page in pages})
        for page_job in group.ids.values():
            self._group_of[page_job] = group_id
            self._pending[page_job] = token
        if len(self._pending) == len(group.ids):
            self.busy_changed.emit(True)
        self._dispatch.emit(group_id, job, token)
        return list(group.ids.values())

    def cancel(self, job_id: int | None = None) -> None:
        """Cancel one job (or every queued and running job): it stops at its next check."""
        targets = [job_id] if job_id is not None else list(self._pending)
        for target in targets:
            token = self._pending.get(target)
            if not token:
                continue
            group = self._groups.get(self._group_of.get(target, -1))
            if group is None:
                token.cancel()
                continue
            token.cancel_page(group.page_of(target))
            if all(token.page_cancelled(group.page_of(job)) for job in group.live()):
                token.cancel()  # nothing of the call is wanted any more

    @property
    def busy(self) -> bool:
        return bool(self._pending)

    def shutdown(self, wait_ms: int | None = None) -> bool:
        """Cancel everything, let the current step finish, stop the thread (never terminate:
        a killed thread could leave a half-written file or a CUDA context in a bad state).
        Waits at most `wait_ms` (None: until the step ends); whether the thread has stopped."""
        self.cancel()
        self._thread.quit()
        return self._thread.wait() if wait_ms is None else self._thread.wait(wait_ms)

    def is_running(self) -> bool:
        return self._thread.isRunning()

    # --- from the worker thread (queued to the main thread) ------------------------------
    @Slot(int)
    def _on_began(self, job_id: int) -> None:
        if job_id not in self._groups:  # a group's pages start with their first events
            self.job_started.emit(job_id)

    def _page_job(self, group: _PageGroup, event: object) -> int | None:
        """The page job an event of a group's call belongs to (a page-less one: its first live page's),
        started by it unless it is that page's Cancelled."""
        target = group.ids.get(getattr(event, "page", None) or "")
        if target is None or target in group.ended:
            target = next(iter(group.live()), None)
        if target is not None and target not in group.started and not isinstance(event, Cancelled):
            group.started.add(target)
            self.job_started.emit(target)
        return target

    def _end_page_job(self, group: _PageGroup, job_id: int, ended: Signal, *args) -> None:
        group.ended.add(job_id)
        self._done(job_id)
        ended.emit(job_id, *args)

    @Slot(int, object)
    def _on_event(self, job_id: int, event: object) -> None:
        group = self._groups.get(job_id)
        if group is not None:
            job_id = self._page_job(group, event)
            if job_id is None:
                return
        self._emit_event(job_id, event)
        page = getattr(event, "page", None)
        if group is not None and isinstance(event, (PageDone, PageFailed, Cancelled)) and group.ids.get(page) == job_id:
            if isinstance(event, Cancelled) and job_id not in group.started:
                self._end_page_job(group, job_id, self.job_cancelled)
            else:  # as a one-page call returns after its page (a failed page is the project's to tell)
                self._end_page_job(group, job_id, self.job_finished, None)

    def _emit_event(self, job_id: int, event: object) -> None:
        if isinstance(event, Started):
            self.started.emit(job_id, event.job, event.total)
        elif isinstance(event, Progress):
            self.progress.emit(job_id, event)
        elif isinstance(event, Preview):
            self.preview.emit(job_id, event.page, event.image)
        elif isinstance(event, PageDone):
            self.page_done.emit(job_id, event.page, dict(event.outputs))
        elif isinstance(event, PageFailed):
            self.page_failed.emit(job_id, event.page, gui_text(printable(event.reason)))  # the page name is a key: raw
        elif isinstance(event, Cancelled):
            self.cancelled.emit(job_id, event.page or "")
        elif isinstance(event, Notice):
            self.notice.emit(job_id, gui_text(printable(f"{event.page + ': ' if event.page else ''}{event.message}")))
        elif isinstance(event, Finished):
            pass  # the job's result carries the report

    def _done(self, job_id: int) -> None:
        self._pending.pop(job_id, None)
        if not self._pending:
            self.busy_changed.emit(False)

    def _end_group(self, group_id: int, ended: Signal, *args) -> bool:
        """A group's call ended: each of its pages still open ends with it (`ended`; a page the user cancelled:
        job_cancelled). False when `group_id` is no group."""
        group = self._groups.pop(group_id, None)
        if group is None:
            return False
        for job_id in group.live():
            cancelled = group.token.page_cancelled(group.page_of(job_id))
            self._end_page_job(group, job_id, *((self.job_cancelled,) if cancelled else (ended, *args)))
        for job_id in group.ids.values():
            self._group_of.pop(job_id, None)
        return True

    def _end(self, job_id: int, ended: Signal, *args) -> None:
        """A job's call ended with `ended` (job_finished, job_failed or job_cancelled): a group's open pages
        end with it, another job is done."""
        if not self._end_group(job_id, ended, *args):
            self._done(job_id)
            ended.emit(job_id, *args)

    @Slot(int, object)
    def _on_succeeded(self, job_id: int, result: object) -> None:
        self._end(job_id, self.job_finished, result)

    @Slot(int, str)
    def _on_failed(self, job_id: int, reason: str) -> None:
        self._end(job_id, self.job_failed, gui_text(reason))  # the engine's words name CLI flags: here, menus

    @Slot(int)
    def _on_skipped(self, job_id: int) -> None:
        self._end(job_id, self.job_cancelled)
