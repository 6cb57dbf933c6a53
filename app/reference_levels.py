"""Each reference's level in the References panel (series, chapter, an accepted page of this chapter or of
an earlier chapter), its whole-series pin/reject and Move to series / Move to chapter in its menu."""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QRect, QSize, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import QListWidgetItem, QMenu

from engine.rap.curation import Target

from .vocabulary import short_name

SERIES_LEVELS = ("series", "series-accepted")  # files inside the series library: pinned or rejected for the whole series
NOT_LINKED = "Link this chapter to a series first (File ▸ Link chapter to series…)"
BAND_COLORS = {"chapter": "#5a5a64", "series": "#7b4fd6", "accepted": "#c99a00", "series-accepted": "#9a6a00"}


def level_words(level: str, chapter: str | None = None) -> tuple[str, str]:
    """A level as the panel shows it under a thumbnail, and in a sentence."""
    return {
        "chapter": ("chapter", "a reference of this chapter"),
        "series": ("series", "in the series library: every chapter of the series retrieves from it"),
        "accepted": ("accepted", "an accepted page of this chapter (rolling reference); never used for its own page"),
        "series-accepted": (f"accepted · {chapter}", f"an accepted page of chapter {chapter}, earlier in the series "
                                                     "(rolling reference)"),
    }.get(level, (level, level))


class ReferenceLevels:
    """What the References panel knows of the pool (by ref: level, and the chapter of an earlier accepted
    page) and the window's series callbacks; until the window sets them, nothing of a series is offered."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[str, str | None, str]] = {}  # ref -> (level, chapter, label)
        self.linked = False  # the chapter is linked to a series library
        self.series_choice: Callable[[Target, str | None], None] | None = None
        self.move: Callable[[str, str], None] | None = None  # (ref, "series" | "chapter")

    def level(self, ref: str) -> str | None:
        return self.entries.get(ref, (None, None, ""))[0]

    def series_emit(self, ref: str) -> Callable[[Target, str | None], None] | None:
        """The whole-series choice for `ref`, only for a file of the series library."""
        return self.series_choice if self.level(ref) in SERIES_LEVELS else None

    def decorate(self, item: QListWidgetItem, ref: str) -> None:
        """The level under the name, and in the tooltip."""
        level, chapter, label = self.entries.get(ref, (None, None, ""))
        if level is None:
            return
        short, sentence = level_words(level, chapter)
        item.setText(f"{short_name(label or ref)}\n{short}")  # an accepted page by its page name
        item.setToolTip(f"{item.toolTip()}\n{sentence}")
        item.setData(Qt.ItemDataRole.UserRole + 1, level)
        item.setIcon(banded(item.icon(), short.split(" · ")[0], BAND_COLORS.get(level, "#5a5a64")))

    def add_moves(self, menu: QMenu, ref: str) -> None:
        """Move to series (a chapter reference) / Move to chapter (a series reference), undoable."""
        level = self.level(ref)
        if self.move is None or level not in ("chapter", "series"):
            return
        menu.addSeparator()
        target = "series" if level == "chapter" else "chapter"
        action = menu.addAction(f"Move to {target}", lambda: self.move(ref, target))
        action.setToolTip("Every chapter of the series will use it (Ctrl+Z undoes)" if target == "series"
                          else "Only this chapter will use it (Ctrl+Z undoes)")
        if not self.linked:
            action.setEnabled(False)
            action.setText(f"Move to series — {NOT_LINKED}")


def blank(side: int) -> QPixmap:
    """A light gray square: an image whose thumbnail the worker has not decoded yet (or cannot decode)."""
    pixmap = QPixmap(side, side)
    pixmap.fill(QColor("#d0d0d4"))
    return pixmap


def banded(icon: QIcon, text: str, color: str, side: int = 72) -> QIcon:
    """The thumbnail with its level written on a colored band along its bottom (readable where the
    list leaves no room for the caption)."""
    thumb = icon.pixmap(QSize(side, side))
    pixmap = QPixmap(side, side)
    pixmap.fill(QColor(0, 0, 0, 0))
    painter = QPainter(pixmap)
    painter.drawPixmap((side - thumb.width()) // 2, (side - thumb.height()) // 2, thumb)
    band = QRect(0, side - 16, side, 16)
    painter.fillRect(band, QColor(color))
    painter.setPen(QColor("white"))
    font = painter.font()
    font.setPixelSize(10)
    font.setBold(True)
    painter.setFont(font)
    painter.drawText(band, Qt.AlignmentFlag.AlignCenter, painter.fontMetrics().elidedText(text, Qt.TextElideMode.ElideRight, band.width() - 4))
    painter.end()
    return QIcon(pixmap)
