"""Variations in the window: Run ▸ Colorize again keeps a second result beside the first, picking
it changes the Result tab and the exported page; the guidance of Settings and of the Variations
panel reaches the run, and the global settings stay as they were."""

from __future__ import annotations

import io
import zipfile
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("PySide6")

from PySide6.QtCore import Qt, QTimer  # noqa: E402
from PySide6.QtGui import QImage  # noqa: E402
from PySide6.QtWidgets import QApplication, QDialogButtonBox, QDoubleSpinBox, QFormLayout  # noqa: E402

from app.job_model import JobKind  # noqa: E402
from window_helpers import WAIT_MS, close, make_window, open_with_refs  # noqa: E402


def shown_pixels(window) -> np.ndarray:
    """The Result tab's picture as RGB pixels."""
    image = window.result_view._pixmap.pixmap().toImage().convertToFormat(QImage.Format.Format_RGB888)
    return _qimage_pixels(image)


def file_pixels(path) -> np.ndarray:
    """A PNG decoded by Qt (not the engine) as RGB pixels."""
    image = QImage(str(path)).convertToFormat(QImage.Format.Format_RGB888)
    assert not image.isNull(), path
    return _qimage_pixels(image)


def _qimage_pixels(image: QImage) -> np.ndarray:
    width, height, stride = image.width(), image.height(), image.bytesPerLine()
    rows = np.frombuffer(image.constBits(), np.uint8, stride * height).reshape(height, stride)
    return rows[:, :width * 3].reshape(height, width, 3).copy()


def menu_action(window, menu: str, text: str):
    [found] = [a for m in window.menuBar().actions() if m.text().replace("&", "") == menu
               for a in m.menu().actions() if a.text() == text]
    return found


def test_colorize_again_keeps_the_second_variation_and_picking_it_changes_result_and_export(
        qtbot, settings, chapter, tmp_path, monkeypatch):
    settings.run = replace(settings.run, input_style="gray")
    window = make_window(qtbot, settings)
    open_with_refs(qtbot, window, *chapter)
    with qtbot.waitSignal(window.run_finished, timeout=WAIT_MS):
        window.colorize_current()
    project = window.document.project
    first = project.folder / "001_1.png"
    first_bytes = first.read_bytes()
    window.tabs.setCurrentWidget(window.result_view)
    panel = window.variations_panel
    assert panel.isVisible() and panel.list.count() == 1

    again = menu_action(window, "Run", "Colorize again")
    assert again.shortcut().toString() == "Ctrl+Shift+R" and again.isEnabled()
    with qtbot.waitSignal(window.run_finished, timeout=WAIT_MS):
        again.trigger()
    assert panel.list.count() == 2
    page = project.page("1.png")
    second = project.folder / page.variations[1].file
    assert [v.seed for v in page.variations] == [0, 1]  # the next seed after the settings' 0
    assert (window.settings.run.seed, window.settings.run.guidance) == (0, None)  # global settings untouched
    assert [v.guidance for v in page.variations] == [7.5, 7.5]  # unset: the SD family's official 7.5
    assert first.read_bytes() == first_bytes and second.is_file() and second != first
    assert np.array_equal(shown_pixels(window), file_pixels(first))  # the first stays until the user picks

    rect = panel.list.visualItemRect(panel.list.item(1))
    qtbot.mouseClick(panel.list.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert np.array_equal(shown_pixels(window), file_pixels(second))
    assert not np.array_equal(file_pixels(first), file_pixels(second))

    from PySide6.QtWidgets import QMessageBox

    # the other pages are not colored: the export asks, and the answer puts their originals in
    monkeypatch.setattr(QMessageBox, "question", lambda *args, **kwargs: QMessageBox.StandardButton.Yes)
    exported = tmp_path / "exports" / "mine.cbz"
    window.export("cbz", exported)  # File ▸ Export as ▸ CBZ, the place chosen
    qtbot.waitUntil(lambda: exported.is_file() and window.jobs.latest(JobKind.EXPORT) is None, timeout=WAIT_MS)
    with zipfile.ZipFile(exported) as archive:
        member = sorted(n for n in archive.namelist() if n.endswith(".png"))[0]
        page_one = np.asarray(Image.open(io.BytesIO(archive.read(member))).convert("RGB"))
    assert np.array_equal(page_one, file_pixels(second))
    close(qtbot, window)


def test_guidance_of_settings_and_of_the_variations_panel_reach_the_run(qtbot, settings, chapter, monkeypatch):
    settings.run = replace(settings.run, input_style="gray")
    window = make_window(qtbot, settings)
    open_with_refs(qtbot, window, *chapter)
    received = []
    real_colorize = window.session.colorize

    def recording_colorize(*args, **kwargs):  # runs in the worker thread: only records
        received.append((kwargs["settings"], kwargs.get("again")))
        return real_colorize(*args, **kwargs)

    monkeypatch.setattr(window.session, "colorize", recording_colorize)

    problems = []

    def set_guidance_and_press_ok():
        dialog = QApplication.activeModalWidget()
        try:
            form = dialog.layout()
            labels = {form.itemAt(row, QFormLayout.ItemRole.LabelRole).widget().text(): row
                      for row in range(form.rowCount()) if form.itemAt(row, QFormLayout.ItemRole.LabelRole)}
            guidance = form.itemAt(labels["Guidance"], QFormLayout.ItemRole.FieldRole).widget()
            assert isinstance(guidance, QDoubleSpinBox) and guidance.text() == "auto"  # unset: the family's
            guidance.setValue(3.5)
            dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok).click()
        except Exception as exc:  # said after the dialog closes: a dialog left open would hang the test
            problems.append(exc)
            dialog.reject()

    QTimer.singleShot(0, set_guidance_and_press_ok)
    window.settings_dialog()  # Edit ▸ Settings
    assert not problems, problems
    assert window.settings.run.guidance == 3.5
    with qtbot.waitSignal(window.run_finished, timeout=WAIT_MS):
        window.colorize_current()
    assert received[-1][0].guidance == 3.5 and received[-1][1] is None

    window.tabs.setCurrentWidget(window.result_view)
    panel = window.variations_panel
    assert panel.guidance.value() == 3.5  # the page's guidance starts at the one it was colored with
    panel.guidance.setValue(2.0)
    panel.new_seed.setChecked(False)
    with qtbot.waitSignal(window.run_finished, timeout=WAIT_MS):
        panel.again.click()
    run, again = received[-1]
    assert (again.guidance, again.new_seed, run.guidance) == (2.0, False, 3.5)
    assert window.settings.run.guidance == 3.5
    page = window.document.project.page(window.document.page_names[0])
    assert [(v.seed, v.guidance) for v in page.variations] == [(0, 3.5), (0, 2.0)]
    assert panel.list.count() == 2
    close(qtbot, window)
