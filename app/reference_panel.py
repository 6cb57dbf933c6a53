"""Reference panel: the chapter's references; for the current page the patches RAP picked per
query region (similarity bars), pin/reject for this page or the chapter, and the Rejected list
with restore."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QEvent, QSize, Qt, Signal
from PySide6.QtGui import QAction, QColor, QIcon, QPainter, QPen, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QAbstractItemView,
    QListView,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.rap.curation import Target

REGIONS = ("TL", "TR", "BL", "BR")
REGION_NAMES = {"TL": "top left", "TR": "top right", "BL": "bottom left", "BR": "bottom right"}
STATE_COLORS = {"pin": QColor("#2e9e4f"), "reject": QColor("#d0343a")}


SIMILARITY_BAR = 7  # px under a patch thumbnail
SELECTED_STYLE = (
    "QToolButton { border: 3px solid transparent; border-radius: 4px; padding: 1px; }"
    "QToolButton:checked { border: 3px solid #2f81f7; background: rgba(47, 129, 247, 70); }"
    "QToolButton[hovered=\"true\"] { border: 3px solid #ff40a0; }"
)


def marked_icon(pixmap: QPixmap, state: str | None, size: int, similarity: float | None = None) -> QIcon:
    """A thumbnail framed green when pinned, crossed red when rejected; with a similarity
    bar under it when a score is given."""
    canvas = pixmap.scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
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


def short_name(ref: str) -> str:
    return Path(ref.split("!")[-1]).name


def target_label(ref: str, patch: str | None) -> str:
    return f"{short_name(ref)} · {REGION_NAMES.get(patch, patch) if patch else 'whole reference'}"


class ReferencePanel(QWidget):
    """Emits `choice_requested(target, state, whole_chapter)` (state "pin", "reject" or None)
    and `patch_hovered(region, rank)` ((-1, -1) when the pointer leaves)."""

    choice_requested = Signal(object, object, bool)
    add_requested = Signal()
    patch_hovered = Signal(int, int)
    selection_changed = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.references = QListWidget()
        self.references.setViewMode(QListView.ViewMode.IconMode)
        self.references.setIconSize(QSize(72, 72))
        self.references.setResizeMode(QListView.ResizeMode.Adjust)
        self.references.setMovement(QListView.Movement.Static)
        self.references.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.references.customContextMenuRequested.connect(self._reference_menu)
        add = QPushButton("+ Add references…")
        add.clicked.connect(self.add_requested)
        chapter_box = QGroupBox("References (chapter)")
        chapter_layout = QVBoxLayout(chapter_box)
        chapter_layout.addWidget(self.references, 1)
        chapter_layout.addWidget(add)

        self.page_box = QGroupBox("This page: retrieved (bar = similarity)")
        grid = QGridLayout(self.page_box)
        self.patch_buttons: dict[tuple[str, int], QToolButton] = {}
        for row, region in enumerate(REGIONS):
            grid.addWidget(QLabel(REGION_NAMES[region]), row, 0)
            for rank in range(3):
                button = QToolButton()
                button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonIconOnly)
                button.setIconSize(QSize(64, 64 + SIMILARITY_BAR + 2))
                button.setCheckable(True)
                button.setStyleSheet(SELECTED_STYLE)
                button.setProperty("region_rank", (row, rank))
                button.installEventFilter(self)
                button.clicked.connect(lambda _c=False, r=row, k=rank: self._select_patch(r, k))
                button.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
                button.customContextMenuRequested.connect(lambda _p, r=region, k=rank: self._patch_menu(r, k))
                grid.addWidget(button, row, rank + 1)
                self.patch_buttons[(region, rank)] = button
        self.scope = QComboBox()
        self.scope.addItems(["this page", "whole chapter"])
        self.extent = QComboBox()
        self.extent.addItems(["this patch", "whole reference"])
        actions = QHBoxLayout()
        self.action_buttons: list[QPushButton] = []
        for label, state in (("Pin", "pin"), ("Reject", "reject"), ("Clear", None)):
            button = QPushButton(label)
            button.clicked.connect(lambda _c=False, s=state: self._apply_to_selection(s))
            actions.addWidget(button)
            self.action_buttons.append(button)
        options = QHBoxLayout()
        options.addWidget(self.extent)
        options.addWidget(QLabel("for"))
        options.addWidget(self.scope)
        grid.addLayout(options, len(REGIONS), 0, 1, 4)
        grid.addLayout(actions, len(REGIONS) + 1, 0, 1, 4)

        rejected_box = QGroupBox("Rejected (this page and whole chapter)")
        self.rejected = QListWidget()
        self.rejected.setIconSize(QSize(40, 40))
        self.rejected.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.rejected.itemClicked.connect(self._select_rejected)
        self.rejected.itemDoubleClicked.connect(lambda item: self.restore(item))
        self.restore_button = QPushButton("Restore")
        self.restore_button.setToolTip("Allow this patch again (undo with Ctrl+Z)")
        self.restore_button.clicked.connect(lambda: self.restore(self.rejected.currentItem()))
        rejected_layout = QVBoxLayout(rejected_box)
        rejected_layout.addWidget(self.rejected, 1)
        rejected_layout.addWidget(self.restore_button)

        layout = QVBoxLayout(self)
        layout.addWidget(chapter_box, 2)
        layout.addWidget(self.page_box, 3)
        layout.addWidget(rejected_box, 1)
        self._picks: list[list[dict]] = []
        self._selected: tuple[str, str] | None = None  # (ref, patch) of the patch acted on
        self.clear_page()

    # --- chapter references -------------------------------------------------------------
    def set_references(self, refs: list[str], thumbs: dict[str, QPixmap], states: dict[str, str | None]) -> None:
        self.references.clear()
        for ref in refs:
            item = QListWidgetItem(marked_icon(thumbs.get(ref, QPixmap(72, 72)), states.get(ref), 72), short_name(ref))
            item.setData(Qt.ItemDataRole.UserRole, ref)
            state = states.get(ref)
            item.setToolTip(ref + (f"\n{state}ned for the chapter" if state else ""))
            self.references.addItem(item)

    def _reference_menu(self, position) -> None:
        item = self.references.itemAt(position)
        if item is None:
            return
        ref = item.data(Qt.ItemDataRole.UserRole)
        menu = QMenu(self)
        for label, state in (("Pin for the chapter", "pin"), ("Reject for the chapter", "reject"), ("Clear", None)):
            action = QAction(label, menu)
            action.triggered.connect(lambda _c=False, s=state: self.choice_requested.emit(Target(ref), s, True))
            menu.addAction(action)
        menu.exec(self.references.mapToGlobal(position))

    # --- this page ----------------------------------------------------------------------
    def set_page_picks(self, picks: list[list[dict]], patches: list[list[QPixmap]], page_states: dict,
                       rejected: list | None = None, rejected_thumbs: list[QPixmap | None] | None = None) -> None:
        """picks[region][rank] = {"ref", "patch", "score", "pinned"}; patches: their thumbnails;
        rejected: the RejectedPatch entries that apply to this page. The selection follows
        the patch acted on, wherever it now is (grid or Rejected list)."""
        self._picks = picks
        selected_button = None
        for (region, rank), button in self.patch_buttons.items():
            row = REGIONS.index(region)
            if row < len(picks) and rank < len(picks[row]):
                pick = picks[row][rank]
                state = page_states.get((pick["ref"], pick["patch"])) or ("pin" if pick["pinned"] else None)
                button.setIcon(marked_icon(patches[row][rank], state, 64, pick["score"]))
                pinned = "\npinned" if pick["pinned"] else ""
                button.setToolTip(
                    f"{short_name(pick['ref'])} — patch {pick['patch']}\n"
                    f"similarity {pick['score']:.4f} (cosine){pinned}\nP pin · R reject · right-click for more"
                )
                button.setEnabled(True)
                if (pick["ref"], pick["patch"]) == self._selected and selected_button is None:
                    selected_button = button
            else:
                button.setIcon(QIcon())
                button.setToolTip("")
                button.setEnabled(False)
            button.setChecked(False)
        if selected_button is not None:
            selected_button.setChecked(True)
        self._set_rejected(rejected or [], rejected_thumbs or [])
        if selected_button is None and self.rejected.currentItem() is None:
            self._selected = None
        self._update_enabled()

    def _set_rejected(self, rejected: list, thumbs: list[QPixmap | None]) -> None:
        self.rejected.clear()
        for entry, thumb in zip(rejected, thumbs + [None] * (len(rejected) - len(thumbs))):
            scope = "this page" if entry.scope == "page" else "whole chapter"
            item = QListWidgetItem(f"{target_label(entry.ref, entry.patch)}  ({scope})")
            if thumb is not None and not thumb.isNull():
                item.setIcon(marked_icon(thumb, "reject", 40))
            item.setData(Qt.ItemDataRole.UserRole, (entry.ref, entry.patch, entry.scope))
            item.setToolTip(f"{entry.ref}\nrejected for {scope}; Restore (or double-click) allows it again")
            self.rejected.addItem(item)
            if self._selected is not None and Target(entry.ref, entry.patch).matches(*self._selected) \
                    and self.rejected.currentItem() is None:
                self.rejected.setCurrentItem(item)

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

    def _select_rejected(self, item: QListWidgetItem) -> None:
        for button in self.patch_buttons.values():
            button.setChecked(False)
        ref, patch, _scope = item.data(Qt.ItemDataRole.UserRole)
        self._selected = (ref, patch or "full")
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

    def _target(self, pick: dict, whole_reference: bool) -> Target:
        return Target(pick["ref"], None if whole_reference else pick["patch"])

    def _apply_to_selection(self, state: str | None) -> None:
        item = self.rejected.currentItem()
        if item is not None and self.selected_pick() is None:
            ref, patch, scope = item.data(Qt.ItemDataRole.UserRole)
            if state != "reject":  # rejecting it again would change nothing
                self.choice_requested.emit(Target(ref, patch), state, scope == "chapter")
            return
        pick = self.selected_pick()
        if pick is None:
            return
        target = self._target(pick, self.extent.currentIndex() == 1)
        self.choice_requested.emit(target, state, self.scope.currentIndex() == 1)

    def restore(self, item: QListWidgetItem | None) -> None:
        """Allow a rejected target again, at the scope it was rejected for."""
        if item is None:
            return
        ref, patch, scope = item.data(Qt.ItemDataRole.UserRole)
        self._selected = (ref, patch or "full")
        self.choice_requested.emit(Target(ref, patch), None, scope == "chapter")

    # --- hover: a patch and its tile in the canvas ---------------------------------------
    def eventFilter(self, watched, event) -> bool:
        if isinstance(watched, QToolButton) and watched.property("region_rank") is not None:
            if event.type() == QEvent.Type.Enter and watched.isEnabled():
                self.patch_hovered.emit(*watched.property("region_rank"))
            elif event.type() == QEvent.Type.Leave:
                self.patch_hovered.emit(-1, -1)
        return super().eventFilter(watched, event)

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

    def _patch_menu(self, region: str, rank: int) -> None:
        row = REGIONS.index(region)
        if row >= len(self._picks) or rank >= len(self._picks[row]):
            return
        pick = self._picks[row][rank]
        button = self.patch_buttons[(region, rank)]
        button.setChecked(True)
        self._select_patch(row, rank)
        menu = QMenu(self)
        entries = [
            ("Pin this patch for this page", "pin", False, False),
            ("Reject this patch for this page", "reject", False, False),
            ("Reject this reference for this page", "reject", True, False),
            ("Pin this reference for the chapter", "pin", True, True),
            ("Reject this reference for the chapter", "reject", True, True),
        ]
        for label, state, whole, chapter in entries:
            action = QAction(label, menu)
            action.triggered.connect(
                lambda _c=False, s=state, w=whole, c=chapter: self.choice_requested.emit(self._target(pick, w), s, c)
            )
            menu.addAction(action)
        menu.exec(button.mapToGlobal(button.rect().bottomLeft()))
