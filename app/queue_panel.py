"""The run queue panel: one line when idle (status and buttons); while pages run, the run's
progress, and on request the queued pages and the running page's steps."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QKeySequence, QPainter
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

# The Queue's keys, shared with the Run menu's actions so that tooltips and menus agree.
CANCEL_PAGE_KEY = "Shift+Esc"
CANCEL_ALL_KEY = "Ctrl+Esc"
RETRY_FAILED_KEY = "Ctrl+R"
DETAILS_KEY = "Ctrl+Shift+D"


def key_text(key: str) -> str:
    """A key as menus show it on this platform."""
    return QKeySequence(key).toString(QKeySequence.SequenceFormat.NativeText)


class ElidedLabel(QLabel):
    """One line that elides rather than widening its panel; the whole text is its tooltip."""

    def __init__(self, text: str = "") -> None:
        super().__init__(text)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

    def setText(self, text: str) -> None:  # noqa: N802 (Qt's name)
        super().setText(text)
        self.setToolTip(text)

    def paintEvent(self, _event) -> None:  # noqa: N802 (Qt's name)
        box = self.contentsRect()
        shown = self.fontMetrics().elidedText(self.text(), Qt.TextElideMode.ElideRight, box.width())
        QPainter(self).drawText(box, int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), shown)


class QueueList(QListWidget):
    """The queued pages; Delete (or the context menu's Remove from queue) asks to remove the selected ones."""

    remove_requested = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        remove = QAction("Remove from queue", self)
        remove.setShortcut(QKeySequence.StandardKey.Delete)
        remove.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
        remove.triggered.connect(self.remove_requested)
        self.addAction(remove)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)

    def keyPressEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        if event.key() in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace):  # when the shortcut did not take it
            self.remove_requested.emit()
        else:
            super().keyPressEvent(event)


class QueuePanel(QWidget):
    """Queued pages with cancel/retry and progress; the live preview is in the Result tab."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.status = ElidedLabel("Idle")
        self.overall = QProgressBar()
        self.overall.setFormat("run: %v / %m pages")
        # wide enough for its text at three-digit counts, whatever the font
        self.overall.setMinimumWidth(self.overall.fontMetrics().horizontalAdvance("run: 888 / 888 pages") + 24)
        self.overall.setToolTip("Pages finished in this run / pages in it")
        self.progress = QProgressBar()
        self.progress.setFormat("this page: %v / %m")
        self.list = QueueList()
        self.list.setMaximumHeight(72)
        self.details = QToolButton()
        self.details.setText("Details")
        self.details.setCheckable(True)
        self.details.setShortcut(QKeySequence(DETAILS_KEY))
        self.details.setToolTip(f"Show the queued pages and the running page's steps ({key_text(DETAILS_KEY)})")
        self.details.toggled.connect(lambda _on: self._refresh())
        self.cancel_selected = QPushButton("Cancel page")
        self.cancel_selected.setToolTip("Cancel the running page, or the pages selected in Details; "
                                        f"nothing is written for them ({key_text(CANCEL_PAGE_KEY)})")
        self.cancel_all = QPushButton("Cancel all")
        self.cancel_all.setToolTip(f"Cancel the running page and every queued page ({key_text(CANCEL_ALL_KEY)}; "
                                   "Esc asks first)")
        self.retry_failed = QPushButton("Retry failed")
        self.retry_failed.setToolTip(f"Queue the pages that failed again ({key_text(RETRY_FAILED_KEY)})")
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

    def selected_jobs(self) -> list[int]:
        """The jobs of the pages selected in Details (none while Details is closed)."""
        if not self.list.isVisibleTo(self):
            return []
        return [item.data(Qt.ItemDataRole.UserRole) for item in self.list.selectedItems()]

    def _refresh(self) -> None:
        expanded = self._running and self.details.isChecked()
        self.progress.setVisible(expanded)
        self.list.setVisible(expanded)
