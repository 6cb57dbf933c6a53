"""The Variations panel below the Result and Compare tabs: each colored result of the page (thumbnail,
seed, guidance, steps), the picked one marked; a click picks one (the Result tab and every export
show it); Colorize again with a new seed or the page's own, and the page's guidance."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from engine.core.errors import printable
from engine.core.options import OPTIONS
from engine.pipelines.variations import VariationRequest
from engine.project.format import MAX_VARIATIONS
from engine.project.variations import Variation

from .images import pil_to_pixmap
from .settings import _option_value, _option_widget

THUMB = QSize(52, 72)
AGAIN_SHORTCUT = "Ctrl+Shift+R"


def describe(variation: Variation) -> tuple[str, str]:
    """A variation's caption under its thumbnail and its tooltip."""
    seed = "seed ?" if variation.seed is None else f"seed {variation.seed}"
    guidance = "" if variation.guidance is None else f" · cfg {variation.guidance:g}"
    made = ("made by Colorize again: while picked, the page keeps this seed and guidance" if variation.override
            else "made by a plain run: follows the seed and guidance of Settings")
    if variation.seed is None:
        made = "colored before variations were recorded: its seed and guidance are not known"
    steps = "" if variation.steps is None else f", {variation.steps} steps"
    tooltip = (f"Variation {variation.id}: {seed}{guidance.replace(' · cfg', ', guidance')}{steps}; {made}. "
               "Click to pick it: the Result tab and every export use the picked variation.")
    return f"{variation.id}\n{seed}{guidance}", tooltip


class VariationsPanel(QWidget):
    """The page's variations as thumbnails, and Colorize again's choices for this page."""

    pick_requested = Signal(int)  # a variation id

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.list = QListWidget()
        self.list.setViewMode(QListView.ViewMode.IconMode)
        self.list.setFlow(QListView.Flow.LeftToRight)
        self.list.setWrapping(False)
        self.list.setMovement(QListView.Movement.Static)
        self.list.setIconSize(THUMB)
        self.list.setGridSize(QSize(THUMB.width() + 72, THUMB.height() + 38))  # a bold caption fits
        self.list.setFixedHeight(THUMB.height() + 58)  # the grid, and a scroll bar once they overflow
        self.list.setToolTip(f"Variations of this page, the last {MAX_VARIATIONS} kept. Click one to pick it: "
                             "the picked one (✓) is what the Result tab shows and every export uses")
        self.list.itemClicked.connect(self._clicked)
        self.list.itemActivated.connect(self._clicked)
        self.guidance = _option_widget(OPTIONS["guidance"], OPTIONS["guidance"].default)  # as in Settings
        self.guidance.setToolTip("Guidance (classifier-free guidance scale) for this page's next Colorize again; "
                                 "Edit ▸ Settings keeps the one of the other pages")
        self.new_seed = QCheckBox("New seed")
        self.new_seed.setChecked(True)
        self.new_seed.setToolTip("On: the next seed no variation of this page has used. "
                                 "Off: the page's own seed (to see another guidance, or changed pins)")
        self.again = QPushButton("Colorize again")
        self.again.setToolTip(f"A new variation of this page, kept beside the others ({AGAIN_SHORTCUT}); "
                              "Settings are not changed")
        self.hint = QLabel()
        self.hint.setWordWrap(True)
        self.hint.setStyleSheet("color: #888;")
        choices = QFormLayout()
        choices.addRow("Guidance", self.guidance)
        choices.addRow(self.new_seed)
        choices.addRow(self.again)
        side = QVBoxLayout()
        side.addLayout(choices)
        side.addStretch(1)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(6, 2, 6, 2)
        left = QVBoxLayout()
        left.addWidget(self.hint)
        left.addWidget(self.list)
        layout.addLayout(left, 1)
        layout.addLayout(side)
        self._can_pick = True

    def show_variations(self, entries: list[tuple[Variation, QPixmap | None]], picked: int | None, *,
                        colored: bool, busy: bool) -> None:
        """Fill the strip: `colored` (the page has a result) enables Colorize again, `busy` (the
        page is queued or running) holds picks until its run ends."""
        self.list.clear()
        for variation, thumb in entries:
            caption, tooltip = describe(variation)
            item = QListWidgetItem(QIcon(thumb) if thumb is not None else QIcon(), caption)
            item.setData(Qt.ItemDataRole.UserRole, variation.id)
            item.setToolTip(tooltip)
            item.setTextAlignment(Qt.AlignmentFlag.AlignHCenter)
            self.list.addItem(item)
            if variation.id == picked:
                item.setText(f"✓ {caption}")
                font = item.font()
                font.setBold(True)
                item.setFont(font)
                self.list.setCurrentItem(item)
        self._can_pick = not busy
        self.again.setEnabled(colored and not busy)
        if busy:
            self.hint.setText("This page is queued or running: its variations can be picked when it ends.")
        elif not colored and entries:  # colored once, then a run failed or the page changed
            self.hint.setText("Its last run did not finish; the variations made before are kept here. "
                              "Run ▸ Colorize page (Ctrl+Enter) colors it again.")
        elif not colored:
            self.hint.setText("Not colored yet: Run ▸ Colorize page (Ctrl+Enter), then Colorize again "
                              "makes variations to compare and pick from.")
        self.hint.setVisible(busy or not colored)  # otherwise the list's tooltip says how it works
        self.list.setVisible(bool(entries))

    def _clicked(self, item: QListWidgetItem) -> None:
        if self._can_pick:
            self.pick_requested.emit(item.data(Qt.ItemDataRole.UserRole))


