"""The run queue panel: queued pages, progress of the running page and of the run, live
preview, cancel and retry buttons."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QListWidget, QProgressBar, QPushButton, QVBoxLayout, QWidget


class QueuePanel(QWidget):
    """Queued pages with cancel/retry, progress of the running page, live preview."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.list = QListWidget()
        self.list.setMaximumHeight(72)
        self.status = QLabel("Idle")
        self.progress = QProgressBar()
        self.progress.setFormat("this page: %v / %m")
        self.overall = QProgressBar()
        self.overall.setFormat("run: %v / %m pages")
        self.preview = QLabel()
        self.preview.setFixedSize(96, 96)
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setStyleSheet("background: #303034; border: 1px solid #555;")
        self.cancel_selected = QPushButton("Cancel page")
        self.cancel_all = QPushButton("Cancel all")
        self.retry_failed = QPushButton("Retry failed")
        left = QVBoxLayout()
        left.addWidget(self.status)
        left.addWidget(self.progress)
        left.addWidget(self.overall)
        left.addWidget(self.list)
        buttons = QVBoxLayout()
        for button in (self.cancel_selected, self.cancel_all, self.retry_failed):
            buttons.addWidget(button)
        buttons.addStretch(1)
        layout = QHBoxLayout(self)
        layout.addLayout(left, 1)
        layout.addWidget(self.preview)
        layout.addLayout(buttons)
