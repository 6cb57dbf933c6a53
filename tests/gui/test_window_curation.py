"""Curation in the main window: pin, reject, restore, hover and the similarity bars."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")

from engine.rap.curation import Target  # noqa: E402
from window_helpers import WAIT_MS, canvas_image, close, make_window, open_with_refs, picked_refs  # noqa: E402


def test_pin_and_reject_change_canvas_and_undo_restores(qtbot, settings, chapter):
    window = make_window(qtbot, settings)
    open_with_refs(qtbot, window, *chapter)
    original = canvas_image(window)
    top = window.reference_panel._picks[0][0]["ref"]
    with qtbot.waitSignal(window.retrieval_shown, timeout=WAIT_MS):
        window.request_choice(Target(top), "reject", False)
    assert top not in picked_refs(window)
    assert canvas_image(window) != original
    with qtbot.waitSignal(window.retrieval_shown, timeout=WAIT_MS):
        window.undo_stack.undo()
    assert top in picked_refs(window)
    assert canvas_image(window) == original

    unused = [r.ref for r in window.document.references if r.ref not in picked_refs(window)]
    if unused:  # pin a reference that was not picked: it appears, pinned
        with qtbot.waitSignal(window.retrieval_shown, timeout=WAIT_MS):
            window.request_choice(Target(unused[0]), "pin", False)
        assert any(p["ref"] == unused[0] and p["pinned"] for row in window.reference_panel._picks for p in row)
        with qtbot.waitSignal(window.retrieval_shown, timeout=WAIT_MS):
            window.undo_stack.undo()
        assert canvas_image(window) == original
    close(qtbot, window)


def test_no_references_yet_is_a_hint_not_an_error(qtbot, settings, chapter):
    window = make_window(qtbot, settings)
    with qtbot.waitSignal(window.document_opened, timeout=WAIT_MS):
        window.open_path(str(chapter[0]))
    qtbot.wait(200)
    text = window.canvas_view._placeholder.text()
    assert "Add references" in text or "+ Add references" in text
    assert "Error" not in text and "ValueError" not in text and "failed" not in text
    close(qtbot, window)


def test_reject_keeps_the_selection_lists_it_and_restore_brings_it_back(qtbot, settings, chapter):
    from PySide6.QtGui import QAction

    window = make_window(qtbot, settings)
    open_with_refs(qtbot, window, *chapter)
    panel = window.reference_panel
    original = canvas_image(window)
    reject = next(a for a in window.findChildren(QAction) if a.text() == "Reject selected patch")
    assert not reject.isEnabled()  # nothing selected yet
    button = panel.patch_buttons[("TL", 0)]
    button.click()
    acted = (panel._picks[0][0]["ref"], panel._picks[0][0]["patch"])
    assert button.isChecked() and reject.isEnabled()
    with qtbot.waitSignal(window.retrieval_shown, timeout=WAIT_MS):
        reject.trigger()  # R
    assert acted not in {(p["ref"], p["patch"]) for row in panel._picks for p in row}
    assert panel.rejected.count() == 1
    item = panel.rejected.currentItem()
    assert item is not None and item.data(0x0100) == (acted[0], acted[1], "page")  # Qt.UserRole
    assert not any(b.isChecked() for b in panel.patch_buttons.values())  # no unseen patch selected
    commands = window.undo_stack.count()
    reject.trigger()  # R again: the selection is the rejected patch, so nothing else is rejected
    qtbot.wait(100)
    assert window.undo_stack.count() == commands
    with qtbot.waitSignal(window.retrieval_shown, timeout=WAIT_MS):
        panel.restore_button.click()
    assert panel.rejected.count() == 0
    assert canvas_image(window) == original
    assert (panel._picks[0][0]["ref"], panel._picks[0][0]["patch"]) == acted
    assert panel.patch_buttons[("TL", 0)].isChecked()  # the selection followed the patch back
    close(qtbot, window)


def test_hovering_a_patch_outlines_its_tile_and_query_region_and_back(qtbot, settings, chapter):
    from PySide6.QtCore import QEvent, QRectF
    from PySide6.QtWidgets import QApplication

    window = make_window(qtbot, settings)  # 256x384 working size: canvas 512x768, shown 1:1
    open_with_refs(qtbot, window, *chapter)
    QApplication.sendEvent(window.reference_panel.patch_buttons[("TR", 0)], QEvent(QEvent.Type.Enter))
    # docs/reference/geometry.md: TR rank 1 sits in cell (row 1, col 3) of W/2 x H/2 = 128x192 cells, pasted at
    # (3*128 + 1, 192 + 1) with size 126x190; the TR query patch is 192x288 at (W/4, 0) of
    # the page, which starts at (W/2, H/2) = (128, 192) in the canvas.
    assert window.canvas_view.highlighted() == [QRectF(385, 193, 126, 190), QRectF(192, 192, 192, 288)]
    QApplication.sendEvent(window.reference_panel.patch_buttons[("TR", 0)], QEvent(QEvent.Type.Leave))
    assert window.canvas_view.highlighted() == []
    # the other way: the pointer over cell (3, 0) = BL rank 3 marks that patch's button
    window.canvas_view.hover_moved.emit(10.0, 3 * 192 + 50.0)
    assert window.reference_panel.hovered_patch() == (2, 2)
    assert window.canvas_view.highlighted()[0] == QRectF(1, 3 * 192 + 1, 126, 190)
    window.canvas_view.hover_moved.emit(-1.0, -1.0)
    assert window.reference_panel.hovered_patch() is None
    close(qtbot, window)


def test_patch_score_is_a_bar_with_the_number_in_the_tooltip(qtbot, settings, chapter):
    window = make_window(qtbot, settings)
    open_with_refs(qtbot, window, *chapter)
    button = window.reference_panel.patch_buttons[("TL", 0)]
    score = window.reference_panel._picks[0][0]["score"]
    assert button.text() == "" and f"similarity {score:.4f}" in button.toolTip()
    icon = button.icon().pixmap(button.iconSize()).toImage()
    bar_row = icon.height() - 3  # the bar is the last rows of the icon
    filled = sum(1 for x in range(icon.width()) if icon.pixelColor(x, bar_row).name() == "#4fb3ff")
    assert abs(filled / icon.width() - max(0.0, score)) < 0.05
    close(qtbot, window)
