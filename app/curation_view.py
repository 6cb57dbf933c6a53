"""The curation half of the main window: show a page's retrieval (canvas, picks, rejected
patches), pin/reject through the undo stack, and the hover link between patches and tiles."""

from __future__ import annotations

from PySide6.QtCore import QRectF

from engine.core.geometry import QUERY_PATCHES
from engine.rap.curation import Target

from . import jobs
from .document import ChoiceCommand
from .drift_panel import DriftMixin
from .images import pil_to_pixmap
from .vocabulary import patch_name, region_name, scope_name


class CurationMixin(DriftMixin):
    """Mixed into MainWindow (main thread only); uses its document, panels and views. Region pins and
    the drift list's fix are curation too (DriftMixin, with RegionPinMixin)."""

    def _refresh_references(self) -> None:
        self.show_reference_levels()  # the chapter's, the series' and accepted pages, each with its level (app/series_window.py)

    def _show_retrieval(self, view: jobs.RetrievalView) -> None:
        if view.page_index != self.current_page:
            return
        x0, y0, x1, y1 = view.page_box
        self.canvas_view.set_pixmap(pil_to_pixmap(view.canvas), QRectF(x0, y0, x1 - x0, y1 - y0))
        name = self.document.page_names[view.page_index]
        page_choices = self.document.project.curation.pages.get(name)
        states = {}
        if page_choices:
            states = {(t.ref, t.patch): "pin" for t in page_choices.pins} | {(t.ref, t.patch): "reject" for t in page_choices.rejects}
        patches = [[pil_to_pixmap(p) for p in row] for row in view.patch_thumbs]
        rejected_thumbs = [pil_to_pixmap(r.thumb) if r.thumb is not None else None for r in view.rejected]
        self._view = view
        self.reference_panel.set_page_picks(view.picks, patches, states, view.rejected, rejected_thumbs)
        self._mark_region_cells()
        if view.warnings:
            self.statusBar().showMessage("; ".join(view.warnings), 8000)
        self._refresh_page_style()  # auto's suggestion, made with the canvas
        self.retrieval_shown.emit(view.page_index)

    # --- hover: a patch button and its tile in the canvas, both ways ---------------------
    def _on_patch_hovered(self, row: int, rank: int) -> None:
        view = self._view
        if view is None or row < 0 or row >= len(view.tile_boxes) or rank >= len(view.tile_boxes[row]):
            self.canvas_view.set_highlights(None, None)
            return
        self.canvas_view.set_highlights(_rect(view.tile_boxes[row][rank]), _rect(view.query_regions[row]))

    def _on_canvas_hover(self, x: float, y: float) -> None:
        view = self._view
        hit = None
        if view is not None:
            hit = next(((row, rank) for row, tiles in enumerate(view.tile_boxes) for rank, box in enumerate(tiles)
                        if box[0] <= x < box[2] and box[1] <= y < box[3]), None)
        self.reference_panel.highlight_patch(*(hit or (-1, -1)))
        self._on_patch_hovered(*(hit or (-1, -1)))

    # --- pins and rejects (undoable) ----------------------------------------------------
    def request_choice(self, target: Target, state, whole_chapter: bool) -> None:
        """Pin/reject/clear through the undo stack; one that would change nothing is only said."""
        if self.document is None or (not whole_chapter and self.current_page < 0):
            return
        page = None if whole_chapter else self.document.page_names[self.current_page]
        view = self._view if self._view is not None and self._view.page_index == self.current_page else None
        unchanged = unchanged_reason(self.document.project, view.picks if view else [], target, state, page)
        if unchanged:
            self.statusBar().showMessage(unchanged, 8000)
            return
        self.undo_stack.push(ChoiceCommand(self.document, target, state, page, self._choices_changed))

    def _choices_changed(self) -> None:
        self._refresh_references()
        self.request_retrieval()


def unchanged_reason(project, picks: list[list[dict]], target: Target, state, page: str | None) -> str | None:
    """Why setting `state` on `target` for `page` (None: the chapter) would change nothing, or None."""
    what, where = patch_name(target.ref, target.patch), scope_name(page)
    if project.choice(target, page) == state:
        said = {"pin": "already pinned", "reject": "already rejected", None: "neither pinned nor rejected"}[state]
        return f"{what} is {said} for {where}: nothing changed"
    if page is None or state is None:
        return None
    effective = project.choices_for(page)
    if state == "reject" and any(t == target or (target.patch and t.matches(target.ref, target.patch))
                                 for t in effective.rejects):
        return f"{what} is already rejected for {where} (by a wider reject): nothing changed"
    if state == "pin" and target in effective.pins:
        return f"{what} is already pinned for the whole chapter: pinning it for {where} changes nothing"
    row = top_pick_region(picks, target) if state == "pin" else None
    if row is not None:
        return f"{what} is already the top pick of the {region_name(QUERY_PATCHES[row])}: pinning it changes nothing"
    return None


def top_pick_region(picks: list[list[dict]], target: Target) -> int | None:
    """The region where `target` (one patch) is the unpinned top pick and where a pin would put
    it anyway: a pin goes to the region the patch matches best (engine.rap.retrieval), and a
    patch not picked in a region scores no higher there than that region's last pick."""
    if target.patch is None:
        return None
    same = [next((p["score"] for p in row if (p["ref"], p["patch"]) == (target.ref, target.patch)), None)
            for row in picks]
    for row, row_picks in enumerate(picks):
        top = row_picks[0] if row_picks else None
        if top is None or top["pinned"] or (top["ref"], top["patch"]) != (target.ref, target.patch):
            continue
        bounds = [(other, same[other] if same[other] is not None else min(p["score"] for p in picks[other]))
                  for other in range(len(picks)) if other != row and picks[other]]
        if all(bound < top["score"] or (bound == top["score"] and other > row) for other, bound in bounds):
            return row
    return None


def _rect(box) -> QRectF:
    x0, y0, x1, y1 = box
    return QRectF(x0, y0, x1 - x0, y1 - y0)
