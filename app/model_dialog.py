"""Models dialog: presets, which official files are installed, download with byte progress."""

from __future__ import annotations

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

from engine.models.hub import human_bytes, local_path, preset_files

from .worker import EngineWorker


class ModelDialog(QDialog):
    def __init__(self, worker: EngineWorker, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Models")
        self.resize(900, 480)
        self.worker = worker
        self.job: int | None = None
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["File", "Size", "Installed"])
        self.tree.setColumnWidth(0, 620)
        self.summary = QLabel()
        self.progress = QProgressBar()
        self.progress.setFormat("%p%  %v / %m bytes")
        self.progress.hide()
        self.download_button = QPushButton("Download missing files")
        self.cancel_button = QPushButton("Cancel download")
        self.cancel_button.setEnabled(False)
        self.download_button.clicked.connect(self.start_download)
        self.cancel_button.clicked.connect(lambda: self.job and self.worker.cancel(self.job))
        buttons = QHBoxLayout()
        buttons.addWidget(self.download_button)
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
        layout.addWidget(self.summary)
        layout.addWidget(self.progress)
        layout.addLayout(buttons)
        worker.progress.connect(self._on_progress)
        worker.job_finished.connect(self._on_finished)
        worker.job_failed.connect(self._on_failed)
        self.refresh()

    def refresh(self) -> None:
        self.tree.clear()
        missing = 0
        for file in preset_files("official"):
            path = local_path(file)
            missing += path is None
            QTreeWidgetItem(self.tree, [f"{file.repo}/{file.path}", human_bytes(file.approx_bytes), "yes" if path else "no"])
        self.summary.setText("All official files are installed." if not missing else f"{missing} official file(s) missing.")
        self.download_button.setEnabled(bool(missing) and self.job is None)

    def start_download(self) -> None:
        from engine.models.hub import download

        self.progress.show()
        self.download_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.job = self.worker.submit(lambda emit, cancel: download("official", emit=emit, cancel=cancel))

    def _on_progress(self, job: int, event) -> None:
        if job == self.job and event.stage == "download":
            self.progress.setMaximum(max(1, event.total))
            self.progress.setValue(event.step)
            self.summary.setText(f"Downloading {event.page}…")

    def _end(self, message: str) -> None:
        self.job = None
        self.cancel_button.setEnabled(False)
        self.refresh()
        self.summary.setText(message)

    def _on_finished(self, job: int, _result) -> None:
        if job == self.job:
            self._end("Download complete; every file's sha256 was checked.")

    def _on_failed(self, job: int, reason: str) -> None:
        if job == self.job:
            self._end(f"Download stopped: {reason}")
