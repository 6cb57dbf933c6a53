"""Curation's context menus: every pin/reject/clear choice the panel's selectors offer, for
this page and for the whole chapter."""

from __future__ import annotations

from typing import Callable

from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMenu, QWidget

from engine.rap.curation import Target

from .vocabulary import patch_name

CHOICES = (("Pin", "pin"), ("Reject", "reject"), ("Clear pin or reject of", None))


def choice_menu(parent: QWidget, ref: str, patches: list[str | None], emit: Callable[[Target, str | None, bool], None],
                page_shown: bool = True) -> QMenu:
    """One section per scope; in each, every choice for each target (a patch of `ref`, or None:
    all of its patches). `emit(target, state, whole_chapter)` carries the choice out."""
    menu = QMenu(parent)
    for whole_chapter, title in ((False, "For this page"), (True, "For the whole chapter")):
        menu.addSection(title)
        for patch in patches:
            for verb, state in CHOICES:
                action = QAction(f"{verb} {patch_name(ref, patch)}", menu)
                action.setEnabled(whole_chapter or page_shown)
                action.triggered.connect(lambda _c=False, t=Target(ref, patch), s=state, c=whole_chapter: emit(t, s, c))
                menu.addAction(action)
    return menu
