"""The one worker thread: runs engine jobs off the main thread and re-emits engine events as
Qt signals. Widgets are never touched from the worker; cancel is a cooperative flag."""

from __future__ import annotations

import itertools
import traceback
import weakref
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
        self._thread = QThread()
        self._thread.setObjectName("colorflow-engine")
        self._runner = _Runner()
        self._runner.moveToThread(self._thread)
        self._dispatch.connect(self._runner.run)
        self._runner.began.connect(self.job_started)
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

    def cancel(self, job_id: int | None = None) -> None:
        """Cancel one job (or every queued and running job): it stops at its next check."""
        targets = [job_id] if job_id is not None else list(self._pending)
        for target in targets:
            token = self._pending.get(target)
            if token:
                token.cancel()

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
    @Slot(int, object)
    def _on_event(self, job_id: int, event: object) -> None:
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

    @Slot(int, object)
    def _on_succeeded(self, job_id: int, result: object) -> None:
        self._done(job_id)
        self.job_finished.emit(job_id, result)

    @Slot(int, str)
    def _on_failed(self, job_id: int, reason: str) -> None:
        self._done(job_id)
        self.job_failed.emit(job_id, gui_text(reason))  # the engine's words name CLI flags: here, menus

    @Slot(int)
    def _on_skipped(self, job_id: int) -> None:
        self._done(job_id)
        self.job_cancelled.emit(job_id)
