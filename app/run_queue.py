"""The run queue half of the main window: queue pages for colorization, cancel or remove them,
follow their progress, times and live preview, and settle each page when its job ends."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QListWidgetItem, QMessageBox

from engine.pipelines.ray_cluster import WAITING

from . import jobs
from .images import pil_to_pixmap
from .job_model import Job, JobKind, JobState
from .run_clock import RunClock, clock_text, describe_left


class RunQueueMixin:
    """Mixed into MainWindow (main thread only); uses its worker, document, queue and views."""

    def _connect_queue(self) -> None:
        """Wire the Queue panel and the worker's job starts (once the panel exists)."""
        self._clock = RunClock()
        self._stage: dict[int, str] = {}  # started page jobs -> the step they last reported
        self._tick = QTimer(self)  # elapsed times and time left move on between steps too
        self._tick.setInterval(1000)
        self._tick.timeout.connect(self._show_times)
        self.queue.cancel_selected.clicked.connect(self.cancel_page)
        self.queue.cancel_all.clicked.connect(self.cancel_all)
        self.queue.retry_failed.clicked.connect(self.colorize_failed)
        self.queue.list.remove_requested.connect(lambda: self._remove_jobs(self.queue.selected_jobs()))
        self.worker.job_started.connect(self._on_page_started)

    def colorize_pages(self, names: list[str], again=None) -> None:
        """Queue pages for colorization; with `again` (a VariationRequest) each gets a new variation."""
        if self.document is None or not names:
            return
        document, run, session = self.document, self.settings.run, self.session
        if not self.jobs.queued_pages():  # a new run: overall progress and times start again
            self.queue.overall.setRange(0, 0)
            self.queue.overall.setValue(0)
            self.queue.set_running(True)
            self._clock.reset()
            self._tick.start()
        names = [name for name in names if self._page_job(name) is None]

        def colorize(pages: set[str]):
            return lambda emit, cancel: session.colorize(
                document.chapter, document.references, document.project, settings=run, pages=pages, emit=emit,
                cancel=cancel, again=again, pool=jobs.reference_pool(document, run))

        if run.ray is not None and len(names) > 1:  # one call, so that every Ray worker gets a page at once
            ids = self.worker.submit_pages(colorize(set(names)), names)
            for job_id, name in zip(ids, names):
                self.jobs.add(job_id, JobKind.COLORIZE_PAGE, name)
        else:
            ids = [self._submit(JobKind.COLORIZE_PAGE, colorize({name}), name) for name in names]
        for job, name in zip(ids, names):
            self.queue.overall.setMaximum(self.queue.overall.maximum() + 1)
            item = QListWidgetItem(f"{name} — queued")
            item.setData(Qt.ItemDataRole.UserRole, job)
            self.queue.list.addItem(item)
            self.page_strip.set_status(document.page_names.index(name), "queued")
        self._show_times()
        self._update_actions()

    def colorize_current(self) -> None:
        if self.document is not None and self.current_page >= 0:
            self.colorize_pages([self.document.page_names[self.current_page]])

    def colorize_all(self) -> None:
        if self.document is not None:
            self.colorize_pages([p.name for p in self.document.project.pages if p.status != "done"])

    def colorize_failed(self) -> None:
        if self.document is not None:
            self.colorize_pages(list(self.failed_pages()))

    def cancel_all(self) -> None:
        for job in self.jobs.active(JobKind.COLORIZE_PAGE):
            self._cancel_job(job.id)

    def ask_cancel_all(self) -> None:
        """Cancel every queued and running page after a confirmation."""
        queued = self._live_jobs()
        if not queued:
            return
        answer = QMessageBox.question(
            self, "Cancel", f"Cancel all {len(queued)} queued page(s)? Pages already colored are kept.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No,
        )
        if answer == QMessageBox.StandardButton.Yes:
            self.cancel_all()

    def cancel_page(self) -> None:
        """Cancel page: the pages selected in the Queue's Details, else the running page (it stops
        within one denoising step, or at the next stage, and nothing is written for it)."""
        selected = self.queue.selected_jobs()
        running = self._running_job()
        self._remove_jobs(selected or ([running.id] if running is not None else []))

    def _remove_jobs(self, job_ids: list[int]) -> None:
        """Cancel these page jobs: a queued page leaves the queue at once, a running one at its next check."""
        for job_id in job_ids:
            job = self.jobs.get(job_id)
            if job is None or job.kind is not JobKind.COLORIZE_PAGE or job.cancel_requested:
                continue
            self._cancel_job(job_id)
            if job_id not in self._stage:  # not started: the worker drops it when it comes to it
                item = self._queue_item(job_id)
                if item is not None:
                    self.queue.list.takeItem(self.queue.list.row(item))
                self._show_page_status(job.page)
        self._show_times()
        self._update_actions()

    def _live_jobs(self) -> list[Job]:
        """Page jobs queued or running that nobody asked to cancel, in run order."""
        return [job for job in self.jobs.active(JobKind.COLORIZE_PAGE) if not job.cancel_requested]

    def _page_job(self, page: str) -> Job | None:
        return next((job for job in self._live_jobs() if job.page == page), None)

    def _running_job(self) -> Job | None:
        """The page job the worker runs now (or runs next, between two pages)."""
        jobs = self.jobs.active(JobKind.COLORIZE_PAGE)
        return next((job for job in jobs if job.id in self._stage), None) or next(iter(self._live_jobs()), None)

    def _show_page_status(self, name: str) -> None:
        """The page strip shows where the project says a page no longer queued stands."""
        with self.document.project.lock:
            state = self.document.project.page(name)
            status, error = ("pending" if state.status == "running" else state.status), state.error
        self.page_strip.set_status(self.document.page_names.index(name), status, error)

    def _queue_item(self, job: int) -> QListWidgetItem | None:
        for row in range(self.queue.list.count()):
            item = self.queue.list.item(row)
            if item.data(Qt.ItemDataRole.UserRole) == job:
                return item
        return None

    def _finish_page_job(self, job: Job) -> None:
        """A page's job ended (it has left the job model): settle the page, the queue and the run."""
        name = job.page
        self._clock.page_ended(name, time.monotonic(), completed=job.state is JobState.DONE)
        self._stage.pop(job.id, None)
        bar = self.queue.overall
        if job.state is JobState.CANCELLED:  # no longer part of the run
            bar.setMaximum(max(bar.value(), bar.maximum() - 1))
        else:
            bar.setValue(bar.value() + 1)
        item = self._queue_item(job.id)
        if item is not None:
            self.queue.list.takeItem(self.queue.list.row(item))
        if name == self._live_page:
            self._live_page = None  # the finished page replaces its last noisy preview
        if self.document is not None and self._page_job(name) is None:  # not queued again meanwhile
            index = self.document.page_names.index(name)
            if job.state is JobState.FAILED:
                self.page_strip.set_status(index, "failed", job.reason)
            else:  # done or cancelled: the project says where the page stands
                self._show_page_status(name)
            if index == self.current_page:
                self._show_result(index)
                self._update_caption()
        if not self.jobs.queued_pages():
            self._tick.stop()
            self.queue.set_running(False)
            self.run_finished.emit()
        else:
            self._show_times()
        self._update_actions()

    def _on_progress(self, job_id: int, event) -> None:
        job = self.jobs.get(job_id)
        if job is None or job.kind is not JobKind.COLORIZE_PAGE:
            return
        self._clock.progress(job.page, event.stage, event.step, event.total, time.monotonic())
        counted = event.stage in ("ICP", "GSRP")
        self._stage[job_id] = f"{event.stage} {event.step}/{event.total}" if counted else event.stage
        self.queue.progress.setMaximum(max(1, event.total))
        self.queue.progress.setValue(event.step)
        if event.stage == "ICP" and event.step == 1 and self.document is not None:
            self.page_strip.set_status(self.document.page_names.index(job.page), "running")
            self._update_caption()
        self._show_times()

    def _on_page_started(self, job_id: int) -> None:
        """A page left the queue and runs: timed from now, shown as running, followed when asked."""
        job = self.jobs.get(job_id)
        if job is None or job.kind is not JobKind.COLORIZE_PAGE or job.cancel_requested:
            return
        self._clock.page_started(job.page, time.monotonic())
        self._stage[job_id] = "starting"
        if self.follow_running.isChecked():
            self._follow(job.page)
        self._show_times()

    def _follow(self, page: str) -> None:
        """The page strip selects the running page, so the Result tab shows its live preview."""
        if self.document is not None and page in self.document.page_names:
            index = self.document.page_names.index(page)
            if index != self.current_page:
                self.page_strip.setCurrentRow(index)

    def follow_running_toggled(self, on: bool) -> None:
        """View ▸ Follow the running page: turned on, it goes to the running page now; off, the selection stays."""
        running = self._running_job()
        if on and running is not None and running.id in self._stage:
            self._follow(running.page)

    def _show_times(self) -> None:
        """The status line and Details: each page's step, elapsed time and time left, and the run's."""
        now, clock = time.monotonic(), self._clock
        waiting = [job for job in self._live_jobs() if job.id not in self._stage]
        each = clock.page_total()
        for job in self.jobs.active(JobKind.COLORIZE_PAGE):
            item = self._queue_item(job.id)
            if item is None:
                continue
            if job.cancel_requested:
                text = "cancelling…"
            elif self._stage.get(job.id) == WAITING:  # prepared, for the next free Ray worker
                text = WAITING
            elif job.id in self._stage:
                left = describe_left(clock.page_left(job.page, now))
                text = f"running: {self._stage[job.id]} · {clock_text(clock.elapsed(job.page, now) or 0)} · {left}"
            else:
                text = "queued" + (f" · ~{clock_text(each)}" if each is not None else "")
            item.setText(f"{job.page} — {text}")
        running = self._running_job()
        if running is None or running.id not in self._stage:
            self.queue.status.setText(f"{len(waiting)} page(s) queued{self._ray_text()}")
            return
        if running.cancel_requested:
            page = f"{running.page}: cancelling…"
        else:
            page = (f"{running.page}: {self._stage[running.id]} · {clock_text(clock.elapsed(running.page, now) or 0)}"
                    f" · {describe_left(clock.page_left(running.page, now))}")
        left = clock.run_left(None if running.cancel_requested else running.page, queued=len(waiting), now=now)
        self.queue.status.setText(f"{page}   |   run {clock_text(clock.run_elapsed(now) or 0)} · {describe_left(left)}"
                                  f" · {len(waiting)} queued{self._ray_text()}")

    def _ray_text(self) -> str:
        """Where the pages are colored, while Settings ▸ Ray cluster sends them to Ray workers."""
        if self.settings.run.ray is None:
            return ""
        count = self.session.ray.workers  # an int the worker thread sets once the workers started
        return " · on Ray: " + ("starting workers" if count is None else f"{count} worker{'s' * (count != 1)}")

    def _worker_stopped(self) -> None:
        """The window closes and its worker thread has stopped: the session's Ray workers stop, the chapter closes."""
        self.session.close()
        if self.document is not None:
            self.document.close()

    def _on_preview(self, job_id: int, page: str, image) -> None:
        """The running page's denoising, large in the Result tab while that page is shown."""
        job = self.jobs.get(job_id)
        if self.document is None or self.current_page < 0 or job is None or job.kind is not JobKind.COLORIZE_PAGE:
            return
        if job.page != self.document.page_names[self.current_page]:
            return
        first = self._live_page != job.page
        self._live_page = job.page
        self.result_view.set_pixmap(pil_to_pixmap(image), fit=first)
        if first:
            self._update_caption()
