"""Models dialog: per-file sizes, destination and free space, licences, GPU, memory estimate, download and speed probe; the optional line-art files, offered when a line-art style is picked."""

from __future__ import annotations

from html import escape

from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import (
    QDialog,
    QMessageBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.io.storage import human_bytes
from engine.models.overview import models_overview
from engine.models.presets import VERIFY_LABELS, VERIFY_MEANING
from engine.models.speed import probe_line

from .job_model import Job, JobKind, JobModel, JobState
from .window_layout import ScrollingPanel, WrappingLabel, fit_dialog
from .worker import EngineWorker

PROBE_STAGES = ("load", "ScreenStyle", "RAP", "ICP", "GSRP")
DEFAULT_MEMORY_SIZE = "512x800"  # the memory estimate's size when Settings leave it to each page


class ModelDialog(QDialog):
    # What "Measure speed" runs: the official models on the best device, as `colorflow models
    # probe` does by default (tests set a smaller working size and fewer steps).
    probe_models = "official"
    probe_steps = 10
    probe_size = None

    def __init__(self, worker: EngineWorker, parent=None, size: str | None = None,
                 line_art_style: str | None = None) -> None:
        super().__init__(parent)
        # The line-art style the user picked (its files are offered), else both styles' files.
        self.line_art_style = line_art_style
        self.line_art_status = None  # engine.models.overview.LineArtStatus, computed in the worker
        # The working size of Settings; None (the official size nearest each page): 512x800.
        self.memory_size = size or DEFAULT_MEMORY_SIZE
        self.size_words = ("the working size in Settings" if size else
                           "Settings: auto, each page at the official size nearest its aspect")
        self.setWindowTitle("Models")
        fit_dialog(self, QSize(960, 640))
        self.worker = worker
        self.jobs = JobModel()  # the GPU check, and the download or speed probe in progress
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["File", "Size", "Installed", "Verified by"])
        # plain-text lines wrap, long paths and errors too: the dialog never grows past the screen
        self.total = WrappingLabel()
        self.destination = WrappingLabel()
        self.space_warning = WrappingLabel()
        self.space_warning.setStyleSheet("color: #b00020; font-weight: bold")
        self.licences = QLabel()
        self.licences.setWordWrap(True)
        self.licences.setOpenExternalLinks(True)
        self.gpu = WrappingLabel()
        self.speed = WrappingLabel()
        self.memory = QLabel()  # rich text (bold peaks): no WrappingLabel; its lines are short words
        self.memory.setWordWrap(True)
        self.memory.setTextFormat(Qt.TextFormat.RichText)
        self.summary = WrappingLabel()
        self.line_art = WrappingLabel("Line art (optional): checking…")
        self.line_art_button = QPushButton("Download line-art files")
        self.line_art_button.setEnabled(False)
        self.line_art_button.clicked.connect(self.start_line_art_download)
        self.progress = QProgressBar()
        self.progress.hide()
        self.download_button = QPushButton("Download missing files")
        self.probe_button = QPushButton("Measure speed")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.download_button.clicked.connect(self.start_download)
        self.probe_button.clicked.connect(self.start_probe)
        self.cancel_button.clicked.connect(self._cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.download_button)
        buttons.addWidget(self.line_art_button)
        buttons.addWidget(self.probe_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        close = QPushButton("Close")
        close.clicked.connect(self.accept)
        buttons.addWidget(close)
        layout = QVBoxLayout(self)
        about = QLabel(
            "<b>official</b>: the ColorFlow GraySD checkpoints and Stable Diffusion 1.5, downloaded once "
            "into the Hugging Face cache.<br><b>tiny</b>: small random models generated on this computer "
            "(try every screen offline; colors are meaningless)."
        )
        about.setWordWrap(True)
        layout.addWidget(about)
        layout.addWidget(self.tree, 1)
        info = QWidget()  # scrolls rather than squeeze the list when a message is long
        info_layout = QVBoxLayout(info)
        info_layout.setContentsMargins(0, 0, 0, 0)
        for label in (self.total, self.destination, self.space_warning, self.line_art, self.licences, self.gpu,
                      self.speed, self.memory, self.summary):
            info_layout.addWidget(label)
        layout.addWidget(ScrollingPanel(info))
        layout.addWidget(self.progress)
        layout.addLayout(buttons)
        for signal, slot in self._listeners():
            signal.connect(slot)
        self.refresh()
        self._check_gpu()
        self._estimate_memory()
        self._check_line_art()

    def refresh(self) -> None:
        overview = models_overview("official")
        self.tree.clear()
        for row in overview.rows:
            item = QTreeWidgetItem(self.tree, [f"{row.file.repo}/{row.file.path}", row.size_text(),
                                               "yes" if row.installed else "no", VERIFY_LABELS[row.file.verify]])
            item.setToolTip(0, item.text(0))
            item.setToolTip(3, VERIFY_MEANING[row.file.verify] + (f" ({row.file.provenance})" if row.file.provenance else ""))
        self.tree.resizeColumnToContents(0)  # whole file names; the list scrolls sideways if need be
        self.total.setText(
            f"Total {human_bytes(overview.total_bytes)}: {human_bytes(overview.installed_bytes)} installed, "
            f"{human_bytes(overview.to_download_bytes)} still to download."
        )
        self.destination.setText(f"Destination: {overview.destination} — {overview.space_text()}")
        warning = overview.warning()
        self.space_warning.setText(f"Warning: {warning}" if warning else "")
        self.space_warning.setVisible(bool(warning))
        self.licences.setText("<b>Licences</b> (read them before use):<br>" + "<br>".join(
            f"{escape(lic.name)} — {escape(lic.component)}, {escape(lic.repo)}: {escape(lic.summary)}. "
            f"<a href='{escape(lic.url, quote=True)}'>Terms</a> · "
            f"<a href='{escape(lic.model_card, quote=True)}'>model card</a>"
            for lic in overview.licences
        ))
        speed = probe_line(self.probe_models)
        if speed.startswith("not measured"):
            speed += " or press Measure speed"
        self.speed.setText(f"Speed of the official models on this machine: {speed}")
        self.summary.setText("All official files are installed." if not overview.missing
                             else f"{overview.missing} official file(s) missing.")
        idle = self.task() is None
        self.download_button.setEnabled(bool(overview.missing) and idle)
        self.line_art_button.setEnabled(bool(self._line_art_missing()[0]) and idle)
        self.probe_button.setEnabled(not overview.missing and idle)
        self.probe_button.setToolTip("" if not overview.missing else "Download the official files first")

    def _check_line_art(self) -> None:
        """Which line-art files are missing: in the worker (whether the T5 prompt embeddings are cached
        may import torch)."""
        from engine.models.overview import line_art_status

        self.jobs.add(self.worker.submit(lambda emit, cancel: line_art_status()), JobKind.MODEL_FILES)

    def _line_art_missing(self) -> tuple[list, int]:
        """(files, bytes) the line-art download would fetch: the picked style's, else both styles'."""
        status = self.line_art_status
        if status is None:
            return [], 0
        return status.missing[self.line_art_style] if self.line_art_style else status.to_download()

    def _show_line_art(self, status) -> None:
        self.line_art_status = status
        files, total = self._line_art_missing()
        styles = self.line_art_style or "sketch and sketch-shading"
        lines = [f"Line art (optional, only for the {styles} style{'' if self.line_art_style else 's'}): "
                 f"{status.present}/{len(status.rows)} files present."]
        if files:
            lines.append(f"{len(files)} file(s), {human_bytes(total)}, to download once for {styles} (the PixArt-alpha "
                         "base, the ColorFlow line-art networks and the line extractor; sizes partly estimated).")
            if not status.t5_cached:
                lines.append("The T5 text encoder (19 GB of it) is used once, to compute the prompt embeddings.")
        self.line_art.setText(" ".join(lines))
        self.line_art_button.setText(f"Download line-art files ({human_bytes(total)})" if files
                                     else "Line-art files installed")
        # Only the button: a full refresh() would overwrite the summary ("Download complete ...") that
        # the check after a download comes back to.
        self.line_art_button.setEnabled(bool(files) and self.task() is None)

    def start_line_art_download(self) -> None:
        """The missing line-art files of the picked style (else both), through the same download job."""
        from engine.models.hub import download
        from engine.models.line_art import ALL_STYLES, line_art_missing

        style = self.line_art_style or ALL_STYLES
        self.progress.setFormat("%p%  %v / %m bytes")
        self._start(JobKind.DOWNLOAD, lambda emit, cancel: download(
            "official", emit=emit, cancel=cancel, files=line_art_missing("official", style)[0]))

    def _check_gpu(self) -> None:
        """Whether a usable GPU is present; torch (when it must be asked) loads in the worker."""
        from engine.core.devices import NO_GPU, gpu_ruled_out

        if gpu_ruled_out():
            self.gpu.setText(f"GPU: {NO_GPU}")
            return
        from engine.core.devices import describe_gpu

        self.gpu.setText("GPU: checking…")
        self.jobs.add(self.worker.submit(lambda emit, cancel: describe_gpu()), JobKind.DEVICE)

    def _estimate_memory(self) -> None:
        """The estimated peak memory per stage at the Settings size; computed in the worker (the
        official sizes come from a shipped table at once, other sizes take seconds of torch)."""
        from engine.pipelines.memory import summary

        size = self.memory_size
        self.memory.setText(f"Memory at {size}: estimating…")
        self.jobs.add(self.worker.submit(lambda emit, cancel: summary(size)), JobKind.MEMORY)

    def _show_memory(self, rows) -> None:
        from engine.pipelines.memory import GIB, NOT_COUNTED

        lines = [f"<b>Estimated peak memory at {escape(self.memory_size)}</b> ({self.size_words}; the canvas is "
                 f"twice as wide and high), official models, per stage in GiB:"]
        for label, found in rows:
            lines.append(f"{escape(label)}: <b>{found.peak / GIB:.1f} GiB</b> ({escape(found.stage_text())})")
        lines.append(escape(NOT_COUNTED[0].upper() + NOT_COUNTED[1:]) + ". Max VRAM in Settings picks offload "
                     "and tiling from this.")
        self.memory.setText("<br>".join(lines))

    def task(self) -> Job | None:
        """The download or speed probe in progress (one at a time)."""
        return self.jobs.latest(JobKind.DOWNLOAD) or self.jobs.latest(JobKind.PROBE)

    def _start(self, kind: JobKind, work) -> None:
        self.progress.setValue(0)
        self.progress.show()
        self.download_button.setEnabled(False)
        self.line_art_button.setEnabled(False)
        self.probe_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.jobs.add(self.worker.submit(work), kind)

    def _cancel(self) -> None:
        task = self.task()
        if task is not None:
            self.jobs.request_cancel(task.id)
            self.worker.cancel(task.id)

    def start_download(self) -> None:
        from engine.models.hub import download

        self.progress.setFormat("%p%  %v / %m bytes")
        self._start(JobKind.DOWNLOAD, lambda emit, cancel: download("official", emit=emit, cancel=cancel))

    def start_probe(self) -> None:
        from engine.benchmarks.probe import run_probe

        models, steps, size = self.probe_models, self.probe_steps, self.probe_size
        self.progress.setFormat("%p%")
        self.summary.setText("Measuring speed: coloring one generated page…")
        self._start(JobKind.PROBE, lambda emit, cancel: run_probe(models, "auto", steps, size, emit=emit, cancel=cancel))

    def _on_progress(self, job_id: int, event) -> None:
        job = self.jobs.get(job_id)
        if job is None:
            return
        if job.kind is JobKind.DOWNLOAD and event.stage == "download":
            self.progress.setMaximum(max(1, event.total))
            self.progress.setValue(event.step)
            self.summary.setText(f"Downloading {event.page}…")
        elif job.kind is JobKind.PROBE and event.stage in PROBE_STAGES:
            self.progress.setMaximum(len(PROBE_STAGES))
            self.progress.setValue(PROBE_STAGES.index(event.stage))
            steps = f" {event.step}/{event.total}" if event.stage == "ICP" else ""
            stage = "loading models" if event.stage == "load" else event.stage
            self.summary.setText(f"Measuring speed: {stage}{steps}…")

    def _end(self, message: str) -> None:
        self.cancel_button.setEnabled(False)
        self.progress.hide()
        self.refresh()
        self.summary.setText(message)

    def _on_finished(self, job_id: int, result) -> None:
        self._ended(self.jobs.finished(job_id), result)

    def _on_failed(self, job_id: int, reason: str) -> None:
        self._ended(self.jobs.failed(job_id, reason))

    def _on_cancelled(self, job_id: int) -> None:
        self._ended(self.jobs.cancelled_unstarted(job_id))

    def _ended(self, job: Job | None, result=None) -> None:
        if job is None:
            return  # another listener's job
        done = job.state is JobState.DONE
        if job.kind is JobKind.DEVICE:
            self.gpu.setText(f"GPU: {result}" if done else f"GPU: could not check ({job.reason or 'cancelled'})")
        elif job.kind is JobKind.MODEL_FILES:
            if done:
                self._show_line_art(result)
            else:
                self.line_art.setText(f"Line art: could not check ({job.reason or 'cancelled'})")
        elif job.kind is JobKind.MEMORY:
            if done:
                self._show_memory(result)
            else:
                self.memory.setText(f"Memory: could not estimate ({escape(job.reason or 'cancelled')})")
        elif done and job.kind is JobKind.DOWNLOAD:
            self._end("Download complete; every file's sha256 was checked.")
            self._check_line_art()
        elif done:
            self._end(f"Measured {result['page_s']:.1f} s per page on {result['device_name']} "
                      f"(model loading {result['load_s']:.1f} s more).")
        else:
            what = "Download" if job.kind is JobKind.DOWNLOAD else "Speed probe"
            self._end(f"{what} stopped: {job.reason or 'cancelled before it started'}")

    def _listeners(self) -> list[tuple]:
        w = self.worker
        return [(w.job_started, self.jobs.started), (w.progress, self._on_progress), (w.job_finished, self._on_finished),
                (w.job_failed, self._on_failed), (w.job_cancelled, self._on_cancelled)]

    def done(self, result: int) -> None:
        """Stop listening to the worker: a job still running reports to no closed dialog (a
        probe still stores its result; a download still completes)."""
        for signal, slot in self._listeners():
            try:
                signal.disconnect(slot)
            except (RuntimeError, TypeError):
                pass
        super().done(result)


def offer_line_art_download(window, worker: EngineWorker, style: str, models: str) -> None:
    """After a line-art style was picked with the official models: whether its optional files are
    missing is checked in the worker; if they are, a question shows their size, and yes opens the
    Model manager downloading them (the same download job, in the worker)."""
    from engine.models.line_art import LINE_ART_STYLE_NAMES, line_art_missing

    style = str(style)
    if models != "official" or style not in LINE_ART_STYLE_NAMES:
        return
    job_id = worker.submit(lambda emit, cancel: line_art_missing("official", style))

    def finished(done_id: int, result) -> None:
        if done_id != job_id:
            return
        stop()
        files, total = result
        if not files:
            return
        answer = QMessageBox.question(
            window, "Line-art models",
            f"The {style} style needs {len(files)} more model file(s), {human_bytes(total)} (partly estimated), "
            "downloaded once into the Hugging Face cache: the PixArt-alpha base (with the T5 text encoder, used "
            "once to compute the prompt embeddings), the ColorFlow line-art networks and the line extractor.\n\n"
            "Download them now?")
        if answer == QMessageBox.StandardButton.Yes:
            dialog = ModelDialog(worker, window, line_art_style=style)
            dialog.start_line_art_download()
            dialog.exec()

    def ended(done_id: int, *_reason) -> None:
        if done_id == job_id:
            stop()

    def stop() -> None:
        for signal, slot in ((worker.job_finished, finished), (worker.job_failed, ended), (worker.job_cancelled, ended)):
            try:
                signal.disconnect(slot)
            except (RuntimeError, TypeError):
                pass

    worker.job_finished.connect(finished)
    worker.job_failed.connect(ended)
    worker.job_cancelled.connect(ended)


def offer_line_art_files(window, worker: EngineWorker, run, before) -> None:
    """After Settings: a line-art style newly picked with the official models gets its optional files
    offered, with their size, when they are missing (checked in the worker)."""
    if run.input_style != before.input_style:
        offer_line_art_download(window, worker, run.input_style, run.models)
