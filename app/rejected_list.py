"""The References panel's Rejected list: what is rejected for this page, its chapter and its series, with
restore (or pin instead) at the scope it was rejected for."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import QListWidgetItem, QMenu

from engine.rap.curation import Target

from .patch_views import MIN_THUMB, marked_icon
from .vocabulary import patch_name

SCOPE_WORDS = {"page": "this page", "chapter": "whole chapter", "series": "whole series"}


class RejectedListMixin:
    """Mixed into ReferencePanel: uses its `rejected` list, `preview`, `patch_buttons`, `levels` and signals."""

    def _set_rejected(self, rejected: list, thumbs: list[QPixmap | None]) -> None:
        self.rejected.clear()
        self._rejected_thumbs = thumbs + [None] * (len(rejected) - len(thumbs))
        for entry, thumb in zip(rejected, self._rejected_thumbs):
            scope = SCOPE_WORDS[entry.scope]
            name = patch_name(entry.ref, entry.patch)
            item = QListWidgetItem(f"{name}  ({scope})")
            if thumb is not None and not thumb.isNull():
                item.setIcon(marked_icon(thumb, "reject", 2 * MIN_THUMB // 3, minimum=0))
            item.setData(Qt.ItemDataRole.UserRole, (entry.ref, entry.patch, entry.scope))
            item.setToolTip(f"{entry.ref}\n{name}, rejected for {scope}: Restore (or double-click) allows it again")
            self.rejected.addItem(item)
            if self._selected is not None and Target(entry.ref, entry.patch).matches(*self._selected) \
                    and self.rejected.currentItem() is None:
                self.rejected.setCurrentItem(item)

    def rejected_menu(self, item: QListWidgetItem) -> QMenu:
        """Restore a rejected patch, or pin it instead, at the scope it was rejected for."""
        ref, patch, _scope = item.data(Qt.ItemDataRole.UserRole)
        name = patch_name(ref, patch)
        menu = QMenu(self)
        menu.addAction(f"Restore {name}", lambda: self.restore(item))
        menu.addAction(f"Pin {name} instead", lambda: self.choose_at_scope(item, "pin"))
        return menu

    def _show_rejected_menu(self, position) -> None:
        item = self.rejected.itemAt(position)
        if item is not None:
            self.rejected.setCurrentItem(item)
            self._select_rejected(item)
            self.rejected_menu(item).exec(self.rejected.viewport().mapToGlobal(position))

    def _preview_rejected(self, item: QListWidgetItem) -> None:
        thumb = self._rejected_thumbs[self.rejected.row(item)]
        if thumb is not None and not thumb.isNull():
            self.preview.show_beside(thumb, item.text(), self.rejected)

    def _select_rejected(self, item: QListWidgetItem) -> None:
        for button in self.patch_buttons.values():
            button.setChecked(False)
        ref, patch, _scope = item.data(Qt.ItemDataRole.UserRole)
        self._selected = (ref, patch or "full")
        self._update_enabled()

    def restore(self, item: QListWidgetItem | None) -> None:
        """Allow a rejected target again, at the scope it was rejected for."""
        if item is None:
            return
        ref, patch, _scope = item.data(Qt.ItemDataRole.UserRole)
        self._selected = (ref, patch or "full")
        self.choose_at_scope(item, None)

    def choose_at_scope(self, item: QListWidgetItem, state: str | None) -> None:
        """Pin, reject or clear a Rejected-list entry's target at the scope it was rejected for (a series
        reject in the series library, undoable like the chapter's)."""
        ref, patch, scope = item.data(Qt.ItemDataRole.UserRole)
        series = self.levels.series_choice if scope == "series" else None
        if series is not None:
            series(Target(ref, patch), state)
        else:
            self.choice_requested.emit(Target(ref, patch), state, scope == "chapter")
