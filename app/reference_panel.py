"""Reference panel: the chapter's references, and for the current page the patches RAP picked
per query region with their scores; pin or reject a reference or one patch, for this page or
the whole chapter."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QAction, QColor, QIcon, QPainter, QPen, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
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


def marked_icon(pixmap: QPixmap, state: str | None, size: int) -> QIcon:
    """A thumbnail framed green when pinned, crossed red when rejected."""
    canvas = pixmap.scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
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


class ReferencePanel(QWidget):
    """Emits `choice_requested(target, state, whole_chapter)`; state is "pin", "reject" or None."""

    choice_requested = Signal(object, object, bool)
    add_requested = Signal()

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

        self.page_box = QGroupBox("This page: retrieved")
        grid = QGridLayout(self.page_box)
        self.patch_buttons: dict[tuple[str, int], QToolButton] = {}
        for row, region in enumerate(REGIONS):
            grid.addWidget(QLabel(REGION_NAMES[region]), row, 0)
            for rank in range(3):
                button = QToolButton()
                button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextUnderIcon)
                button.setIconSize(QSize(64, 64))
                button.setCheckable(True)
                button.setAutoExclusive(True)
                button.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
                button.customContextMenuRequested.connect(lambda _p, r=region, k=rank: self._patch_menu(r, k))
                grid.addWidget(button, row, rank + 1)
                self.patch_buttons[(region, rank)] = button
        self.scope = QComboBox()
        self.scope.addItems(["this page", "whole chapter"])
        self.extent = QComboBox()
        self.extent.addItems(["this patch", "whole reference"])
        actions = QHBoxLayout()
        for label, state in (("Pin", "pin"), ("Reject", "reject"), ("Clear", None)):
            button = QPushButton(label)
            button.clicked.connect(lambda _c=False, s=state: self._apply_to_selection(s))
            actions.addWidget(button)
        options = QHBoxLayout()
        options.addWidget(self.extent)
        options.addWidget(QLabel("for"))
        options.addWidget(self.scope)
        grid.addLayout(options, len(REGIONS), 0, 1, 4)
        grid.addLayout(actions, len(REGIONS) + 1, 0, 1, 4)

        layout = QVBoxLayout(self)
        layout.addWidget(chapter_box, 1)
        layout.addWidget(self.page_box, 2)
        self._picks: list[list[dict]] = []
        self.clear_page()

    # --- chapter references -------------------------------------------------------------
    def set_references(self, refs: list[str], thumbs: dict[str, QPixmap], states: dict[str, str | None]) -> None:
        self.references.clear()
        for ref in refs:
            item = QListWidgetItem(marked_icon(thumbs.get(ref, QPixmap(72, 72)), states.get(ref), 72), Path(ref.split("!")[-1]).name)
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
    def set_page_picks(self, picks: list[list[dict]], patches: list[list[QPixmap]], page_states: dict) -> None:
        """picks[region][rank] = {"ref", "patch", "score", "pinned"}; patches: their thumbnails."""
        self._picks = picks
        for (region, rank), button in self.patch_buttons.items():
            row = REGIONS.index(region)
            if row < len(picks) and rank < len(picks[row]):
                pick = picks[row][rank]
                state = page_states.get((pick["ref"], pick["patch"])) or ("pin" if pick["pinned"] else None)
                button.setIcon(marked_icon(patches[row][rank], state, 64))
                name = Path(pick["ref"].split("!")[-1]).name
                button.setText(f"{pick['score']:.3f}{' 📌' if pick['pinned'] else ''}")
                button.setToolTip(f"{name} — patch {pick['patch']}\ncosine score {pick['score']:.4f}")
                button.setEnabled(True)
            else:
                button.setIcon(QIcon())
                button.setText("—")
                button.setToolTip("")
                button.setEnabled(False)

    def clear_page(self) -> None:
        self.set_page_picks([], [], {})

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
        pick = self.selected_pick()
        if pick is None:
            return
        target = self._target(pick, self.extent.currentIndex() == 1)
        self.choice_requested.emit(target, state, self.scope.currentIndex() == 1)

    def _patch_menu(self, region: str, rank: int) -> None:
        row = REGIONS.index(region)
        if row >= len(self._picks) or rank >= len(self._picks[row]):
            return
        pick = self._picks[row][rank]
        button = self.patch_buttons[(region, rank)]
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
