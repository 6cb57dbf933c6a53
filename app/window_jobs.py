"""The main window's jobs: submitted to the worker, followed in the job model, each end shown by its kind."""

from __future__ import annotations

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QMessageBox

from engine.core.errors import printable

from .images import pil_to_pixmap
from .job_model import Job, JobKind, JobState


class WindowJobsMixin:
    """Mixed into MainWindow (main thread only); uses its worker, jobs, document and views."""

    def _connect_worker(self) -> None:
        w = self.worker
        w.job_started.connect(self.jobs.started)
        w.job_finished.connect(lambda job, result: self._job_ended(self.jobs.finished(job), result))
        w.job_failed.connect(lambda job, reason: self._job_ended(self.jobs.failed(job, reason)))
        w.job_cancelled.connect(lambda job: self._job_ended(self.jobs.cancelled_unstarted(job)))
        w.progress.connect(self._on_progress)
        w.preview.connect(self._on_preview)
        w.page_done.connect(self._on_page_done)
        w.page_failed.connect(self._on_page_failed)
        w.cancelled.connect(self._on_cancelled)
        w.notice.connect(lambda _job, text: self.statusBar().showMessage(text, 10000))
        self._connect_page_states()

    def _submit(self, kind: JobKind, work, page: str | None = None) -> int:
        """Queue `work` on the worker and follow it in the job model."""
        job_id = self.worker.submit(work)
        self.jobs.add(job_id, kind, page)
        return job_id

    def _cancel_job(self, job_id: int) -> None:
        self.jobs.request_cancel(job_id)
        self.worker.cancel(job_id)

    def _on_page_done(self, job: int, page: str, outputs: dict) -> None:
        self.statusBar().showMessage(f"{printable(page)} colored", 4000)

    def _on_page_failed(self, job: int, page: str, reason: str) -> None:
        self.statusBar().showMessage(f"{printable(page)} failed: {reason}", 8000)  # reason: escaped by the worker

    def _on_cancelled(self, job: int, page: str) -> None:
        self.jobs.engine_cancelled(job)
        self.statusBar().showMessage(f"{printable(page or 'job')} cancelled", 4000)

    def _job_ended(self, job: Job | None, result=None) -> None:
        """Each job ends once (finished, failed or cancelled); the window follows its kind and state."""
        if job is None:
            return  # another listener's job (the Models dialog's)
        self.settle_states(job)  # first: a page's failure counts when the queue settles it
        if job.kind is JobKind.COLORIZE_PAGE:
            self._finish_page_job(job)
        elif job.state is JobState.DONE:
            self._job_done(job, result)
        elif job.state is JobState.FAILED:
            self._job_failed(job, job.reason or "")
        # cancelled: stopped by the user or superseded by a newer request: dropped quietly

    def _job_done(self, job: Job, result) -> None:
        if job.kind is JobKind.OPEN:
            self._show_document(result)
        elif job.kind is JobKind.RETRIEVE:
            self._show_retrieval(result)
        elif job.kind is JobKind.ADD_REFERENCES:
            self._ref_thumbs = {ref: pil_to_pixmap(t) for ref, t in result.items()}
            self._refresh_references()
            doc = self.document
            self.statusBar().showMessage(f"{len(doc.page_names)} pages, {len(doc.references)} references", 5000)
            self.request_retrieval()
        elif job.kind is JobKind.EXPORT:
            self._exported = list(result)
            where = result[0].parent if result else self.document.project.folder
            self.statusBar().showMessage(f"exported {len(result)} file(s) to {where}", 15000)
            self.show_folder_button.setVisible(bool(result))
            QTimer.singleShot(15000, self.show_folder_button.hide)
        elif job.kind is JobKind.DEVICE:
            self._device_text = result
            self._update_device_label()
        elif job.kind is JobKind.CONSISTENCY:
            self._show_drift(result)

    def _job_failed(self, job: Job, reason: str) -> None:
        if job.kind is JobKind.RETRIEVE:
            self.show_retrieval_failed(job.page, reason)
        elif job.kind is JobKind.OPEN:
            self.statusBar().clearMessage()  # no stale "Opening…"
            self.request_retrieval() if self.document is not None else self.show_empty_canvas()
            if "rename colorflow-project.json.bak" in reason:  # damaged, with a good previous copy
                self._offer_backup(reason)
            else:
                QMessageBox.warning(self, "ColorFlow", f"Could not open the chapter:\n{reason}")
        elif job.kind is JobKind.DEVICE:
            self._device_text = f"{self.settings.run.device} — {reason}"
            self._update_device_label()
        elif job.kind is JobKind.EXPORT:
            QMessageBox.warning(self, "ColorFlow", f"Export failed:\n{reason}")
        elif job.kind is JobKind.CONSISTENCY:
            self.drift_panel.show_problem(reason)
        else:
            if job.kind is JobKind.ADD_REFERENCES:
                self.request_retrieval()  # "Adding references…" ends: the page as it stands
            self.statusBar().showMessage(reason, 8000)
