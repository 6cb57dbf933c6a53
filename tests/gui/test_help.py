"""Help menu: the shortcuts sheet is generated from the window's actions; the user guide opens
inside the app from the shipped resources, with its screenshots or readable without them."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QPoint, QPointF, Qt, QUrl  # noqa: E402
from PySide6.QtGui import QAction, QKeySequence, QTextDocument, QWheelEvent  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from window_helpers import REPO_ROOT, close, make_window  # noqa: E402

GUIDE = REPO_ROOT / "resources" / "docs" / "user-guide.md"
SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
# The lead regenerates the screenshots and adds these two; the guide names them already.
TO_BE_GENERATED = {"failed.png", "variations.png"}
EXISTING = {"canvas.png", "result.png", "compare.png", "running.png", "settings.png", "models.png",
            "page-style.png", "line-art.png", "models-line-art.png"}  # the last three: section 12, line art
EXISTING |= {"region-pin.png", "drift-list.png"}  # sections 4 and 8: region pins, the drift list
EXISTING |= {"series-panel.png", "series-references.png"}  # section 13: the Series dock, reference levels
IMAGE_LINK = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")


@pytest.fixture
def window(qtbot):
    from app.settings import AppSettings
    from engine.pipelines.session import RunSettings

    window = make_window(qtbot, AppSettings(RunSettings(models="tiny", device="cpu")))
    yield window
    close(qtbot, window)


def _help_action(window, text: str) -> QAction:
    (menu,) = [a.menu() for a in window.menuBar().actions() if a.text().replace("&", "") == "Help"]
    (action,) = [a for a in menu.actions() if a.text() == text]
    return action


def _sheet_rows(window) -> list[tuple[str, str, str]]:
    from app.help_dialogs import ShortcutsDialog

    _help_action(window, "Keyboard shortcuts…").trigger()
    dialog = window.findChildren(ShortcutsDialog)[-1]
    table = dialog.actions_table
    rows = [tuple(table.item(r, c).text() for c in range(3)) for r in range(table.rowCount())]
    dialog.close()
    return rows


def _native(action: QAction) -> list[str]:
    return [key.toString(QKeySequence.SequenceFormat.NativeText) for key in action.shortcuts()]


def test_the_shortcuts_sheet_lists_every_action_of_the_window_that_has_a_shortcut(window):
    rows = _sheet_rows(window)
    with_keys = [a for a in window.findChildren(QAction) if not a.shortcut().isEmpty()]
    assert len(with_keys) >= 10  # the window's menus have many; an empty collection proves nothing
    for action in with_keys:
        text = action.text().replace("&", "")
        (row,) = [r for r in rows if r[1] == text]
        assert all(key in row[2] for key in _native(action)), (row, _native(action))
    assert len(rows) == len(with_keys)  # nothing listed that the window does not have
    # the design's keys, by hand: the menu and the key as Qt writes it (texts may be reworded)
    for menu, key in (("Run", "Ctrl+Return"), ("Edit", "P"), ("Edit", "R"), ("Edit", "Ctrl+Z"),
                      ("View", "Space"), ("Run", "Ctrl+Esc"), ("Help", "F1")):
        assert any(row[0] == menu and key in row[2].split(", ") for row in rows), (menu, key)


def test_an_action_added_later_appears_in_the_sheet_with_where_it_lives(window):
    (view,) = [a.menu() for a in window.menuBar().actions() if a.text().replace("&", "") == "View"]
    added = QAction("Frobnicate the page", window)
    added.setShortcut(QKeySequence("Ctrl+Alt+F"))
    view.addAction(added)
    loose = QAction("Loose window key", window)  # a window-wide key that is in no menu
    loose.setShortcut(QKeySequence("Ctrl+Alt+L"))
    window.addAction(loose)
    rows = _sheet_rows(window)
    assert ("View", "Frobnicate the page", "Ctrl+Alt+F") in rows
    assert [r for r in rows if r[1] == "Loose window key"][0][2] == "Ctrl+Alt+L"


def test_the_sheet_lists_the_mouse_and_keys_the_views_handle_outside_actions(window, qtbot):
    from app.help_dialogs import ShortcutsDialog

    _help_action(window, "Keyboard shortcuts…").trigger()
    dialog = window.findChildren(ShortcutsDialog)[-1]
    table = dialog.views_table
    inputs = {table.item(r, 1).text(): table.item(r, 2).text() for r in range(table.rowCount())}
    assert "zoom" in inputs["Mouse wheel"].lower()
    dialog.close()
    # and what it says is what the view does: a wheel step up zooms in
    view = window.canvas_view
    before = view.transform().m11()
    wheel = QWheelEvent(QPointF(10, 10), QPointF(10, 10), QPoint(0, 0), QPoint(0, 120), Qt.MouseButton.NoButton,
                        Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(view.viewport(), wheel)
    assert view.transform().m11() > before


def _first_heading() -> str:
    return next(line[2:].strip() for line in GUIDE.read_text(encoding="utf-8").splitlines() if line.startswith("# "))


def test_the_user_guide_opens_inside_the_app_from_the_shipped_resources(window, qtbot, monkeypatch):
    from PySide6.QtGui import QDesktopServices

    from app.help_dialogs import GuideDialog
    from engine.core.resources import resource

    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url))
    shipped = resource("docs", "user-guide.md")  # how the app finds it: wheel, bundle and source tree alike
    assert shipped.read_text(encoding="utf-8") == GUIDE.read_text(encoding="utf-8")
    _help_action(window, "User guide…").trigger()
    dialog = window.findChildren(GuideDialog)[-1]
    browser = dialog.browser
    text = browser.toPlainText()
    assert len(text) > 2000 and _first_heading() in text
    assert not browser.openExternalLinks() and not browser.openLinks() and not opened
    # a screenshot present in the source tree is shown as a picture, not left as a broken link
    shown = browser.document().resource(QTextDocument.ResourceType.ImageResource,
                                        QUrl("../../docs/screenshots/canvas.png"))
    assert shown is not None and not shown.isNull()
    screen = window.screen().availableGeometry()
    assert dialog.width() <= screen.width() and dialog.height() <= screen.height()
    dialog.close()


def test_a_guide_whose_screenshots_are_missing_still_reads(qtbot, tmp_path):
    from PIL import Image

    from app.help_dialogs import GuideDialog

    (tmp_path / "shots").mkdir()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(tmp_path / "shots" / "there.png")
    text = "# A guide\n\nBefore.\n\n![The canvas with its regions](shots/missing.png)\n\n![Present](shots/there.png)\n\nAfter.\n"
    dialog = GuideDialog(text, tmp_path)
    qtbot.addWidget(dialog)
    browser = dialog.browser
    plain = browser.toPlainText()
    assert "The canvas with its regions" in plain and "Before." in plain and "After." in plain
    assert "missing.png" not in browser.toHtml()  # no broken-image link for the absent file
    there = browser.document().resource(QTextDocument.ResourceType.ImageResource, QUrl("shots/there.png"))
    assert there is not None and (there.width(), there.height()) == (40, 30)
    # a guide read from an archive (no folder on disk): every picture falls back to its words
    archived = GuideDialog(text, None)
    qtbot.addWidget(archived)
    assert "there.png" not in archived.browser.toHtml() and "Present" in archived.browser.toPlainText()


def test_every_image_the_guide_references_exists_or_is_to_be_generated():
    text = GUIDE.read_text(encoding="utf-8")
    links = IMAGE_LINK.findall(text)
    assert text.count("![") == len(links)  # no image written in a form this check would miss
    names = set()
    for alt, link in links:
        target = (GUIDE.parent / link).resolve()
        assert target.parent == SCREENSHOTS.resolve(), link
        assert target.exists() or target.name in TO_BE_GENERATED, link
        assert alt.strip(), f"{link} has no words to show when the picture is absent"
        names.add(target.name)
    assert names == EXISTING | TO_BE_GENERATED
    # one source of truth: docs/ points at the shipped guide; the README links it
    pointer = (REPO_ROOT / "docs" / "user-guide.md").read_text(encoding="utf-8")
    assert "../resources/docs/user-guide.md" in pointer and len(pointer.splitlines()) <= 8
    assert "docs/user-guide.md" in (REPO_ROOT / "README.md").read_text(encoding="utf-8")


def test_a_missing_guide_says_what_to_do_in_one_line(window, monkeypatch):
    import app.help_dialogs as help_dialogs
    from app.help_dialogs import GuideDialog

    said = []
    monkeypatch.setattr(help_dialogs, "GUIDE", ("docs", "no-such-guide.md"))  # a damaged install
    monkeypatch.setattr(help_dialogs.QMessageBox, "warning", lambda parent, title, text: said.append(text))
    _help_action(window, "User guide…").trigger()
    assert not window.findChildren(GuideDialog)
    assert len(said) == 1 and "\n" not in said[0] and "reinstall ColorFlow" in said[0]
