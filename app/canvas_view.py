"""Zoomable, pannable image view (QGraphicsView) with an optional outline (the mask area), hover
highlights (a reference tile and the page region it was matched to) and labelled marks (region pins)."""

from __future__ import annotations

from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPen, QPixmap, QWheelEvent
from PySide6.QtWidgets import (QGraphicsPixmapItem, QGraphicsRectItem, QGraphicsScene, QGraphicsSimpleTextItem,
                               QGraphicsView, QLabel)


class ZoomView(QGraphicsView):
    """Wheel zooms around the cursor, drag pans; `view_changed` lets views follow each other."""

    view_changed = Signal(float, float, float)  # zoom, horizontal, vertical scroll
    hover_moved = Signal(float, float)  # pointer position in image pixels; (-1, -1) on leave

    def __init__(self, placeholder: str = "", parent=None) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        self.setBackgroundBrush(QColor(48, 48, 52))
        self._pixmap = QGraphicsPixmapItem()
        self.scene().addItem(self._pixmap)
        self._outline = QGraphicsRectItem()
        pen = QPen(QColor(255, 64, 160))
        pen.setWidth(3)
        pen.setCosmetic(True)
        self._outline.setPen(pen)
        self._outline.setVisible(False)
        self.scene().addItem(self._outline)
        self._highlights = []
        for color, style in ((QColor(255, 64, 160), Qt.PenStyle.SolidLine), (QColor(64, 200, 255), Qt.PenStyle.DashLine)):
            item = QGraphicsRectItem()
            pen = QPen(color)
            pen.setWidth(4)
            pen.setCosmetic(True)
            pen.setStyle(style)
            item.setPen(pen)
            item.setVisible(False)
            item.setZValue(2)
            self.scene().addItem(item)
            self._highlights.append(item)
        self._marks: list[tuple[QGraphicsRectItem, QGraphicsSimpleTextItem]] = []
        self.setMouseTracking(True)
        self._placeholder = QLabel(placeholder, self)
        self._placeholder.setStyleSheet("color: #aaa; font-size: 14px;")
        self._placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._zoom = 1.0
        self._syncing = False
        self._fit_pending = False
        self._fitted = False  # fitted and not zoomed since: a resize (a panel shown below) fits again
        self.horizontalScrollBar().valueChanged.connect(self._emit_view)
        self.verticalScrollBar().valueChanged.connect(self._emit_view)

    def resizeEvent(self, event) -> None:  # keep the placeholder centred, a fitted page fitted
        super().resizeEvent(event)
        self._placeholder.setGeometry(self.viewport().geometry())
        if self._fitted:
            self.fit()

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if self._fit_pending:
            self._fit_pending = False
            self.fit()

    def set_pixmap(self, pixmap: QPixmap | None, outline: QRectF | None = None, fit: bool = True) -> None:
        has_image = pixmap is not None and not pixmap.isNull()
        self._pixmap.setPixmap(pixmap if has_image else QPixmap())
        self._placeholder.setVisible(not has_image)
        self._outline.setVisible(outline is not None)
        self.set_highlights(None, None)
        self.set_marks([])  # they belonged to the picture shown before
        if outline is not None:
            self._outline.setRect(outline)
        if has_image:
            self.scene().setSceneRect(QRectF(pixmap.rect()))
            if fit:
                # a hidden view (another tab) has no real size yet: fit when it is shown
                self._fit_pending = not self.isVisible()
                self.fit()

    def set_highlights(self, tile: QRectF | None, region: QRectF | None = None) -> None:
        """Outline a reference tile (solid) and the page region it serves (dashed); None hides."""
        for item, rect in zip(self._highlights, (tile, region)):
            item.setVisible(rect is not None)
            if rect is not None:
                item.setRect(rect)

    def set_marks(self, marks: list[tuple[QRectF, str]], color: QColor = QColor("#2e9e4f")) -> None:
        """Outline each rectangle (image pixels) with its label in a tag at its top-left corner."""
        for frame, _label in self._marks:
            self.scene().removeItem(frame)  # its label and tag with it
        self._marks = []
        for rect, text in marks:
            frame = QGraphicsRectItem(rect)
            pen = QPen(color)
            pen.setWidth(3)
            pen.setCosmetic(True)
            frame.setPen(pen)
            label = QGraphicsSimpleTextItem(text, frame)
            label.setBrush(QColor("white"))
            label.setFlag(QGraphicsSimpleTextItem.GraphicsItemFlag.ItemIgnoresTransformations)  # readable at any zoom
            label.setPos(rect.topLeft())
            tag = QGraphicsRectItem(label.boundingRect().adjusted(-3, -1, 3, 1), label)
            tag.setBrush(color)
            tag.setPen(QPen(Qt.PenStyle.NoPen))
            tag.setFlag(QGraphicsRectItem.GraphicsItemFlag.ItemStacksBehindParent)
            frame.setZValue(1)
            self.scene().addItem(frame)
            self._marks.append((frame, label))

    def marks(self) -> list[tuple[QRectF, str]]:
        return [(frame.rect(), label.text()) for frame, label in self._marks]

    def highlighted(self) -> list[QRectF]:
        return [item.rect() for item in self._highlights if item.isVisible()]

    def mouseMoveEvent(self, event) -> None:
        super().mouseMoveEvent(event)
        if self.has_image():
            point = self.mapToScene(event.position().toPoint())
            self.hover_moved.emit(point.x(), point.y())

    def leaveEvent(self, event) -> None:
        super().leaveEvent(event)
        self.hover_moved.emit(-1.0, -1.0)

    def has_image(self) -> bool:
        return not self._pixmap.pixmap().isNull()

    def fit(self) -> None:
        if self.has_image():
            # measured without the zoomed view's scroll bars (the fitted image needs none), else
            # a small view keeps them and the image overflows the narrower viewport
            self._set_scroll_bars(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
            self.fitInView(self._pixmap, Qt.AspectRatioMode.KeepAspectRatio)
            self._set_scroll_bars(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
            self._zoom = self.transform().m11()
            self._fitted = True
            self._emit_view()

    def _set_scroll_bars(self, policy: Qt.ScrollBarPolicy) -> None:
        self.setHorizontalScrollBarPolicy(policy)
        self.setVerticalScrollBarPolicy(policy)

    def zoom_by(self, factor: float) -> None:
        self._fitted = False
        self._zoom = max(0.05, min(32.0, self._zoom * factor))
        self.setTransform(self.transform().fromScale(self._zoom, self._zoom))
        self._emit_view()

    def wheelEvent(self, event: QWheelEvent) -> None:
        self.zoom_by(1.25 if event.angleDelta().y() > 0 else 0.8)

    def follow(self, zoom: float, horizontal: float, vertical: float) -> None:
        """Take another view's zoom and scroll position (synchronised compare)."""
        if self._syncing:
            return
        self._syncing = True
        self._fitted = False
        self._zoom = zoom
        self.setTransform(self.transform().fromScale(zoom, zoom))
        self.horizontalScrollBar().setValue(int(horizontal))
        self.verticalScrollBar().setValue(int(vertical))
        self._syncing = False

    def _emit_view(self, *_args) -> None:
        if not self._syncing:
            self.view_changed.emit(self._zoom, self.horizontalScrollBar().value(), self.verticalScrollBar().value())
