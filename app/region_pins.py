"""Region pins in the main window: Pin a region… (References panel, Edit menu), the undoable command that
places or replaces one, and the canvas cells region pins took, outlined and labelled "pinned region"."""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QRectF, Qt

from engine.rap.curation import RegionPin

from .document import ChapterDocument, ValueCommand
from .region_pin_dialog import RegionPinDialog
from .vocabulary import region_name, scope_name, short_name

MARK = "pinned region"


def region_in_slot(project, query: str, rank: int, page: str | None) -> RegionPin | None:
    """The region pin in a slot at exactly this scope (a page, or None: the chapter)."""
    with project.lock:
        scope = project.curation.chapter if page is None else project.curation.pages.get(page)
        return scope.region(query, rank) if scope is not None else None


class RegionPinCommand(ValueCommand):
    """Place a region pin for a page or the chapter; undo puts back what the slot held before."""

    def __init__(self, document: ChapterDocument, pin: RegionPin, page: str | None,
                 on_change: Callable[[], None]) -> None:
        super().__init__(f"pin a region of {short_name(pin.ref)} in the {region_name(pin.query)}, "
                         f"rank {pin.rank}, for {scope_name(page)}", pin,
                         region_in_slot(document.project, pin.query, pin.rank, page), on_change)
        self.document, self.page = document, page

    def _set(self, pin: RegionPin | None) -> None:
        project = self.document.project
        if pin is not None:
            project.set_region_pin(pin, self.page)
        else:
            project.clear_region_pin(self.new.query, self.new.rank, self.page)
        project.save()


class RegionPinMixin:
    """Mixed into MainWindow (main thread only); uses its document, panels, canvas and undo stack."""

    def region_sources(self) -> list[tuple[str, str]]:
        """What a region can be cut from: the references, then this chapter's accepted pages."""
        sources = [(short_name(s.ref), s.ref) for s in self.document.references]
        return sources + [(f"accepted page {name}", str(path)) for name, path in self.document.project.accepted_pages()]

    def pin_region_dialog(self, ref: str | None = None) -> RegionPinDialog | None:
        """Open Pin a region… on `ref` (else the selected patch's or reference's, else the first one)."""
        if self.document is None:
            return None
        sources = self.region_sources()
        ref = ref or self._selected_ref() or (sources[0][1] if sources else None)
        if ref is None:
            self.statusBar().showMessage("A region is drawn on a colored reference: add one first "
                                         "(+ Add references in the References panel)", 8000)
            return None
        page = self.document.page_names[self.current_page] if self.current_page >= 0 else None
        project = self.document.project
        dialog = RegionPinDialog(sources, ref, page, lambda q, r, p: region_in_slot(project, q, r, p), self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self.add_region_pin(dialog.pin(), dialog.page()))
        dialog.open()
        return dialog

    def _selected_ref(self) -> str | None:
        panel = self.reference_panel
        pick = panel.selected_pick()
        item = panel.references.currentItem()
        return pick["ref"] if pick else (item.data(Qt.ItemDataRole.UserRole) if item is not None else None)

    def add_region_pin(self, pin: RegionPin, page: str | None) -> None:
        """Pin through the undo stack (saved, retrieval runs again); one already there is only said."""
        if self.document is None:
            return
        if region_in_slot(self.document.project, pin.query, pin.rank, page) == pin:
            self.statusBar().showMessage(f"That region is already pinned there for {scope_name(page)}: nothing changed",
                                         8000)
            return
        self.undo_stack.push(RegionPinCommand(self.document, pin, page, self._choices_changed))

    # --- the canvas -------------------------------------------------------------------------
    def _mark_region_cells(self) -> None:
        """Outline the canvas cells that region pins took (the picks with patch "region")."""
        view = self._view
        marks = []
        if view is not None:
            for row, picks in enumerate(view.picks):
                for rank, pick in enumerate(picks):
                    if pick["patch"] == "region" and rank < len(view.tile_boxes[row]):
                        x0, y0, x1, y1 = view.tile_boxes[row][rank]
                        marks.append((QRectF(x0, y0, x1 - x0, y1 - y0), MARK))
        self.canvas_view.set_marks(marks)

    def region_marks(self) -> list[tuple[tuple[int, int, int, int], str]]:
        """The marked cells as (x0, y0, x1, y1) in canvas display pixels, with their labels."""
        return [((round(r.left()), round(r.top()), round(r.right()), round(r.bottom())), text)
                for r, text in self.canvas_view.marks()]
