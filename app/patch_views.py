"""Patch thumbnails you can judge color on: pin/reject marks, the similarity bar, a size that
follows the dock's width, and a large preview while the pointer rests on one."""

from __future__ import annotations

from PySide6.QtCore import QPoint, QSize, Qt
from PySide6.QtGui import QColor, QGuiApplication, QIcon, QPainter, QPen, QPixmap
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

STATE_COLORS = {"pin": QColor("#2e9e4f"), "reject": QColor("#d0343a")}
SIMILARITY_BAR = 7  # px under a patch thumbnail
MIN_THUMB = 96  # short side: enough to judge a patch's colors
MAX_THUMB = 220
PREVIEW = 320  # long side of the hover preview


def cell_width(room: int, columns: int = 3) -> int:
    """The width of each of `columns` thumbnails sharing `room` px (never under MIN_THUMB)."""
    return max(MIN_THUMB, min(MAX_THUMB, room // columns))


def scaled_to_cell(pixmap: QPixmap, width: int, minimum: int = MIN_THUMB) -> QPixmap:
    """`pixmap` within `width` x 1.5 `width` px (a portrait page's crop fills it), its short
    side never under `minimum`."""
    w, h = max(1, pixmap.width()), max(1, pixmap.height())
    scale = max(min(width / w, 1.5 * width / h), minimum / min(w, h))
    return pixmap.scaled(round(w * scale), round(h * scale), Qt.AspectRatioMode.IgnoreAspectRatio,
                         Qt.TransformationMode.SmoothTransformation)


def marked_icon(pixmap: QPixmap, state: str | None, width: int, similarity: float | None = None,
                minimum: int = MIN_THUMB) -> QIcon:
    """A thumbnail (see `scaled_to_cell`) framed green when pinned, crossed red when rejected;
    with a similarity bar under it when a score is given."""
    canvas = scaled_to_cell(pixmap, width, minimum)
    if similarity is not None:
        canvas = with_similarity_bar(canvas, similarity)
    if state in STATE_COLORS:
        painter = QPainter(canvas)
        pen = QPen(STATE_COLORS[state])
        pen.setWidth(5)
        painter.setPen(pen)
        painter.drawRect(2, 2, canvas.width() - 5, canvas.height() - 5)
        if state == "reject":
            painter.drawLine(0, 0, canvas.width(), canvas.height())
            painter.drawLine(canvas.width(), 0, 0, canvas.height())
        painter.end()
    return QIcon(canvas)


def icon_size(icon: QIcon) -> QSize:
    """The size an icon made by `marked_icon` was drawn at (its only pixmap)."""
    sizes = icon.availableSizes()
    return sizes[0] if sizes else QSize(MIN_THUMB, MIN_THUMB)


def with_similarity_bar(pixmap: QPixmap, similarity: float) -> QPixmap:
    """The thumbnail above a bar filled in proportion to the cosine similarity (0 to 1)."""
    out = QPixmap(pixmap.width(), pixmap.height() + SIMILARITY_BAR + 2)
    out.fill(QColor(0, 0, 0, 0))
    painter = QPainter(out)
    painter.drawPixmap(0, 0, pixmap)
    top = pixmap.height() + 2
    painter.fillRect(0, top, pixmap.width(), SIMILARITY_BAR, QColor("#44464c"))
    filled = round(pixmap.width() * max(0.0, min(1.0, similarity)))
    painter.fillRect(0, top, filled, SIMILARITY_BAR, QColor("#4fb3ff"))
    painter.end()
    return out


class PatchPreview(QWidget):
    """A frameless popup beside the hovered thumbnail: the patch large, its name under it."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent, Qt.WindowType.ToolTip)
        self.setAttribute(Qt.WidgetAttribute.WA_ShowWithoutActivating)
        self.image = QLabel()
        self.caption = QLabel()
        self.caption.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.image)
        layout.addWidget(self.caption)

    def show_beside(self, pixmap: QPixmap, caption: str, anchor: QWidget) -> None:
        """Show `pixmap` (long side PREVIEW px) left of `anchor`, or right of it near the screen's edge."""
        large = pixmap.scaled(PREVIEW, PREVIEW, Qt.AspectRatioMode.KeepAspectRatio,
                              Qt.TransformationMode.SmoothTransformation)
        self.image.setPixmap(large)
        self.caption.setText(caption)
        self.caption.setFixedWidth(large.width())  # wraps under the image: the popup's size is known now
        self.adjustSize()
        top_left = anchor.mapToGlobal(QPoint(0, 0))
        screen = (anchor.screen() or QGuiApplication.primaryScreen()).availableGeometry()
        x = top_left.x() - self.width() - 8
        if x < screen.left():
            x = top_left.x() + anchor.width() + 8
        y = max(screen.top(), min(top_left.y(), screen.bottom() - self.height()))
        self.move(max(screen.left(), min(x, screen.right() - self.width())), y)
        self.show()

    def image_size(self) -> QSize:
        return self.image.pixmap().size()
