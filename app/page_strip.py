"""Page strip: thumbnails in reading order with a status badge; hover a failed page for why."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPainter, QPen, QPixmap
from PySide6.QtWidgets import QLabel, QListView, QListWidget, QListWidgetItem

from .gui_messages import gui_text

BADGES = {
    "pending": ("#8a8a8a", "pending"),
    "retrieved": ("#4a90d9", "references ready"),
    "queued": ("#c9a227", "queued"),
    "running": ("#e07b00", "running"),
    "done": ("#2e9e4f", "done"),
    "failed": ("#d0343a", "failed"),
}
THUMB = 96
ACCEPTED = ("#f2b705", "accepted: a rolling reference for other pages (Pages ▸ Un-accept page)")


def badge_icon(base: QPixmap, status: str, accepted: bool = False) -> QIcon:
    """The thumbnail with a coloured status dot in its corner, and a gold check mark in the other
    corner when the colorist accepted the page."""
    canvas = QPixmap(THUMB, THUMB)
    canvas.fill(QColor(0, 0, 0, 0))
    painter = QPainter(canvas)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    if not base.isNull():
        scaled = base.scaled(THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
        painter.drawPixmap((THUMB - scaled.width()) // 2, (THUMB - scaled.height()) // 2, scaled)
    color, _ = BADGES.get(status, BADGES["pending"])
    painter.setBrush(QColor(color))
    painter.setPen(QColor("white"))
    painter.drawEllipse(THUMB - 22, THUMB - 22, 18, 18)
    if accepted:
        painter.setBrush(QColor(ACCEPTED[0]))
        painter.drawEllipse(4, THUMB - 22, 18, 18)
        painter.setPen(QPen(QColor("white"), 2.5))
        painter.drawPolyline([QPointF(8.5, THUMB - 13), QPointF(12, THUMB - 9), QPointF(18, THUMB - 17)])
    painter.end()
    return QIcon(canvas)


class PageStrip(QListWidget):
    """One item per page; `page_selected` gives the page index."""

    page_selected = Signal(int)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setFlow(QListView.Flow.TopToBottom)
        self.setWrapping(False)
        self.setIconSize(QSize(THUMB, THUMB))
        self.setMovement(QListView.Movement.Static)
        self.setSpacing(4)
        self.setMinimumWidth(THUMB + 48)
        self._thumbs: list[QPixmap] = []
        self._status: list[str] = []
        self._accepted: list[bool] = []
        self._errors: list[str | None] = []
        self.currentRowChanged.connect(lambda row: row >= 0 and self.page_selected.emit(row))

    def set_pages(self, names: list[str], thumbs: list[QPixmap], statuses: list[str], errors: list[str | None]) -> None:
        self.blockSignals(True)
        self.clear()
        self._thumbs, self._status = list(thumbs), list(statuses)
        self._accepted, self._errors = [False] * len(names), list(errors)
        for index, name in enumerate(names):
            item = QListWidgetItem(badge_icon(thumbs[index], statuses[index]), f"{index + 1}. {name}")
            self.addItem(item)
            self._apply_tooltip(index, errors[index])
        self.blockSignals(False)

    def set_status(self, index: int, status: str, error: str | None = None) -> None:
        if not 0 <= index < self.count():
            return
        self._status[index] = status
        self.item(index).setIcon(badge_icon(self._thumbs[index], status, self._accepted[index]))
        self._apply_tooltip(index, error)

    def status(self, index: int) -> str:
        return self._status[index]

    def set_accepted(self, index: int, accepted: bool) -> None:
        """Mark (or unmark) a page the colorist accepted."""
        if 0 <= index < self.count() and self._accepted[index] != accepted:
            self._accepted[index] = accepted
            self.item(index).setIcon(badge_icon(self._thumbs[index], self._status[index], accepted))
            self._apply_tooltip(index, self._errors[index])

    def is_accepted(self, index: int) -> bool:
        return self._accepted[index]

    def _apply_tooltip(self, index: int, error: str | None) -> None:
        self._errors[index] = error
        label = BADGES.get(self._status[index], BADGES["pending"])[1]
        text = f"{self.item(index).text()} — {label}" + (f"; {ACCEPTED[1]}" if self._accepted[index] else "")
        if error:
            text += f"\n{gui_text(error)}"  # a project's error is the engine's text: in the GUI's words
        self.item(index).setToolTip(text)


def status_legend() -> QLabel:
    """What the coloured dots on the page thumbnails mean."""
    rows = "".join(f'<span style="color:{color}">&#9679;</span>&nbsp;{label}<br>' for color, label in BADGES.values())
    rows += f'<span style="color:{ACCEPTED[0]}">&#10004;</span>&nbsp;accepted<br>'  # the mark in the other corner
    legend = QLabel(rows)
    legend.setStyleSheet("padding: 4px; font-size: 11px;")
    legend.setToolTip("Page status: the dot in the corner of each thumbnail")
    return legend
