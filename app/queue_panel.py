"""The run queue panel: one line when idle (status and buttons); while pages run, the run's
progress, and on request the queued pages and the running page's steps."""

from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QLabel, QListWidget, QProgressBar, QPushButton, QToolButton, QVBoxLayout, QWidget


class QueuePanel(QWidget):
    """Queued pages with cancel/retry and progress; the live preview is in the Result tab."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.status = QLabel("Idle")
        self.overall = QProgressBar()
        self.overall.setFormat("run: %v / %m pages")
        self.overall.setMaximumWidth(260)
        self.progress = QProgressBar()
        self.progress.setFormat("this page: %v / %m")
        self.list = QListWidget()
        self.list.setMaximumHeight(72)
        self.details = QToolButton()
        self.details.setText("Details")
        self.details.setCheckable(True)
        self.details.setToolTip("Show the queued pages and the running page's steps")
        self.details.toggled.connect(lambda _on: self._refresh())
        self.cancel_selected = QPushButton("Cancel page")
        self.cancel_all = QPushButton("Cancel all")
        self.retry_failed = QPushButton("Retry failed")
        line = QHBoxLayout()
        line.addWidget(self.status, 1)
        line.addWidget(self.overall)
        line.addWidget(self.details)
        for button in (self.cancel_selected, self.cancel_all, self.retry_failed):
            line.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 2, 6, 2)
        layout.addLayout(line)
        layout.addWidget(self.progress)
        layout.addWidget(self.list)
        self.set_running(False)

    def set_running(self, running: bool) -> None:
        """Idle: a single line; running: the run's progress bar and the cancel buttons."""
        self._running = running
        self.overall.setVisible(running)
        self.cancel_selected.setEnabled(running)
        self.cancel_all.setEnabled(running)
        self.details.setEnabled(running)
        if not running:
            self.status.setText("Idle")
            self.progress.reset()
        self._refresh()

    def _refresh(self) -> None:
        expanded = self._running and self.details.isChecked()
        self.progress.setVisible(expanded)
        self.list.setVisible(expanded)
