"""The run queue half of the main window: queue pages for colorization, cancel, follow their
progress and live preview, and settle each page when its job ends."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QListWidgetItem, QMessageBox

from .images import pil_to_pixmap
from .job_model import Job, JobKind, JobState


class RunQueueMixin:
    """Mixed into MainWindow (main thread only); uses its worker, document, queue and views."""

    def colorize_pages(self, names: list[str]) -> None:
        if self.document is None or not names:
            return
        document, run, session = self.document, self.settings.run, self.session
        if not self.jobs.queued_pages():  # a new run: overall progress starts again
            self.queue.overall.setRange(0, 0)
            self.queue.overall.setValue(0)
            self.queue.set_running(True)
        for name in names:
            if self.jobs.page_job(name) is not None:
                continue
            self.queue.overall.setMaximum(self.queue.overall.maximum() + 1)
            job = self._submit(JobKind.COLORIZE_PAGE, lambda emit, cancel, n=name: session.colorize(
                document.chapter, document.references, document.project, settings=run, pages={n}, emit=emit,
                cancel=cancel), name)
            item = QListWidgetItem(f"{name} — queued")
            item.setData(Qt.ItemDataRole.UserRole, job)
            self.queue.list.addItem(item)
            self.page_strip.set_status(document.page_names.index(name), "queued")
        self.queue.status.setText(f"{len(self.jobs.queued_pages())} page(s) queued")
        self._update_actions()

    def colorize_current(self) -> None:
        if self.document is not None and self.current_page >= 0:
            self.colorize_pages([self.document.page_names[self.current_page]])

    def colorize_all(self) -> None:
        if self.document is not None:
            self.colorize_pages([p.name for p in self.document.project.pages if p.status != "done"])

    def colorize_failed(self) -> None:
        if self.document is not None:
            self.colorize_pages([p.name for p in self.document.project.pages if p.status == "failed"])

    def cancel_all(self) -> None:
        for job in self.jobs.active(JobKind.COLORIZE_PAGE):
            self._cancel_job(job.id)

    def ask_cancel_all(self) -> None:
        """Cancel every queued and running page after a confirmation."""
        queued = self.jobs.queued_pages()
        if not queued:
            return
        answer = QMessageBox.question(
            self, "Cancel", f"Cancel all {len(queued)} queued page(s)? Pages already colored are kept.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No,
        )
        if answer == QMessageBox.StandardButton.Yes:
            self.cancel_all()

    def _cancel_selected(self) -> None:
        item = self.queue.list.currentItem()
        if item is not None:
            self._cancel_job(item.data(Qt.ItemDataRole.UserRole))

    def _queue_item(self, job: int) -> QListWidgetItem | None:
        for row in range(self.queue.list.count()):
            item = self.queue.list.item(row)
            if item.data(Qt.ItemDataRole.UserRole) == job:
                return item
        return None

    def _finish_page_job(self, job: Job) -> None:
        """A page's job ended (it has left the job model): settle the page, the queue and the run."""
        name = job.page
        self.queue.overall.setValue(self.queue.overall.value() + 1)
        item = self._queue_item(job.id)
        if item is not None:
            self.queue.list.takeItem(self.queue.list.row(item))
        if name == self._live_page:
            self._live_page = None  # the finished page replaces its last noisy preview
        if self.document is not None:
            index = self.document.page_names.index(name)
            if job.state is JobState.FAILED:
                status, error = "failed", job.reason
            else:  # done or cancelled: the project says where the page stands
                state = self.document.project.page(name)
                status, error = ("pending" if state.status == "running" else state.status), state.error
            self.page_strip.set_status(index, status, error)
            if index == self.current_page:
                self._show_result(index)
                self._update_caption()
        if not self.jobs.queued_pages():
            self.queue.set_running(False)
            self.run_finished.emit()
        self._update_actions()

    def _on_progress(self, job_id: int, event) -> None:
        job = self.jobs.get(job_id)
        if job is None or job.kind is not JobKind.COLORIZE_PAGE:
            return
        self.queue.status.setText(f"{event.page or job.page}: {event.stage} {event.step}/{event.total}")
        self.queue.progress.setMaximum(max(1, event.total))
        self.queue.progress.setValue(event.step)
        item = self._queue_item(job_id)
        if item is not None and event.stage in ("ICP", "GSRP"):
            item.setText(f"{job.page} — {event.stage} {event.step}/{event.total}")
        if event.stage == "ICP" and event.step == 1 and self.document is not None:
            self.page_strip.set_status(self.document.page_names.index(job.page), "running")
            self._update_caption()

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
