"""Views and curation a colorist can read: fit/zoom in every view, the split slider, large
patch thumbnails with a hover preview, one vocabulary (page regions vs reference patches),
honest no-op pins/rejects, full context menus, chapter-only actions disabled without one."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QEvent, QPointF, Qt  # noqa: E402
from PySide6.QtGui import QColor, QPixmap  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from window_helpers import WAIT_MS, close, make_window, open_with_refs  # noqa: E402

# The patch vocabulary, as specified for this issue: a reference's 5 crops are numbered
# 1 (the whole image) to 5, the four quarter crops in reading order.
PATCH_NUMBER = {"full": 1, "TL": 2, "TR": 3, "BL": 4, "BR": 5}
REGION_WORDS = ("TL", "TR", "BL", "BR", "top left", "top right", "bottom left", "bottom right",
                "top-left", "top-right", "bottom-left", "bottom-right")


def _action(window, text: str):
    from PySide6.QtGui import QAction

    return next(a for a in window.findChildren(QAction) if a.text() == text)


def _fits(view) -> bool:
    """The image's scene rect, mapped to the viewport, lies inside it and fills one side."""
    shown = view.mapFromScene(view.sceneRect()).boundingRect()
    port = view.viewport().rect()
    inside = port.adjusted(-2, -2, 2, 2).contains(shown)
    return inside and (shown.width() >= port.width() - 4 or shown.height() >= port.height() - 4)


def _solid(color: str, width: int = 300, height: int = 450) -> QPixmap:
    pixmap = QPixmap(width, height)
    pixmap.fill(QColor(color))
    return pixmap


def test_fit_and_zoom_shortcuts_work_in_every_view_compare_included(qtbot, settings):
    window = make_window(qtbot, settings)
    zoom_in, zoom_out, fit = (_action(window, t) for t in ("Zoom in", "Zoom out", "Fit to window"))
    assert zoom_in.shortcut().toString() == "Ctrl++" and zoom_out.shortcut().toString() == "Ctrl+-"
    assert fit.shortcut().toString() == "Ctrl+0"
    compare = window.compare_view
    window.canvas_view.set_pixmap(_solid("#808080"))
    window.result_view.set_pixmap(_solid("#0000ff"))
    compare.set_images(_solid("#ff0000"), _solid("#0000ff"))
    cases = [(0, False, window.canvas_view), (1, False, window.result_view),
             (2, False, compare.left), (2, True, compare.split)]
    for tab, split, view in cases:
        window.tabs.setCurrentIndex(tab)
        compare.mode.setChecked(split)
        qtbot.waitUntil(view.isVisible)
        fitted = view.transform().m11()
        for _ in range(8):  # Ctrl++ 8 times: 1.25 ** 8 = 6x, far larger than the viewport
            zoom_in.trigger()
        assert view.transform().m11() == pytest.approx(fitted * 1.25 ** 8)
        assert not _fits(view), (tab, split)
        zoom_out.trigger()
        assert view.transform().m11() == pytest.approx(fitted * 1.25 ** 7)
        fit.trigger()  # Ctrl+0
        assert _fits(view), (tab, split)
    # side by side, the colored view keeps in step with the original
    window.tabs.setCurrentIndex(2)
    compare.mode.setChecked(False)
    zoom_in.trigger()
    assert compare.right.transform().m11() == pytest.approx(compare.left.transform().m11())
    fit.trigger()
    assert _fits(compare.right)
    close(qtbot, window)


def test_a_fitted_page_stays_fitted_when_the_view_shrinks_a_zoomed_one_keeps_its_zoom(qtbot):
    """The Variations panel appears below Result after a run: the fitted page must not be cut off."""
    from app.canvas_view import ZoomView

    view = ZoomView()
    qtbot.addWidget(view)
    view.resize(600, 700)
    view.show()
    qtbot.waitExposed(view)
    view.set_pixmap(_solid("#0000ff", 300, 450))
    assert _fits(view)
    view.resize(600, 350)  # shorter than the fitted page was
    qtbot.waitUntil(lambda: view.viewport().height() < 360)
    assert _fits(view)
    view.zoom_by(2.0)
    zoomed = view.transform().m11()
    view.resize(600, 500)
    qtbot.waitUntil(lambda: view.viewport().height() > 360)
    assert view.transform().m11() == pytest.approx(zoomed)  # the user's zoom is left alone


def _scene_color(view, x: float, y: float) -> str:
    image = view.viewport().grab().toImage()
    point = view.mapFromScene(QPointF(x, y))
    return image.pixelColor(point.x(), point.y()).name()


