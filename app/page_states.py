"""What the canvas, the Result tab and the References rows say while a chapter opens, references
are added, models load or retrieval runs, and for a page that failed: never an empty-state hint
that the panel beside it contradicts, and every menu named as the menu bar spells it."""

from __future__ import annotations

from .gui_messages import SETTINGS, gui_text
from .job_model import Job, JobKind, JobState

NO_CHAPTER = ("Open a chapter: File ▸ Open chapter folder… or File ▸ Open CBZ/ZIP…\n\n"
              "then add colored references (+ Add references in the References panel)")
NO_REFERENCES = ("No colored references yet.\n\nAdd some with + Add references in the References panel "
                 "(or File ▸ Add references…), or drop colored images on this window: each page is then "
                 "matched to them.")
NOT_COLORED = "Not colored yet — Run ▸ Colorize page (Ctrl+Enter)"
QUEUED = "Queued for coloring: it starts when its turn comes (Queue panel)"
COLORING = "Coloring… the live preview appears here"
RETRY = f"Run ▸ Retry failed pages, or {SETTINGS} to change the models or device"
# The stages the retrieval job reports (app/jobs.py retrieve_view), in words.
STAGES = {"loading models": "Loading models…", "RAP": "Matching the page to the references…"}


def failed_text(reason: str | None) -> str:
    """The Result tab of a failed page: why, and what fixes it."""
    return f"Failed: {gui_text(reason) if reason else 'no reason was recorded'}\n\n{RETRY}"


def stage_text(stage: str, step: int, total: int) -> str:
    """A Progress event of a retrieval in words; counted stages (e.g. embedding) with their n/N."""
    if stage in STAGES:
        return STAGES[stage]
    return f"{stage} {step}/{total}…" if total > 1 else f"{stage}…"


def _say(view, text: str, keep_image: bool = False) -> None:
    """`text` as the view's placeholder; the image goes unless `keep_image` (and it has one)."""
    if not (keep_image and view.has_image()):
        view.set_pixmap(None)
    view._placeholder.setText(text)
    view._placeholder.setWordWrap(True)


