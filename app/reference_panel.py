"""Reference panel: the chapter's references; for the current page the patches RAP picked per
region of the page (similarity bars, a large preview on hover), pin/reject for this page or the
chapter, and the Rejected list (app/rejected_list.py)."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPushButton,
    QScrollArea,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.rap.curation import Target

from .choice_menus import choice_menu
from .patch_views import MIN_THUMB, PatchPreview, cell_width, icon_size, marked_icon
from .reference_levels import ReferenceLevels, blank
from .rejected_list import RejectedListMixin
from .vocabulary import PATCH_HELP, REGION, patch_name, region_name, short_name

REGIONS = ("TL", "TR", "BL", "BR")
SELECTED_STYLE = (
    "QToolButton { border: 3px solid transparent; border-radius: 4px; padding: 1px; }"
    "QToolButton:checked { border: 3px solid #2f81f7; background: rgba(47, 129, 247, 70); }"
    "QToolButton[hovered=\"true\"] { border: 3px solid #ff40a0; }"
)
PANEL_MARGINS = 130  # px of the panel's width beside 3 thumbnails: frames, spacing, margins, scroll bar
NEED_CHAPTER = "Open a chapter first (File ▸ Open chapter folder… or Open CBZ/ZIP…)"


class ReferencePanel(RejectedListMixin, QWidget):
    """Emits `choice_requested(target, state, whole_chapter)` (state "pin", "reject" or None)
    and `patch_hovered(region, rank)` ((-1, -1) when the pointer leaves)."""

    choice_requested = Signal(object, object, bool)
    add_requested = Signal()
    patch_hovered = Signal(int, int)
    selection_changed = Signal()
    region_pin_requested = Signal(str)  # a reference (or accepted page) to draw a region pin on

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.references = QListWidget()
        self.references.setViewMode(QListView.ViewMode.IconMode)
        self.references.setIconSize(QSize(72, 72))
        self.references.setResizeMode(QListView.ResizeMode.Adjust)
        self.references.setMovement(QListView.Movement.Static)
        self.references.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.references.customContextMenuRequested.connect(self._show_reference_menu)
        self.add_button = QPushButton("+ Add references…")
        self.add_button.clicked.connect(self.add_requested)
        chapter_box = QGroupBox("References (series, chapter, accepted pages)")
        chapter_layout = QVBoxLayout(chapter_box)
        chapter_layout.addWidget(self.references, 1)
        chapter_layout.addWidget(self.add_button)

        self.page_box = QGroupBox("Retrieved for this page (bar = similarity)")
        grid = QGridLayout(self.page_box)
        self.patch_buttons: dict[tuple[str, int], QToolButton] = {}
        self.region_labels: list[QLabel] = []
        for row, region in enumerate(REGIONS):
            label = QLabel(region_name(region))
            label.setToolTip(f"The {region_name(region)} of the page: the 3 reference patches that match it best")
            grid.addWidget(label, 2 * row, 0, 1, 3)
            self.region_labels.append(label)
            for rank in range(3):
                button = QToolButton()
                button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonIconOnly)
                button.setCheckable(True)
                button.setStyleSheet(SELECTED_STYLE)
                button.setProperty("region_rank", (row, rank))
                button.installEventFilter(self)
                button.clicked.connect(lambda _c=False, r=row, k=rank: self._select_patch(r, k))
                button.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
                button.customContextMenuRequested.connect(lambda _p, r=row, k=rank: self._show_patch_menu(r, k))
                grid.addWidget(button, 2 * row + 1, rank, Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignHCenter)
                self.patch_buttons[(region, rank)] = button
        picks_scroll = QScrollArea()  # four rows of large thumbnails: scroll rather than squeeze
        picks_scroll.setWidgetResizable(True)
        picks_scroll.setFrameShape(QFrame.Shape.NoFrame)
        # always there, so that sizing the thumbnails to the width never toggles it
        picks_scroll.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOn)
        picks_scroll.setWidget(self.page_box)
        picks_scroll.viewport().installEventFilter(self)
        self._picks_viewport = picks_scroll.viewport()
        self.scope = QComboBox()
        self.scope.addItems(["this page", "whole chapter"])
        self.extent = QComboBox()
        self.extent.addItems(["this patch", "all patches of its reference"])
        actions = QHBoxLayout()
        self.action_buttons: list[QPushButton] = []
        for label, state in (("Pin", "pin"), ("Reject", "reject"), ("Clear", None)):
            button = QPushButton(label)
            button.clicked.connect(lambda _c=False, s=state: self._apply_to_selection(s))
            actions.addWidget(button)
            self.action_buttons.append(button)
        options = QHBoxLayout()
        options.addWidget(self.extent, 1)
        options.addWidget(QLabel("for"))
        options.addWidget(self.scope)
        picks_box = QWidget()
        picks_layout = QVBoxLayout(picks_box)
        picks_layout.setContentsMargins(0, 0, 0, 0)
        picks_layout.addWidget(picks_scroll, 1)
        picks_layout.addLayout(options)
        picks_layout.addLayout(actions)

        rejected_box = QGroupBox("Rejected (this page, chapter and series)")
        self.rejected = QListWidget()
        self.rejected.setIconSize(QSize(2 * MIN_THUMB // 3, MIN_THUMB))
        self.rejected.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.rejected.setMouseTracking(True)
        self.rejected.itemClicked.connect(self._select_rejected)
        self.rejected.itemDoubleClicked.connect(lambda item: self.restore(item))
        self.rejected.itemEntered.connect(self._preview_rejected)
        self.rejected.viewport().installEventFilter(self)
        self.rejected.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.rejected.customContextMenuRequested.connect(self._show_rejected_menu)
        self.restore_button = QPushButton("Restore")
        self.restore_button.setToolTip("Allow this patch again (undo with Ctrl+Z)")
        self.restore_button.clicked.connect(lambda: self.restore(self.rejected.currentItem()))
        rejected_layout = QVBoxLayout(rejected_box)
        rejected_layout.addWidget(self.rejected, 1)
        rejected_layout.addWidget(self.restore_button)

        splitter = QSplitter(Qt.Orientation.Vertical)  # the colorist decides which part gets the room
        splitter.setChildrenCollapsible(False)
        for widget, stretch in ((chapter_box, 1), (picks_box, 6), (rejected_box, 1)):
            splitter.addWidget(widget)
            splitter.setStretchFactor(splitter.count() - 1, stretch)
        layout = QVBoxLayout(self)
        layout.addWidget(splitter)
        self.preview = PatchPreview(self)
        self.levels = ReferenceLevels()  # each reference's level and the series' choices (app/reference_levels.py)
        self._picks: list[list[dict]] = []
        self._patch_pixmaps: list[list[QPixmap]] = []
        self._page_states: dict = {}
        self._rejected_thumbs: list[QPixmap | None] = []
        self._cell_width = MIN_THUMB
        self._selected: tuple[str, str] | None = None  # (ref, patch) of the patch acted on
        self.clear_page()
        self.set_chapter_open(False)

    def set_chapter_open(self, is_open: bool) -> None:
        """Adding references needs a chapter: without one the button says so instead."""
        self.add_button.setEnabled(is_open)
        self.add_button.setToolTip("Add colored reference pages, archives or folders" if is_open else NEED_CHAPTER)

    def sizeHint(self) -> QSize:  # room for three thumbnails of at least MIN_THUMB px a row
        return super().sizeHint().expandedTo(QSize(3 * MIN_THUMB + PANEL_MARGINS, 0))

    def _fit_thumbnails(self) -> None:
        """Three thumbnails a row, as large as the width of the picks' viewport allows."""
        grid, button = self.page_box.layout(), self.patch_buttons[(REGIONS[0], 0)]
        left, _top, right, _bottom = grid.getContentsMargins()
        frame = self.page_box.width() - self.page_box.contentsRect().width()
        chrome = button.sizeHint().width() - button.iconSize().width()  # selection border, padding
        room = self._picks_viewport.width() - frame - left - right - 2 * grid.horizontalSpacing() - 3 * chrome
        side = cell_width(room)
        if side != self._cell_width:
            self._cell_width = side
            self._paint_patch_icons()

    # --- chapter references -------------------------------------------------------------
    def set_references(self, refs: list[str], thumbs: dict[str, QPixmap], states: dict[str, str | None]) -> None:
        self.references.clear()
        for ref in refs:
            item = QListWidgetItem(marked_icon(thumbs[ref] if ref in thumbs else blank(72), states.get(ref), 72), short_name(ref))
            item.setData(Qt.ItemDataRole.UserRole, ref)
            state = states.get(ref)
            item.setToolTip(ref + (f"\n{state}ned for the chapter" if state else ""))
            self.levels.decorate(item, ref)
            self.references.addItem(item)

    def reference_menu(self, ref: str) -> QMenu:
        """Pin, reject or clear a whole reference, for this page (when one is shown) or the chapter."""
        menu = choice_menu(self, ref, [None], self.choice_requested.emit, bool(self._picks), self.levels.series_emit(ref))
        self.levels.add_moves(menu, ref)
        menu.addSeparator()
        menu.addAction("Pin a region…", lambda: self.region_pin_requested.emit(ref))
        return menu

    def _show_reference_menu(self, position) -> None:
        item = self.references.itemAt(position)
        if item is not None:
            self.reference_menu(item.data(Qt.ItemDataRole.UserRole)).exec(self.references.mapToGlobal(position))

    # --- this page ----------------------------------------------------------------------
    def set_page_picks(self, picks: list[list[dict]], patches: list[list[QPixmap]], page_states: dict,
                       rejected: list | None = None, rejected_thumbs: list[QPixmap | None] | None = None) -> None:
        """picks[region][rank] = {"ref", "patch", "score", "pinned"}; patches: their thumbnails;
        rejected: the RejectedPatch entries that apply to this page. The selection follows
        the patch acted on, wherever it now is (grid or Rejected list)."""
        self._picks, self._patch_pixmaps, self._page_states = picks, patches, page_states
        self.preview.hide()
        selected_button = None
        for (region, rank), button in self.patch_buttons.items():
            row = REGIONS.index(region)
            if row < len(picks) and rank < len(picks[row]):
                pick = picks[row][rank]
                pinned = "\npinned" if pick["pinned"] else ""
                if pick["patch"] == REGION:  # drawn by the user: no retrieval, so no similarity to show
                    button.setToolTip(f"{patch_name(pick['ref'], pick['patch'])}, pinned for the {region_name(region)} "
                                      "(a region pin: placed ahead of retrieval; Edit ▸ Undo removes it)\n"
                                      "right-click: pin or reject its whole reference")
                else:
                    button.setToolTip(f"{patch_name(pick['ref'], pick['patch'])}, picked for the {region_name(region)}\n"
                                      f"similarity {pick['score']:.4f} (cosine){pinned}\n{PATCH_HELP}\nP pin · R reject · right-click for more")
                button.setEnabled(True)
                if (pick["ref"], pick["patch"]) == self._selected and selected_button is None:
                    selected_button = button
            else:
                button.setToolTip("")
                button.setEnabled(False)
            button.setChecked(False)
        self._paint_patch_icons()
        if selected_button is not None:
            selected_button.setChecked(True)
        self._set_rejected(rejected or [], rejected_thumbs or [])
        if selected_button is None and self.rejected.currentItem() is None:
            self._selected = None
        self._update_enabled()

    def _paint_patch_icons(self) -> None:
        """The thumbnails at the size the panel's width allows (pin/reject marks, similarity bar)."""
        for (region, rank), button in self.patch_buttons.items():
            row = REGIONS.index(region)
            if row < len(self._picks) and rank < len(self._picks[row]):
                pick = self._picks[row][rank]
                state = self._page_states.get((pick["ref"], pick["patch"])) or ("pin" if pick["pinned"] else None)
                score = None if pick["patch"] == REGION else pick["score"]  # a region pin has no similarity
                icon = marked_icon(self._patch_pixmaps[row][rank], state, self._cell_width, score)
                button.setIcon(icon)
                button.setIconSize(icon_size(icon))
            else:
                button.setIcon(QIcon())
                button.setIconSize(QSize(self._cell_width, self._cell_width))

    def clear_page(self) -> None:
        self.set_page_picks([], [], {})

    def _select_patch(self, row: int, rank: int) -> None:
        for (region, k), button in self.patch_buttons.items():  # one selection at a time
            button.setChecked(REGIONS.index(region) == row and k == rank)
        self.rejected.clearSelection()
        self.rejected.setCurrentItem(None)
        pick = self._picks[row][rank] if row < len(self._picks) and rank < len(self._picks[row]) else None
        self._selected = (pick["ref"], pick["patch"]) if pick else None
        self._update_enabled()

    def _update_enabled(self) -> None:
        has_pick = self.selected_pick() is not None
        in_rejected = self.rejected.currentItem() is not None
        for button in self.action_buttons:
            button.setEnabled(has_pick or in_rejected)
        self.restore_button.setEnabled(in_rejected)
        self.selection_changed.emit()

    def has_selection(self) -> bool:
        return self.selected_pick() is not None or self.rejected.currentItem() is not None

    def selected_pick(self) -> dict | None:
        for (region, rank), button in self.patch_buttons.items():
            if button.isChecked() and button.isEnabled():
                row = REGIONS.index(region)
                if row < len(self._picks) and rank < len(self._picks[row]):
                    return self._picks[row][rank]
        return None

    def _apply_to_selection(self, state: str | None) -> None:
        item = self.rejected.currentItem()
        if item is not None and self.selected_pick() is None:
            self.choose_at_scope(item, state)  # rejecting it again: the window says so
            return
        pick = self.selected_pick()
        if pick is not None:
            whole = self.extent.currentIndex() == 1 or pick["patch"] == REGION  # a region pin: its reference
            target = Target(pick["ref"], None if whole else pick["patch"])
            self.choice_requested.emit(target, state, self.scope.currentIndex() == 1)

    # --- hover: a patch and its tile in the canvas ---------------------------------------
    def eventFilter(self, watched, event) -> bool:
        if isinstance(watched, QToolButton) and watched.property("region_rank") is not None:
            if event.type() == QEvent.Type.Enter and watched.isEnabled():
                row, rank = watched.property("region_rank")
                self.patch_hovered.emit(row, rank)
                pick = self._picks[row][rank]
                caption = f"{patch_name(pick['ref'], pick['patch'])} · similarity {pick['score']:.2f}"
                self.preview.show_beside(self._patch_pixmaps[row][rank], caption, watched)
            elif event.type() == QEvent.Type.Leave:
                self.patch_hovered.emit(-1, -1)
                self.preview.hide()
        elif watched is self.rejected.viewport() and event.type() == QEvent.Type.Leave:
            self.preview.hide()
        elif watched is self._picks_viewport and event.type() == QEvent.Type.Resize:
            self._fit_thumbnails()
        return super().eventFilter(watched, event)

    def hideEvent(self, event) -> None:
        self.preview.hide()
        super().hideEvent(event)

    def highlight_patch(self, row: int, rank: int) -> None:
        """Outline one patch button (the pointer is over its tile in the canvas); -1 clears."""
        for (region, k), button in self.patch_buttons.items():
            on = REGIONS.index(region) == row and k == rank
            if bool(button.property("hovered")) != on:
                button.setProperty("hovered", on)
                button.style().unpolish(button)
                button.style().polish(button)

    def hovered_patch(self) -> tuple[int, int] | None:
        for (region, rank), button in self.patch_buttons.items():
            if button.property("hovered"):
                return REGIONS.index(region), rank
        return None

    def patch_menu(self, row: int, rank: int) -> QMenu:
        """Every choice the selectors offer for one picked patch: pin, reject or clear the patch
        or all patches of its reference, for this page or the whole chapter."""
        pick = self._picks[row][rank]
        patches = [None] if pick["patch"] == REGION else [pick["patch"], None]  # a region pin: its reference
        return choice_menu(self, pick["ref"], patches, self.choice_requested.emit, True, self.levels.series_emit(pick["ref"]))

    def _show_patch_menu(self, row: int, rank: int) -> None:
        if row >= len(self._picks) or rank >= len(self._picks[row]):
            return
        button = self.patch_buttons[(REGIONS[row], rank)]
        self._select_patch(row, rank)
        self.preview.hide()
        self.patch_menu(row, rank).exec(button.mapToGlobal(button.rect().bottomLeft()))
