"""Curation's context menus: every pin/reject/clear choice the panel's selectors offer, for
this page, the whole chapter and (a reference of the series library) the whole series."""

from __future__ import annotations

from typing import Callable

from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMenu, QWidget

from engine.rap.curation import Target

from .vocabulary import patch_name

CHOICES = (("Pin", "pin"), ("Reject", "reject"), ("Clear pin or reject of", None))


def choice_menu(parent: QWidget, ref: str, patches: list[str | None], emit: Callable[[Target, str | None, bool], None],
                page_shown: bool = True,
                series_emit: Callable[[Target, str | None], None] | None = None) -> QMenu:
    """One section per scope; in each, every choice for each target (a patch of `ref`, or None:
    all of its patches). `emit(target, state, whole_chapter)` carries the choice out; with
    `series_emit(target, state)` (a reference of the series library) a section for the whole series."""
    menu = QMenu(parent)
    scopes = [(False, "For this page"), (True, "For the whole chapter")] + ([(None, "For the whole series")] if series_emit else [])
    for whole_chapter, title in scopes:
        menu.addSection(title)
        for patch in patches:
            for verb, state in CHOICES:
                action = QAction(f"{verb} {patch_name(ref, patch)}", menu)
                action.setEnabled(whole_chapter is not False or page_shown)
                if whole_chapter is None:
                    action.triggered.connect(lambda _c=False, t=Target(ref, patch), s=state: series_emit(t, s))
                else:
                    action.triggered.connect(lambda _c=False, t=Target(ref, patch), s=state, c=whole_chapter: emit(t, s, c))
                menu.addAction(action)
    return menu
