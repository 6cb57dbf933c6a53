"""The Consistency dock: Run ▸ Check consistency lists the colored pages whose recurring regions drifted
(ΔE00, most deviant first) with the page's region beside the region it should match, and "Pin and re-run"
pins that region into the page's canvas (undoable) and colors the page again."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QDockWidget,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from engine.rap.curation import RegionPin

from .images import pil_to_pixmap
from .job_model import JobKind
from .region_pins import RegionPinMixin
from .vocabulary import region_name

CROP = 200  # px: the long side of each region shown side by side
IDLE = ("After a run: Run ▸ Check consistency compares the colors of regions that recur across the chapter's "
        "colored pages (the same reference patch retrieved) and lists the pages that drifted most.")
DRIFTED = QColor("#d0343a")


@dataclass
class DriftRow:
    """One checked page, ready for the dock (made on the worker: plain data, no widgets)."""

    page: str
    delta_e: float
    query: str
    compared_page: str
    compared_query: str
    crop: Image.Image | None  # the page's region in its colored file
    compared_crop: Image.Image | None  # the region it should match, in the compared page's colored file
    pin: RegionPin | None  # the compared region as a page-scope pin for `query`, rank 1 (None: file unreadable)


@dataclass
class DriftResult:
    rows: list[DriftRow]
    unchecked: list[tuple[str, str]]  # (page, why)
    threshold: float


def _colored(project, page: str, file: str | None = None):
    """(absolute path, decoded RGB image) of a page's picked result, or of its variation stored in `file`."""
    from engine.io.chapter import ImageSource, load_image

    with project.lock:
        state = project.page(page)
        variation = next((v for v in state.variations if v.file == file), None) if file else state.picked_variation()
    if variation is None:
        raise FileNotFoundError(f"page {page} has no colored result {file or ''}".strip())
    path = project.variation_path(state, variation)  # inside the project folder, or ProjectFileError
    return path, load_image(ImageSource(path, label=variation.file), "RGB").image


def _crop(image: Image.Image, box) -> Image.Image:
    crop = image.crop(tuple(box))
    crop.thumbnail((CROP, CROP))
    return crop


def drift_rows(project) -> DriftResult:
    """The drift check of the project with each page's two regions cut out and the pin that would fix it
    (worker thread). The pin's box is the compared region as fractions of the compared file's size."""
    from engine.core.errors import ColorFlowError
    from engine.evaluation.consistency import check_consistency

    report = check_consistency(project)
    rows = []
    for drift in report.pages:
        crop = compared = pin = None
        try:
            crop = _crop(_colored(project, drift.page)[1], drift.box)
        except (ColorFlowError, OSError):
            pass  # the row still says what drifted, without a picture
        try:
            path, image = _colored(project, drift.compared_page, drift.compared_file)
            compared = _crop(image, drift.compared_box)
            x0, y0, x1, y1 = drift.compared_box
            pin = RegionPin(str(path), (x0 / image.width, y0 / image.height, x1 / image.width, y1 / image.height),
                            drift.query, 1)
        except (ColorFlowError, OSError, ValueError):
            pass
        rows.append(DriftRow(drift.page, drift.delta_e, drift.query, drift.compared_page, drift.compared_query,
                             crop, compared, pin))
    return DriftResult(rows, list(report.unchecked), report.threshold)


