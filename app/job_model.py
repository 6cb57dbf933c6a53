"""The GUI's jobs as plain data (no Qt): kind, state, id and page; the window and dialogs bind to it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class JobKind(Enum):
    OPEN = "open"
    ADD_REFERENCES = "add references"
    RETRIEVE = "retrieve"
    COLORIZE_PAGE = "colorize page"
    EXPORT = "export"
    DEVICE = "resolve device"
    DOWNLOAD = "download"
    PROBE = "speed probe"
    MEMORY = "memory estimate"
    CONSISTENCY = "consistency check"  # the drift check of the Consistency dock (app/drift_panel.py)
    MODEL_FILES = "line-art files check"  # which optional line-art files are missing (app/model_dialog.py)


class JobState(Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(eq=False)
class Job:
    """One job on the worker, known by the id the worker gave it."""

    id: int
    kind: JobKind
    page: str | None = None  # the page it concerns (colorize, retrieve)
    state: JobState = JobState.QUEUED
    reason: str | None = None  # the message it stopped with
    cancel_requested: bool = False  # the user asked; the job stops at its next check, or finishes first
    engine_cancelled: bool = False  # the engine reported a typed Cancelled event

    @property
    def ended(self) -> bool:
        return self.state in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


class JobModel:
    """Queued and running jobs by id; an ended job leaves the model and is handed to the caller.

    Every transition takes a worker job id and returns the job, or None for an id this model
    never saw (another listener's job on the same worker)."""

    def __init__(self) -> None:
        self._active: dict[int, Job] = {}  # insertion order = submission order

    def add(self, job_id: int, kind: JobKind, page: str | None = None) -> Job:
        if job_id in self._active:
            raise ValueError(f"job {job_id} is already queued")
        if kind is JobKind.COLORIZE_PAGE and page is None:
            raise ValueError("a colorize job needs the page it colors")
        job = self._active[job_id] = Job(job_id, kind, page)
        return job

    # --- queries ------------------------------------------------------------------------
    def get(self, job_id: int) -> Job | None:
        return self._active.get(job_id)

    def active(self, kind: JobKind | None = None) -> list[Job]:
        return [job for job in self._active.values() if kind is None or job.kind is kind]

    def latest(self, kind: JobKind) -> Job | None:
        jobs = self.active(kind)
        return jobs[-1] if jobs else None

    def page_job(self, page: str) -> Job | None:
        """The queued or running colorize job of `page`."""
        return next((job for job in self.active(JobKind.COLORIZE_PAGE) if job.page == page), None)

    def queued_pages(self) -> list[str]:
        """Pages queued or running for colorization, in submission order."""
        return [job.page for job in self.active(JobKind.COLORIZE_PAGE)]

    # --- transitions --------------------------------------------------------------------
    def started(self, job_id: int) -> Job | None:
        job = self._active.get(job_id)
        if job is not None:
            job.state = JobState.RUNNING
        return job

    def request_cancel(self, job_id: int) -> Job | None:
        job = self._active.get(job_id)
        if job is not None:
            job.cancel_requested = True
        return job

    def engine_cancelled(self, job_id: int) -> Job | None:
        job = self._active.get(job_id)
        if job is not None:
            job.engine_cancelled = True
        return job

    def finished(self, job_id: int) -> Job | None:
        """The job returned: done, or cancelled when the engine said it stopped early."""
        job = self._active.get(job_id)
        return self._end(job_id, JobState.CANCELLED if job and job.engine_cancelled else JobState.DONE)

    def failed(self, job_id: int, reason: str) -> Job | None:
        """The job raised: failed, or cancelled when the user had asked it to stop (its
        message, e.g. "download cancelled; run it again", is kept either way)."""
        job = self._active.get(job_id)
        return self._end(job_id, JobState.CANCELLED if job and job.cancel_requested else JobState.FAILED, reason)

    def cancelled_unstarted(self, job_id: int) -> Job | None:
        """The worker dropped the job: it was cancelled before it started."""
        return self._end(job_id, JobState.CANCELLED)

    def _end(self, job_id: int, state: JobState, reason: str | None = None) -> Job | None:
        job = self._active.pop(job_id, None)
        if job is not None:
            job.state, job.reason = state, reason
        return job