class VariationsMixin:
    """Mixed into MainWindow (main thread only): the Variations panel, picking and Colorize again."""

    def _build_variations(self) -> VariationsPanel:
        self.variations_panel = panel = VariationsPanel()
        panel.pick_requested.connect(self.pick_variation)
        panel.again.clicked.connect(self.colorize_again)
        self.tabs.currentChanged.connect(lambda _index: self._refresh_variations())
        self._variation_thumbs: dict[str, tuple[tuple, QPixmap | None]] = {}
        self._guidance_for: tuple | None = None  # the page and result the guidance box was set for
        self._variations_shown: tuple = (None, [])  # the page and variation ids the panel shows
        panel.hide()
        return panel

    def _refresh_variations(self) -> None:
        """Show the current page's variations while the Result or Compare tab is shown."""
        panel = self.variations_panel
        shown = (self.document is not None and self.current_page >= 0
                 and self.tabs.currentWidget() in (self.result_view, self.compare_view))
        panel.setVisible(shown)
        if not shown:
            return
        project = self.document.project
        name = self.document.page_names[self.current_page]
        with project.lock:  # copies: the worker may record a variation meanwhile
            state = project.page(name)
            variations = [replace(v) for v in state.variations]
            picked = replace(state.picked_variation()) if state.picked_variation() is not None else None
            colored = state.status == "done" and picked is not None
        entries = [(v, self._variation_thumb(project, state, v)) for v in variations]
        # The box starts at the guidance of the page's result; an edit stays until another is picked.
        guidance = picked.guidance if picked is not None and picked.guidance is not None else self.settings.run.guidance
        if self._guidance_for != (name, picked and picked.id, guidance):
            self._guidance_for = (name, picked and picked.id, guidance)
            panel.guidance.setValue(panel.guidance.minimum() if guidance is None else guidance)  # None: "auto"
        panel.show_variations(entries, picked and picked.id, colored=colored,
                              busy=self.jobs.page_job(name) is not None)
        ids = [v.id for v in variations]
        new = [i for i in ids if self._variations_shown[0] == name and i not in self._variations_shown[1]]
        self._variations_shown = (name, ids)
        if new and new[-1] != (picked and picked.id):
            self.statusBar().showMessage(f"variation {new[-1]} of {printable(name)} is ready below the Result: "
                                         "click it to pick it", 10000)

    def _variation_thumb(self, project, state, variation: Variation) -> QPixmap | None:
        """A variation's thumbnail, decoded once per file version (the engine decodes it)."""
        from engine.core.errors import PageDecodeError, ProjectFileError
        from engine.io.chapter import ImageSource, load_image

        try:
            path = project.variation_path(state, variation)
            info = os.stat(path)
        except (OSError, ProjectFileError):
            return None
        stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        cached = self._variation_thumbs.get(str(path))
        if cached is None or cached[0] != stamp:
            try:
                image = load_image(ImageSource(Path(path)), "RGB").image
                image.thumbnail((THUMB.width(), THUMB.height()))
                cached = (stamp, pil_to_pixmap(image))
            except PageDecodeError:
                cached = (stamp, None)
            self._variation_thumbs[str(path)] = cached
        return cached[1]

    def pick_variation(self, variation_id: int) -> None:
        """The picked variation becomes the page's result: Result, Compare and every export show it."""
        if self.document is None or self.current_page < 0:
            return
        name = self.document.page_names[self.current_page]
        if self.jobs.page_job(name) is not None:
            self.statusBar().showMessage(f"{printable(name)} is queued or running: pick when it ends, "
                                         "or cancel it in the Queue", 8000)
            return
        project = self.document.project
        project.pick_variation(name, variation_id)
        project.save()
        self.page_strip.set_status(self.current_page, "done")
        self._show_result(self.current_page)
        self._update_caption()
        self._update_actions()
        self.statusBar().showMessage(f"variation {variation_id} of {printable(name)} picked: "
                                     "the Result tab and exports show it", 5000)

    def colorize_again(self) -> None:
        """Run ▸ Colorize again: a new variation of the page with the panel's seed choice and guidance."""
        if self.document is None or self.current_page < 0:
            return
        name = self.document.page_names[self.current_page]
        state = self.document.project.page(name)
        if state.status != "done" or state.picked is None:
            self.statusBar().showMessage(f"{printable(name)} is not colored yet: Run ▸ Colorize page "
                                         "(Ctrl+Enter) first", 8000)
            return
        if self.jobs.page_job(name) is not None:
            self.statusBar().showMessage(f"{printable(name)} is already queued: wait for it, or cancel it "
                                         "in the Queue", 8000)
            return
        panel = self.variations_panel
        guidance = _option_value(OPTIONS["guidance"], panel.guidance, None)  # "auto": the page's own
        self.colorize_pages([name], again=VariationRequest(new_seed=panel.new_seed.isChecked(), guidance=guidance))
        if self.tabs.currentWidget() not in (self.result_view, self.compare_view):
            self.tabs.setCurrentWidget(self.result_view)  # its live preview, then the strip
        self._refresh_variations()
