"""Pin a region…: draw a rectangle on a reference (or an accepted page) and give it a canvas slot of the
page (query region and rank) for this page or the whole chapter; spin boxes do the same from the keyboard."""

from __future__ import annotations

from PySide6.QtCore import QPoint, QRect, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPen, QPixmap, QRegion
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from engine.core.errors import PageDecodeError
from engine.core.geometry import QUERY_PATCHES
from engine.io.chapter import ImageSource, load_image
from engine.rap.curation import RANKS, RegionPin

from .images import pil_to_pixmap
from .vocabulary import region_name, short_name

DISPLAY = 400  # px: the long side of the reference as the dialog shows it
PIN_COLOR = QColor("#2e9e4f")  # as a pinned patch's frame (patch_views.STATE_COLORS)
Box = tuple[int, int, int, int]


class RectCanvas(QWidget):
    """The reference, its long side DISPLAY px; a drag draws the rectangle. `box` is in the image's
    own pixels (x0, y0, x1, y1), None until one is drawn."""

    box_changed = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setCursor(Qt.CursorShape.CrossCursor)
        self.pixmap = QPixmap()
        self.image_size = (1, 1)
        self.box: Box | None = None
        self._start: tuple[int, int] | None = None

    def set_image(self, pixmap: QPixmap) -> None:
        w, h = max(1, pixmap.width()), max(1, pixmap.height())
        self.image_size, self.box = (w, h), None
        scale = DISPLAY / max(w, h)
        self.pixmap = pixmap.scaled(round(w * scale), round(h * scale), Qt.AspectRatioMode.IgnoreAspectRatio,
                                    Qt.TransformationMode.SmoothTransformation)
        self.setFixedSize(self.pixmap.size())
        self.update()
        self.box_changed.emit()

    def _scale(self) -> tuple[float, float]:
        return self.pixmap.width() / self.image_size[0], self.pixmap.height() / self.image_size[1]

    def to_image(self, point: QPoint) -> tuple[int, int]:
        sx, sy = self._scale()
        return (min(self.image_size[0], max(0, round(point.x() / sx))),
                min(self.image_size[1], max(0, round(point.y() / sy))))

    def set_box(self, box: Box | None) -> None:
        """A rectangle in image pixels (normalised, clipped to the image); an empty one is no rectangle."""
        if box is not None:
            w, h = self.image_size
            x0, x1 = sorted((min(w, max(0, box[0])), min(w, max(0, box[2]))))
            y0, y1 = sorted((min(h, max(0, box[1])), min(h, max(0, box[3]))))
            box = (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None
        if box != self.box:
            self.box = box
            self.update()
            self.box_changed.emit()

    def mousePressEvent(self, event) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self._start = self.to_image(event.position().toPoint())

    def mouseMoveEvent(self, event) -> None:
        if self._start is not None:
            self.set_box((*self._start, *self.to_image(event.position().toPoint())))

    def mouseReleaseEvent(self, event) -> None:
        if self._start is not None and event.button() == Qt.MouseButton.LeftButton:
            self.set_box((*self._start, *self.to_image(event.position().toPoint())))
            self._start = None

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.drawPixmap(0, 0, self.pixmap)
        if self.box is not None:
            sx, sy = self._scale()
            x0, y0, x1, y1 = self.box
            shown = QRect(round(x0 * sx), round(y0 * sy), round((x1 - x0) * sx), round((y1 - y0) * sy))
            outside = QRegion(self.rect()).subtracted(QRegion(shown))  # dimmed: the colors inside stay true
            painter.setClipRegion(outside)
            painter.fillRect(self.rect(), QColor(0, 0, 0, 120))
            painter.setClipping(False)
            pen = QPen(PIN_COLOR)
            pen.setWidth(3)
            painter.setPen(pen)
            painter.drawRect(shown)
        painter.end()


class RegionDiagram(QWidget):
    """A small page with the chosen query region (3/4 of the page's width and height) filled."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setFixedSize(72, 104)
        self.query = QUERY_PATCHES[0]

    def show_query(self, query: str) -> None:
        self.query = query
        self.update()

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        page = self.rect().adjusted(1, 1, -2, -2)
        painter.fillRect(page, QColor("#f4f4f4"))
        w, h = page.width() * 3 // 4, page.height() * 3 // 4
        col, row = QUERY_PATCHES.index(self.query) % 2, QUERY_PATCHES.index(self.query) // 2
        region = QRect(page.left() + col * (page.width() - w), page.top() + row * (page.height() - h), w, h)
        painter.fillRect(region, QColor(46, 158, 79, 110))
        painter.setPen(QPen(QColor("#555"), 1))
        painter.drawRect(page)
        painter.setPen(QPen(PIN_COLOR, 2))
        painter.drawRect(region)
        painter.end()


class RegionPinDialog(QDialog):
    """`sources`: (label, ref) of the references and accepted pages one can cut from; `ref` the one shown
    first; `page` the page shown (None: only the whole chapter can be chosen). `pin()` and `page()` once OK."""

    def __init__(self, sources: list[tuple[str, str]], ref: str, page: str | None, taken=None, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Pin a region")
        self._taken = taken or (lambda query, rank, page: None)  # the pin already in a slot, to say it is replaced
        intro = QLabel("Drag a rectangle over the part of the reference that shows what this page needs (a face, "
                       "a costume). It goes into the chosen canvas cell of the page, ahead of what retrieval picks.")
        intro.setWordWrap(True)
        self.source = QComboBox()
        for label, value in sources:
            self.source.addItem(label, value)
        if self.source.findData(ref) < 0:
            self.source.addItem(short_name(ref), ref)
        self.canvas = RectCanvas()
        self.problem = QLabel()
        self.problem.setWordWrap(True)
        self.box_spins = {key: QSpinBox() for key in ("x", "y", "width", "height")}
        spins = QHBoxLayout()
        for key, spin in self.box_spins.items():
            spin.setAccessibleName(f"rectangle {key} (reference pixels)")
            spins.addWidget(QLabel(key))
            spins.addWidget(spin)
            spin.valueChanged.connect(self._spins_changed)

        self.query_buttons = {q: QRadioButton(region_name(q)) for q in QUERY_PATCHES}
        self._query_group = QButtonGroup(self)
        self.diagram = RegionDiagram()
        regions = QGridLayout()
        for index, (query, button) in enumerate(self.query_buttons.items()):
            self._query_group.addButton(button)
            button.toggled.connect(lambda on, q=query: on and self._query_changed(q))
            regions.addWidget(button, index // 2, index % 2)
        self.query_buttons[QUERY_PATCHES[0]].setChecked(True)
        region_row = QHBoxLayout()
        region_row.addWidget(self.diagram)
        region_row.addLayout(regions, 1)
        self.rank = QSpinBox()
        self.rank.setRange(RANKS[0], RANKS[-1])
        self.rank.setToolTip("Which of the region's 3 canvas cells: 1 is the one retrieval gives its best match")
        self.scope = QComboBox()
        self.scope.addItems([f"this page ({page})" if page else "this page (none shown)", "whole chapter"])
        if page is None:
            self.scope.setCurrentIndex(1)
            self.scope.model().item(0).setEnabled(False)
        self._page = page
        self.replaces = QLabel()
        self.replaces.setWordWrap(True)
        for widget in (self.rank, self.scope):
            (widget.valueChanged if isinstance(widget, QSpinBox) else widget.currentIndexChanged).connect(self._update)

        form = QFormLayout()
        form.addRow("Reference", self.source)
        form.addRow("Rectangle", spins)
        form.addRow("", self.problem)
        form.addRow("Page region", region_row)
        form.addRow("Rank", self.rank)
        form.addRow("Pin for", self.scope)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Pin region")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        controls = QVBoxLayout()  # beside the picture: the dialog fits a laptop screen's height
        controls.addWidget(intro)
        controls.addLayout(form)
        controls.addWidget(self.replaces)
        controls.addStretch(1)
        controls.addWidget(self.buttons)
        layout = QHBoxLayout(self)
        layout.addWidget(self.canvas, 0, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(controls, 1)
        self.source.setCurrentIndex(self.source.findData(ref))
        self.canvas.box_changed.connect(self._box_drawn)
        self.source.currentIndexChanged.connect(self._load)
        self._load()

    # --- the reference and its rectangle --------------------------------------------------
    def ref(self) -> str:
        return self.source.currentData()

    def _load(self) -> None:
        """Decode the chosen reference with the engine's reader (format allowlist, pixel limit)."""
        try:
            image = load_image(ImageSource.parse(self.ref()), "RGB").image
            pixmap, problem = pil_to_pixmap(image), ""
        except PageDecodeError as exc:
            pixmap, problem = QPixmap(DISPLAY, DISPLAY // 2), f"{exc}: choose another reference."
            pixmap.fill(QColor("#44464c"))
        self.problem.setText(problem)
        self.problem.setVisible(bool(problem))
        self._readable = not problem
        self.canvas.set_image(pixmap)
        w, h = self.canvas.image_size
        for key, most in (("x", w - 1), ("y", h - 1), ("width", w), ("height", h)):
            self.box_spins[key].setRange(0, most)
        self._show_in_spins((0, 0, 0, 0))

    def _box_drawn(self) -> None:
        if self.canvas.box is not None:  # an empty rectangle typed half-way keeps the numbers typed so far
            self._show_in_spins(self.canvas.box)
        self._update()

    def _show_in_spins(self, box: Box) -> None:
        values = {"x": box[0], "y": box[1], "width": box[2] - box[0], "height": box[3] - box[1]}
        for key, spin in self.box_spins.items():
            spin.blockSignals(True)
            spin.setValue(values[key])
            spin.blockSignals(False)
        self._update()

    def _spins_changed(self) -> None:
        x, y, w, h = (self.box_spins[k].value() for k in ("x", "y", "width", "height"))
        self.canvas.set_box((x, y, x + w, y + h))

    def _query_changed(self, query: str) -> None:
        self.diagram.show_query(query)
        self._update()

    # --- the answer -----------------------------------------------------------------------
    def query(self) -> str:
        return next(q for q, button in self.query_buttons.items() if button.isChecked())

    def page(self) -> str | None:
        """The page the pin is for; None: the whole chapter."""
        return self._page if self.scope.currentIndex() == 0 else None

    def pin(self) -> RegionPin:
        """The rectangle as fractions of the reference's own width and height."""
        (x0, y0, x1, y1), (w, h) = self.canvas.box, self.canvas.image_size
        return RegionPin(self.ref(), (x0 / w, y0 / h, x1 / w, y1 / h), self.query(), self.rank.value())

    def _update(self) -> None:
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok) if hasattr(self, "buttons") else None
        if ok is None:
            return
        ok.setEnabled(self._readable and self.canvas.box is not None)
        ok.setToolTip("" if ok.isEnabled() else "Drag a rectangle on the reference first")
        taken = self._taken(self.query(), self.rank.value(), self.page())
        where = "this page" if self.page() else "the whole chapter"
        self.replaces.setText(f"Replaces the region from {short_name(taken.ref)} pinned in this cell for {where}."
                              if taken is not None else "")