class DriftPanel(QWidget):
    """The list (ΔE00 · page · region), the selected page's region beside the one it should match, and
    the buttons. Emits `pin_requested(row)` and `check_requested`; `shown` once a result is listed."""

    pin_requested = Signal(int)
    check_requested = Signal()
    shown = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.status = QLabel(IDLE)
        self.status.setWordWrap(True)
        self.list = QListWidget()
        self.list.currentRowChanged.connect(self._select)
        self.this_crop, self.compared_crop = QLabel(), QLabel()
        self.this_caption, self.compared_caption = QLabel(), QLabel()
        crops = QGridLayout()
        for column, (caption, crop) in enumerate(((self.this_caption, self.this_crop),
                                                  (self.compared_caption, self.compared_crop))):
            caption.setWordWrap(True)
            crop.setFixedSize(CROP, CROP)
            crop.setAlignment(Qt.AlignmentFlag.AlignCenter)
            crop.setStyleSheet("background: #303034;")
            crops.addWidget(caption, 0, column)
            crops.addWidget(crop, 1, column)
        self.pin_button = QPushButton("Pin and re-run")
        self.pin_button.setToolTip("Pin the region on the right into this page's canvas (rank 1 of the drifted "
                                   "region, this page only; Ctrl+Z takes it back) and color the page again")
        self.pin_button.clicked.connect(lambda: self.pin_requested.emit(self.list.currentRow()))
        self.check_button = QPushButton("Check again")
        self.check_button.clicked.connect(self.check_requested)
        buttons = QVBoxLayout()
        buttons.addWidget(self.pin_button)
        buttons.addWidget(self.check_button)
        buttons.addStretch(1)
        body = QHBoxLayout()
        self.list.setMaximumWidth(520)  # a row is short: the room goes to the two regions
        body.addWidget(self.list, 1)
        body.addLayout(crops)
        body.addLayout(buttons)
        body.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.status)
        layout.addLayout(body, 1)
        self.rows: list[DriftRow] = []
        self.set_rows(None)

    def checking(self) -> None:
        self.status.setText("Checking the colored pages…")
        self.check_button.setEnabled(False)

    def show_problem(self, reason: str) -> None:
        self.status.setText(f"The check did not run: {reason}")
        self.check_button.setEnabled(True)

    def set_rows(self, result: DriftResult | None) -> None:
        self.rows = result.rows if result else []
        self.list.clear()
        self.check_button.setEnabled(True)
        for row in self.rows:
            item = QListWidgetItem(f"ΔE00 {row.delta_e:5.1f}  ·  {row.page}  ·  {region_name(row.query)}")
            item.setData(Qt.ItemDataRole.UserRole, row.page)
            if row.delta_e > result.threshold:
                item.setForeground(QBrush(DRIFTED))
                item.setToolTip(f"Above ΔE00 {result.threshold:g}: a colorist sees a different color")
            self.list.addItem(item)
        self.status.setToolTip("")
        self.status.setText(self._summary(result) if result is not None else IDLE)
        if self.rows:
            self.list.setCurrentRow(0)
        else:
            self._select(-1)
        if result is not None:
            self.shown.emit()

    def _summary(self, result: DriftResult) -> str:
        drifted = sum(row.delta_e > result.threshold for row in result.rows)
        text = (f"{len(result.rows)} page(s) compared, {drifted} above ΔE00 {result.threshold:g} (most deviant "
                "first). Select a page, compare its region (left) with the one it should match (right).")
        if not result.rows:
            text = "No recurring regions to compare: color more pages (or accept some with rolling references) first."
        if result.unchecked:
            text += f" Not checked: {len(result.unchecked)} page(s) (hover for why)."
        self.status.setToolTip("\n".join(f"{page}: {why}" for page, why in result.unchecked))
        return text

    def _select(self, index: int) -> None:
        row = self.rows[index] if 0 <= index < len(self.rows) else None
        for label, crop in ((self.this_crop, row and row.crop), (self.compared_crop, row and row.compared_crop)):
            if crop is not None:
                label.setPixmap(pil_to_pixmap(crop))
            else:
                label.clear()
        self.this_caption.setText(f"This page: {row.page}, {region_name(row.query)}" if row else "")
        self.compared_caption.setText(f"Should match: {row.compared_page}, {region_name(row.compared_query)}"
                                      if row else "")
        self.pin_button.setEnabled(row is not None and row.pin is not None)


class DriftMixin(RegionPinMixin):
    """Mixed into MainWindow (main thread only): region pins, and the Consistency dock, made the first time it
    is needed (tabbed with the Queue; a layout the user saved puts it back where it was)."""

    @property
    def drift_panel(self) -> DriftPanel:
        dock = self.findChild(QDockWidget, "Consistency")
        if dock is None:
            panel = DriftPanel()
            panel.check_requested.connect(self.check_consistency)
            panel.pin_requested.connect(self.pin_and_rerun)
            self.document_opened.connect(lambda: panel.set_rows(None))  # another chapter: its own check
            dock = QDockWidget("Consistency", self)
            dock.setObjectName("Consistency")
            dock.setWidget(panel)
            queue = self.findChild(QDockWidget, "Queue")
            if not self.restoreDockWidget(dock):
                self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, dock)
                if queue is not None:
                    self.tabifyDockWidget(queue, dock)
        return dock.widget()

    def check_consistency(self) -> None:
        """Run ▸ Check consistency: the drift check on the worker, listed in the Consistency dock."""
        if self.document is None:
            return
        project = self.document.project
        self.drift_panel.checking()
        dock = self.drift_panel.parentWidget()
        dock.show()
        dock.raise_()
        self._submit(JobKind.CONSISTENCY, lambda emit, cancel: drift_rows(project))

    def _show_drift(self, result: DriftResult) -> None:
        self.drift_panel.set_rows(result)

    def pin_and_rerun(self, index: int) -> None:
        """Pin the compared region into the drifted page's slot (undoable), then color that page again."""
        rows = self.drift_panel.rows
        if self.document is None or not 0 <= index < len(rows) or rows[index].pin is None:
            return
        row = rows[index]
        self.add_region_pin(row.pin, row.page)
        self.colorize_pages([row.page])
