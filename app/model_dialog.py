"""Models dialog: per-file sizes, destination and free space, licences, GPU, download and speed probe."""

from __future__ import annotations

from html import escape

from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
)

from engine.models.hub import human_bytes
from engine.models.overview import models_overview
from engine.models.speed import probe_line

from .worker import EngineWorker

PROBE_STAGES = ("load", "ScreenStyle", "RAP", "ICP", "GSRP")


class ModelDialog(QDialog):
    # What "Measure speed" runs: the official models on the best device, as `colorflow models
    # probe` does by default (tests set a smaller working size and fewer steps).
    probe_models = "official"
    probe_steps = 10
    probe_size = None

    def __init__(self, worker: EngineWorker, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Models")
        self.resize(960, 640)
        self.worker = worker
        self.job: int | None = None  # the download or speed probe in progress
        self.job_kind = ""
        self.gpu_job: int | None = None
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["File", "Size", "Installed"])
        self.tree.setColumnWidth(0, 640)
        self.total = QLabel()
        self.destination = QLabel()
        self.destination.setWordWrap(True)
        self.space_warning = QLabel()
        self.space_warning.setWordWrap(True)
        self.space_warning.setStyleSheet("color: #b00020; font-weight: bold")
        self.licences = QLabel()
        self.licences.setWordWrap(True)
        self.licences.setOpenExternalLinks(True)
        self.gpu = QLabel()
        self.speed = QLabel()
        self.summary = QLabel()
        self.progress = QProgressBar()
        self.progress.hide()
        self.download_button = QPushButton("Download missing files")
        self.probe_button = QPushButton("Measure speed")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.download_button.clicked.connect(self.start_download)
        self.probe_button.clicked.connect(self.start_probe)
        self.cancel_button.clicked.connect(lambda: self.job and self.worker.cancel(self.job))
        buttons = QHBoxLayout()
        buttons.addWidget(self.download_button)
        buttons.addWidget(self.probe_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        close = QPushButton("Close")
        close.clicked.connect(self.accept)
        buttons.addWidget(close)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(
            "<b>official</b>: the ColorFlow GraySD checkpoints and Stable Diffusion 1.5, downloaded once "
            "into the Hugging Face cache.<br><b>tiny</b>: small random models generated on this computer "
            "(try every screen offline; colors are meaningless)."
        ))
        layout.addWidget(self.tree, 1)
        for label in (self.total, self.destination, self.space_warning, self.licences, self.gpu, self.speed,
                      self.summary):
            layout.addWidget(label)
        layout.addWidget(self.progress)
        layout.addLayout(buttons)
        worker.progress.connect(self._on_progress)
        worker.job_finished.connect(self._on_finished)
        worker.job_failed.connect(self._on_failed)
        self.refresh()
        self._check_gpu()

    def refresh(self) -> None:
        overview = models_overview("official")
        self.tree.clear()
        for row in overview.rows:
            QTreeWidgetItem(self.tree, [f"{row.file.repo}/{row.file.path}", row.size_text(), "yes" if row.installed else "no"])
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
        idle = self.job is None
        self.download_button.setEnabled(bool(overview.missing) and idle)
        self.probe_button.setEnabled(not overview.missing and idle)
        self.probe_button.setToolTip("" if not overview.missing else "Download the official files first")

    def _check_gpu(self) -> None:
        """Whether a usable GPU is present; torch (when it must be asked) loads in the worker."""
        from engine.devices import NO_GPU, gpu_ruled_out

        if gpu_ruled_out():
            self.gpu.setText(f"GPU: {NO_GPU}")
            return
        from engine.devices import describe_gpu

        self.gpu.setText("GPU: checking…")
        self.gpu_job = self.worker.submit(lambda emit, cancel: describe_gpu())

    def _start(self, kind: str, job) -> None:
        self.job_kind = kind
        self.progress.setValue(0)
        self.progress.show()
        self.download_button.setEnabled(False)
        self.probe_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.job = self.worker.submit(job)

    def start_download(self) -> None:
        from engine.models.hub import download

        self.progress.setFormat("%p%  %v / %m bytes")
        self._start("download", lambda emit, cancel: download("official", emit=emit, cancel=cancel))

    def start_probe(self) -> None:
        from engine.probe import run_probe

        models, steps, size = self.probe_models, self.probe_steps, self.probe_size
        self.progress.setFormat("%p%")
        self.summary.setText("Measuring speed: coloring one generated page…")
        self._start("probe", lambda emit, cancel: run_probe(models, "auto", steps, size, emit=emit, cancel=cancel))

    def _on_progress(self, job: int, event) -> None:
        if job != self.job:
            return
        if self.job_kind == "download" and event.stage == "download":
            self.progress.setMaximum(max(1, event.total))
            self.progress.setValue(event.step)
            self.summary.setText(f"Downloading {event.page}…")
        elif self.job_kind == "probe" and event.stage in PROBE_STAGES:
            self.progress.setMaximum(len(PROBE_STAGES))
            self.progress.setValue(PROBE_STAGES.index(event.stage))
            steps = f" {event.step}/{event.total}" if event.stage == "ICP" else ""
            stage = "loading models" if event.stage == "load" else event.stage
            self.summary.setText(f"Measuring speed: {stage}{steps}…")

    def _end(self, message: str) -> None:
        self.job = None
        self.cancel_button.setEnabled(False)
        self.progress.hide()
        self.refresh()
        self.summary.setText(message)

    def _on_finished(self, job: int, result) -> None:
        if job == self.gpu_job:
            self.gpu_job = None
            self.gpu.setText(f"GPU: {result}")
        elif job == self.job and self.job_kind == "download":
            self._end("Download complete; every file's sha256 was checked.")
        elif job == self.job:
            self._end(f"Measured {result['page_s']:.1f} s per page on {result['device_name']} "
                      f"(model loading {result['load_s']:.1f} s more).")

    def _on_failed(self, job: int, reason: str) -> None:
        if job == self.gpu_job:
            self.gpu_job = None
            self.gpu.setText(f"GPU: could not check ({reason})")
        elif job == self.job:
            what = "Download" if self.job_kind == "download" else "Speed probe"
            self._end(f"{what} stopped: {reason}")

    def done(self, result: int) -> None:
        """Stop listening to the worker: a job still running reports to no closed dialog (a
        probe still stores its result; a download still completes)."""
        for signal, slot in ((self.worker.progress, self._on_progress), (self.worker.job_finished, self._on_finished),
                             (self.worker.job_failed, self._on_failed)):
            try:
                signal.disconnect(slot)
            except (RuntimeError, TypeError):
                pass
        super().done(result)