def test_split_slider_moves_the_split_and_is_hidden_side_by_side(qtbot, settings):
    window = make_window(qtbot, settings)
    compare = window.compare_view
    compare.set_images(_solid("#ff0000"), _solid("#0000ff"))  # original red, colored blue
    window.tabs.setCurrentIndex(2)
    qtbot.waitUntil(compare.left.isVisible)
    assert not compare.slider.isVisible()  # side by side: nothing for it to move
    compare.mode.setChecked(True)
    qtbot.waitUntil(compare.split.isVisible)
    assert compare.slider.isVisible() and compare.slider.isEnabled()
    compare.slider.setValue(250)  # original on the left quarter of the 300 px page
    assert _scene_color(compare.split, 30, 200) == "#ff0000"
    assert _scene_color(compare.split, 180, 200) == "#0000ff"
    compare.slider.setValue(900)
    assert _scene_color(compare.split, 180, 200) == "#ff0000"
    assert _scene_color(compare.split, 285, 200) == "#0000ff"
    compare.mode.setChecked(False)
    assert not compare.slider.isVisible()
    close(qtbot, window)


PICKS = [[{"ref": f"/refs/ref_0{k + 1}.png", "patch": patch, "score": 0.9 - 0.1 * k, "pinned": False}
          for k, patch in enumerate(("TR", "full", "BL"))] for _ in range(4)]


def _panel(qtbot, width: int = 420):
    from app.reference_panel import ReferencePanel

    panel = ReferencePanel()
    qtbot.addWidget(panel)
    panel.resize(width, 900)
    panel.show()
    thumb = _solid("#20a060", 192, 288)  # a portrait crop at the working size 256x384
    panel.set_page_picks(PICKS, [[thumb] * 3 for _ in range(4)], {})
    return panel


def test_patch_thumbnails_are_large_follow_the_dock_width_and_preview_on_hover(qtbot):
    panel = _panel(qtbot, 420)
    button = panel.patch_buttons[("TL", 0)]
    sizes = [icon_size(b) for b in panel.patch_buttons.values()]
    assert min(min(s) for s in sizes) >= 96, sizes
    narrow = icon_size(button)
    panel.resize(640, 900)
    qtbot.waitUntil(lambda: icon_size(button)[0] > narrow[0])
    assert panel.page_box.width() <= panel.width()
    QApplication.sendEvent(button, QEvent(QEvent.Type.Enter))
    preview = panel.preview
    assert preview.isVisible()
    shown = preview.image_size()
    assert 280 <= max(shown.width(), shown.height()) <= 400, shown
    QApplication.sendEvent(button, QEvent(QEvent.Type.Leave))
    assert not preview.isVisible()


def icon_size(button) -> tuple[int, int]:
    """Width and height of the thumbnail itself (the similarity bar under it left out)."""
    pixmap = button.icon().pixmap(button.iconSize())
    return pixmap.width(), pixmap.height() - 9


def _emitted(panel, trigger) -> set:
    seen = []
    panel.choice_requested.connect(lambda target, state, chapter: seen.append((target, state, chapter)))
    trigger()
    panel.choice_requested.disconnect()
    return set(seen)


def test_context_menus_offer_every_action_of_the_selectors(qtbot):
    panel = _panel(qtbot)
    selector = set()
    for row, rank in ((0, 0), (2, 1)):
        panel.patch_buttons[(("TL", "TR", "BL", "BR")[row], rank)].click()
        for extent in range(panel.extent.count()):
            for scope in range(panel.scope.count()):
                panel.extent.setCurrentIndex(extent)
                panel.scope.setCurrentIndex(scope)
                for button in panel.action_buttons:
                    selector |= _emitted(panel, button.click)
        menu = panel.patch_menu(row, rank)
        offered = set()
        for action in menu.actions():
            if not action.isSeparator():
                offered |= _emitted(panel, action.trigger)
        wanted = {s for s in selector if s[0].ref == PICKS[row][rank]["ref"]}
        assert len(wanted) == 12 and wanted <= offered, wanted - offered  # pin/reject/clear x patch/ref x page/chapter
    # a chapter reference: pin, reject and clear, for this page and for the whole chapter
    from engine.rap.curation import Target

    panel.set_references(["/refs/ref_01.png"], {}, {})
    offered = set()
    for action in panel.reference_menu("/refs/ref_01.png").actions():
        if not action.isSeparator():
            offered |= _emitted(panel, action.trigger)
    assert {(Target("/refs/ref_01.png"), s, c) for s in ("pin", "reject", None) for c in (False, True)} <= offered


def test_add_references_is_disabled_until_a_chapter_is_open(qtbot, settings, chapter):
    window = make_window(qtbot, settings)
    add = window.reference_panel.add_button
    assert not add.isEnabled() and "open a chapter" in add.toolTip().lower()
    assert not _action(window, "Add references…").isEnabled()
    with qtbot.waitSignal(window.document_opened, timeout=WAIT_MS):
        window.open_path(str(chapter[0]))
    assert add.isEnabled() and "open a chapter" not in add.toolTip().lower()
    close(qtbot, window)


