"""Original vs colored: side by side with synchronised zoom, or one view with a split slider."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QPainter, QPixmap
from PySide6.QtWidgets import QHBoxLayout, QSlider, QStackedWidget, QToolButton, QVBoxLayout, QWidget

from .canvas_view import ZoomView


def split_pixmap(original: QPixmap, colored: QPixmap, fraction: float) -> QPixmap:
    """Original on the left of the split line, colored on the right (same size)."""
    result = QPixmap(colored.size())
    painter = QPainter(result)
    painter.drawPixmap(0, 0, colored)
    split = int(colored.width() * fraction)
    scaled = original.scaled(colored.size(), Qt.AspectRatioMode.IgnoreAspectRatio, Qt.TransformationMode.SmoothTransformation)
    painter.drawPixmap(0, 0, scaled, 0, 0, split, colored.height())
    painter.setPen(Qt.GlobalColor.magenta)
    painter.drawLine(split, 0, split, colored.height())
    painter.end()
    return result


class CompareView(QWidget):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.left = ZoomView("original")
        self.right = ZoomView("not colored yet")
        self.split = ZoomView("not colored yet")
        self.left.view_changed.connect(self.right.follow)
        self.right.view_changed.connect(self.left.follow)
        side = QWidget()
        side_layout = QHBoxLayout(side)
        side_layout.setContentsMargins(0, 0, 0, 0)
        side_layout.addWidget(self.left)
        side_layout.addWidget(self.right)
        self.stack = QStackedWidget()
        self.stack.addWidget(side)
        self.stack.addWidget(self.split)
        self.mode = QToolButton(text="Split view")
        self.mode.setCheckable(True)
        self.mode.setToolTip("One view split by a slider: original on the left, colored on the right")
        self.mode.toggled.connect(self._set_split_mode)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, 1000)
        self.slider.setValue(500)
        self.slider.setToolTip("Where the original ends and the colored page begins")
        self.slider.valueChanged.connect(self._update_split)
        self.slider.hide()  # side by side has no split to move
        bar = QHBoxLayout()
        bar.addWidget(self.mode)
        bar.addWidget(self.slider, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.stack, 1)
        self._original: QPixmap | None = None
        self._colored: QPixmap | None = None

    def _set_split_mode(self, on: bool) -> None:
        self.stack.setCurrentIndex(1 if on else 0)
        self.slider.setVisible(on)

    def shown_views(self) -> list[ZoomView]:
        """The views on screen in the current mode (side by side: both, kept in step)."""
        return [self.split] if self.mode.isChecked() else [self.left, self.right]

    def fit(self) -> None:
        for view in self.shown_views():
            view.fit()

    def zoom_by(self, factor: float) -> None:
        self.shown_views()[0].zoom_by(factor)  # side by side, the other view follows

    def set_images(self, original: QPixmap | None, colored: QPixmap | None) -> None:
        self._original, self._colored = original, colored
        self.left.set_pixmap(original)
        self.right.set_pixmap(colored)
        self._update_split(fit=True)

    def _update_split(self, *_args, fit: bool = False) -> None:
        self.slider.setEnabled(self._original is not None and self._colored is not None)
        if self._original is None or self._colored is None:
            self.split.set_pixmap(None)
            return
        merged = split_pixmap(self._original, self._colored, self.slider.value() / 1000)
        self.split.set_pixmap(merged, fit=fit or not self.split.has_image())
