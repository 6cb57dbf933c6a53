"""A page's own input style in the window (issue 24, deliverable 5): the Pages dock's menu lists the
chapter's style and the four styles, a choice goes through the undo stack and is saved, the canvas
shows the page prepared with its style (the line image for a sketch page), and auto's suggestion is
shown with its reason and applied only by Use suggestion."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QImage  # noqa: E402

from window_helpers import WAIT_MS, canvas_image, close, make_window, open_with_refs  # noqa: E402


def centre(window) -> np.ndarray:
    """The page box of the canvas on screen, as RGB pixels."""
    image = canvas_image(window).convertToFormat(QImage.Format.Format_RGB888)
    width, height, stride = image.width(), image.height(), image.bytesPerLine()
    rows = np.frombuffer(image.constBits(), np.uint8, stride * height).reshape(height, stride)
    pixels = rows[:, :width * 3].reshape(height, width, 3).astype(int)
    x0, y0, x1, y1 = window._view.page_box
    return pixels[y0:y1, x0:x1]


def prepared_query(settings, document, style: str, tmp_path) -> np.ndarray:
    """The page's W x H query made by the engine's own preparer for `style`, outside the window."""
    from engine.pipelines.page import load_preparer, prepare_page
    from engine.pipelines.settings import pipeline_settings

    run = replace(settings.run, input_style=style)
    preparer = load_preparer(run.models, "cpu", tmp_path / "outside", style)
    prepared = prepare_page(preparer, document.chapter.load_page(0), pipeline_settings(run).inputs)
    return np.asarray(prepared.query.convert("RGB")).astype(int)


def test_a_pages_own_style_goes_through_undo_and_the_canvas_shows_its_preparation(qtbot, settings, chapter, tmp_path,
                                                                                   monkeypatch):
    import app.page_styles

    from engine.preprocess.style_suggest import suggest_style
    from engine.project.state import ChapterProject

    settings.run = replace(settings.run, input_style="gray")
    window = make_window(qtbot, settings)
    open_with_refs(qtbot, window, *chapter)
    document, panel = window.document, window.page_style_panel
    name = document.page_names[0]
    assert [panel.combo.itemData(i) for i in range(panel.combo.count())] == [None, "screen", "gray", "sketch",
                                                                             "sketch-shading"]
    assert panel.combo.itemText(0) == "chapter default (gray)" and panel.combo.currentIndex() == 0
    assert panel.combo.itemData(3, Qt.ItemDataRole.ToolTipRole) == "line art (official Sketch)"  # Settings' label

    # auto's suggestion for the page, made from its pixels: shown with its reason, not applied
    expected = suggest_style(document.chapter.load_page(0).image)
    assert panel.suggestion.text() == f"Suggested: {expected.style} — {expected.reason}"
    assert document.project.page(name).input_style is None

    gray = centre(window)
    assert np.abs(gray - prepared_query(settings, document, "gray", tmp_path)).mean() < 1.0
    offered = []  # a line-art style picked for a page offers its optional model files, as Settings does
    monkeypatch.setattr(app.page_styles, "offer_line_art_download",
                        lambda _window, _worker, style, models: offered.append((style, models)))
    with qtbot.waitSignal(window.retrieval_shown, timeout=WAIT_MS):
        panel.combo.activated.emit(panel.combo.findData("sketch"))  # the user picks sketch
    assert document.project.page(name).input_style == "sketch"
    assert ChapterProject.load(document.project.folder).page(name).input_style == "sketch"  # saved
    assert offered == [("sketch", str(settings.run.models))]
    lines = prepared_query(settings, document, "sketch", tmp_path)
    assert np.abs(centre(window) - lines).mean() < 1.0  # the canvas shows the line image
    assert np.abs(gray - lines).mean() > 5.0  # which is not the gray page

    with qtbot.waitSignal(window.retrieval_shown, timeout=WAIT_MS):
        window.undo_stack.undo()
    assert document.project.page(name).input_style is None and panel.combo.currentIndex() == 0
    assert np.abs(centre(window) - gray).mean() < 1.0
    assert ChapterProject.load(document.project.folder).page(name).input_style is None
    assert len(offered) == 1  # undo offers nothing

    assert panel.use.isEnabled()
    with qtbot.waitSignal(window.retrieval_shown, timeout=WAIT_MS):
        panel.use.click()  # one click applies the suggestion, undoable
    assert document.project.page(name).input_style == expected.style
    assert panel.combo.currentData() == expected.style and not panel.use.isEnabled()
    assert window.undo_stack.undoText() == f"Input style of {name}: {expected.style}"
    window.page_strip.setCurrentRow(1)  # the next page: the panel shows its own (none), at once
    assert panel.combo.currentIndex() == 0 and document.project.page(name).input_style == expected.style
    qtbot.waitUntil(lambda: window._view is not None and window._view.page_index == 1, timeout=WAIT_MS)
    close(qtbot, window)


@pytest.mark.parametrize("own, chapter, suggested, offered", [
    (None, "screen", "screen", False),  # the chapter's style is the suggestion already: nothing to use
    (None, "auto", "sketch", False),  # auto uses the suggestion by itself
    ("sketch", "screen", "sketch", False),  # the page has it as its own
    (None, "screen", "sketch", True),
    ("gray", "screen", "screen", True),  # its own style hides the chapter's, which was suggested
])
def test_use_suggestion_is_offered_only_when_it_would_change_the_pages_style(qtbot, own, chapter, suggested, offered):
    from app.page_styles import PageStylePanel

    panel = PageStylePanel()
    qtbot.addWidget(panel)
    panel.show_page(own, chapter, {"style": suggested, "reason": "a reason"})
    assert panel.suggestion.text() == f"Suggested: {suggested} — a reason"
    assert panel.use.isEnabled() is offered