def test_rows_are_regions_patches_have_their_own_names_in_undo_and_rejected(qtbot, settings, chapter):
    window = make_window(qtbot, settings)
    open_with_refs(qtbot, window, *chapter)
    panel = window.reference_panel
    labels = [label.text() for label in panel.region_labels]
    assert labels == ["top-left region", "top-right region", "bottom-left region", "bottom-right region"]
    button = panel.patch_buttons[("BR", 0)]
    button.click()
    pick = panel._picks[3][0]
    name = f"patch {PATCH_NUMBER[pick['patch']]} of {Path(pick['ref']).name}"
    assert name in button.toolTip() and "bottom-right region" in button.toolTip()
    with qtbot.waitSignal(window.retrieval_shown, timeout=WAIT_MS):
        panel.action_buttons[1].click()  # Reject, this patch, this page
    undo_text = _action(window, f"Undo {window.undo_stack.undoText()}").text()
    rejected = panel.rejected.item(0).text()
    for text in (undo_text, rejected, panel.rejected.item(0).toolTip()):
        assert name in text, text
        assert not any(word in text for word in REGION_WORDS), text
    # a whole reference is all of its patches, never a region either
    panel.patch_buttons[("TL", 0)].click()
    whole = Path(panel._picks[0][0]["ref"]).name
    panel.extent.setCurrentIndex(1)
    with qtbot.waitSignal(window.retrieval_shown, timeout=WAIT_MS):
        panel.action_buttons[1].click()
    texts = [panel.rejected.item(i).text() for i in range(panel.rejected.count())] + [window.undo_stack.undoText()]
    assert any(f"all patches of {whole}" in t for t in texts[:-1]) and f"all patches of {whole}" in texts[-1], texts
    close(qtbot, window)


def test_a_pin_or_reject_that_changes_nothing_says_so_and_is_not_undoable(qtbot, settings, chapter):
    window = make_window(qtbot, settings)
    open_with_refs(qtbot, window, *chapter)
    panel = window.reference_panel
    # the strongest top pick of all regions is where a pin would put it anyway
    row = max(range(len(panel._picks)), key=lambda r: panel._picks[r][0]["score"])
    panel.patch_buttons[(("TL", "TR", "BL", "BR")[row], 0)].click()
    commands = window.undo_stack.count()
    panel.action_buttons[0].click()  # Pin, this patch, this page
    qtbot.wait(100)
    assert window.undo_stack.count() == commands
    message = window.statusBar().currentMessage()
    assert "top pick" in message and "changes nothing" in message, message
    # rejecting what is already rejected: said, not pushed
    with qtbot.waitSignal(window.retrieval_shown, timeout=WAIT_MS):
        panel.action_buttons[1].click()
    commands = window.undo_stack.count()
    panel.rejected.setCurrentRow(0)
    panel._select_rejected(panel.rejected.item(0))
    window.statusBar().clearMessage()
    panel.action_buttons[1].click()  # Reject again
    qtbot.wait(100)
    assert window.undo_stack.count() == commands
    assert "already rejected" in window.statusBar().currentMessage()
    close(qtbot, window)


def test_said_to_change_nothing_exactly_when_retrieval_picks_the_same_with_the_pin():
    """The no-op rule for pinning a top pick, checked against the engine's own pick selection
    on random score tables: said "changes nothing" only when the pin leaves every pick in place,
    and always said for the strongest top pick (what the panel shows is enough to know it)."""
    import numpy as np

    from app.curation_view import top_pick_region
    from engine.rap.curation import Choices, Target
    from engine.rap.retrieval import Candidate, select_picks

    rng = np.random.default_rng(3)
    candidates = [Candidate(f"ref_{i // 5}.png", ("full", "TL", "TR", "BL", "BR")[i % 5], None) for i in range(10)]
    said, checked = 0, 0
    for _ in range(300):
        scores = rng.uniform(0.0, 1.0, size=(4, len(candidates)))

        def shown(choices):
            return [[(p["ref"], p["patch"], p["score"]) for p in row]
                    for row in [[pick.to_json() for pick in picks] for picks in select_picks(scores, candidates, choices)]]

        picks = [[pick.to_json() for pick in row] for row in select_picks(scores, candidates)]
        for row in picks:
            target = Target(row[0]["ref"], row[0]["patch"])
            unchanged = shown(Choices(pins=[target])) == shown(Choices())
            predicted = top_pick_region(picks, target) is not None
            assert unchanged or not predicted, (scores, target)
            if row[0]["score"] == max(p["score"] for r in picks for p in r):
                assert predicted, (scores, target)
            said += predicted
            checked += 1
    assert 0 < said < checked  # both outcomes occurred