class PageStatesMixin:
    """Mixed into MainWindow (main thread only): its views' busy, empty and failed states."""

    def _connect_page_states(self) -> None:
        self._job_failures: dict[str, str] = {}  # page -> why its last job failed before the engine ran it
        self.worker.job_started.connect(self._state_job_started)  # after the job model's own slot
        self.worker.progress.connect(self._state_progress)

    # --- canvas and References rows ------------------------------------------------------
    def _rows_state(self, text: str | None) -> None:
        """The References rows' title says what runs for this page; None: their own title again."""
        box = self.reference_panel.page_box
        if box.property("idle_title") is None:
            box.setProperty("idle_title", box.title())
        box.setTitle(box.property("idle_title") if text is None else f"This page: {text}")

    def _show_busy(self, text: str, detail: str = "", rows: str = "") -> None:
        """A busy state: the current page's own canvas stays (a re-retrieval); any other goes. The
        rows' title gets the short `rows` (a long title would widen the panel)."""
        own = self._view is not None and self._view.page_index == self.current_page
        _say(self.canvas_view, f"{text}\n\n{detail}" if detail else text, keep_image=own)
        if not own:  # the rows hold another page's picks
            self.reference_panel.clear_page()
        self._rows_state(rows or text)

    def show_empty_canvas(self) -> None:
        """No retrieval to show: the hint that fits what is open."""
        self._view = None
        _say(self.canvas_view, NO_CHAPTER if self.document is None else NO_REFERENCES)
        self.reference_panel.clear_page()
        self._rows_state(None)

    def show_opening(self, path: str) -> None:
        self._view = None
        _say(self.canvas_view, f"Opening chapter {path}…")
        self.reference_panel.clear_page()
        self._rows_state("opening a chapter…")

    def show_adding_references(self) -> None:
        self._show_busy("Adding references…")

    def _is_shown(self, page: str | None) -> bool:
        return self.document is not None and 0 <= self.current_page < len(self.document.page_names) \
            and page == self.document.page_names[self.current_page]

    def show_retrieval_state(self, job: Job, stage: str = "") -> None:
        """The retrieval of the page shown: waiting behind other work, running, or at a `stage`."""
        if not self._is_shown(job.page):
            return
        detail, rows = stage, stage or "retrieving references…"
        if job.state is JobState.QUEUED and not stage:
            ahead = next((j.kind.value for j in self.jobs.active() if j.id < job.id and not j.cancel_requested), None)
            if ahead:
                detail, rows = f"waiting for the running job ({ahead}) to finish…", "waiting for the running job…"
        self._show_busy(f"Retrieving references for {job.page}…", detail, rows)

    def show_retrieval_failed(self, page: str | None, reason: str) -> None:
        if not self._is_shown(page):
            return
        self._view = None
        unreadable = self.document.chapter.sources[self.current_page].ref in self.document.chapter.errors
        fix = "" if unreadable or "▸" in reason else f"\n\n{SETTINGS} changes the models or device"
        _say(self.canvas_view, f"Retrieval failed: {reason}{fix}")
        self.reference_panel.clear_page()

    def _state_job_started(self, job_id: int) -> None:
        job = self.jobs.get(job_id)
        if job is not None and job.kind is JobKind.RETRIEVE and job is self.jobs.latest(JobKind.RETRIEVE):
            self.show_retrieval_state(job)
        elif job is not None and job.kind is JobKind.COLORIZE_PAGE:
            self.refresh_result_hint()

    def _state_progress(self, job_id: int, event) -> None:
        job = self.jobs.get(job_id)
        if job is None or job.cancel_requested:
            return
        if job.kind is JobKind.RETRIEVE and job is self.jobs.latest(JobKind.RETRIEVE):
            self.show_retrieval_state(job, stage_text(event.stage, event.step, event.total))
        elif job.kind is JobKind.OPEN and self._opening:
            stage = stage_text(event.stage, event.step, event.total)
            _say(self.canvas_view, f"Opening chapter {self._opening}…\n\n{stage}")

    def settle_states(self, job: Job) -> None:
        """A job ended: idle rows again once no retrieval or reference adding is left; a page's
        job failure is kept (the project only knows failures the engine saw) until it runs again."""
        if job.kind is JobKind.COLORIZE_PAGE:
            if job.state is JobState.FAILED:
                self._job_failures[job.page] = job.reason or ""
            else:
                self._job_failures.pop(job.page, None)
        elif job.kind is JobKind.OPEN:
            self._rows_state(None)
            if job.state is JobState.DONE:  # another chapter: its own failures
                self._job_failures.clear()
        busy = self.jobs.active(JobKind.RETRIEVE) + self.jobs.active(JobKind.ADD_REFERENCES)
        if job.kind in (JobKind.RETRIEVE, JobKind.ADD_REFERENCES) and not busy:
            self._rows_state(None)

    # --- failed pages and the Result tab --------------------------------------------------
    def failed_pages(self) -> dict[str, str]:
        """Pages that failed and are not queued again, in page order, with why: the project's
        failures and those of jobs that stopped before the engine reached the page."""
        if self.document is None:
            return {}
        queued = set(self.jobs.queued_pages())
        project = self.document.project
        with project.lock:  # the worker updates page states as it runs
            states = [(page.name, page.status, page.error) for page in project.pages]
        failed = {}
        for name, status, error in states:
            if name in queued:
                continue
            if name in self._job_failures:
                failed[name] = self._job_failures[name]
            elif status == "failed":
                failed[name] = error or ""
        return failed

    def refresh_result_hint(self) -> None:
        """What the Result tab says when the shown page has no colored image (yet)."""
        if self.document is None or self.current_page < 0:
            return
        name = self.document.page_names[self.current_page]
        job = self.jobs.page_job(name)
        failed = self.failed_pages()
        if job is not None:
            text = COLORING if job.state is JobState.RUNNING else QUEUED
        elif name in failed:
            text = failed_text(failed[name])
        else:
            text = NOT_COLORED
        self.result_view._placeholder.setText(text)
        self.result_view._placeholder.setWordWrap(True)
