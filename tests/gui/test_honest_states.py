"""Honest states (issue 22 · 3): the canvas says what runs while a chapter opens, models load or
retrieval runs; a failed page shows why and enables Retry; Settings refuse a bad models folder;
GUI texts name menus, never command-line flags."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

pytest.importorskip("PySide6")

from PySide6.QtWidgets import QAbstractButton, QDialog, QDialogButtonBox, QLabel, QListWidget  # noqa: E402

from app.document import ChapterDocument  # noqa: E402
from app.settings import AppSettings, SettingsDialog  # noqa: E402
from engine.core.options import RunSettings  # noqa: E402
from window_helpers import WAIT_MS, close, make_window, open_with_refs  # noqa: E402

EMPTY_REFERENCES_HINT = "No colored references yet"


def menu_actions(window) -> dict[str, list[str]]:
    """Every menu of the menu bar and the actions reachable in it ("Open recent ▸ …" for a submenu)."""
    def walk(menu, prefix: str = "") -> list[str]:
        names = []
        for action in menu.actions():
            text = action.text().replace("&", "")
            if action.menu() is not None:
                names += walk(action.menu(), f"{prefix}{text} ▸ ")
            elif text:
                names.append(prefix + text)
        return names

    return {a.text().replace("&", ""): walk(a.menu()) for a in window.menuBar().actions()}


def assert_names_real_menus(window, text: str) -> None:
    """Each "Menu ▸ Action" the text names is an action of the window's menu bar, spelled as there."""
    for menu, actions in menu_actions(window).items():
        for rest in text.split(f"{menu} ▸ ")[1:]:
            assert any(rest.startswith(name) for name in actions), f"{menu} ▸ {rest[:40]!r}: no such menu entry"


def placeholder(view) -> str:
    return view._placeholder.text() if view._placeholder.isVisible() else ""


def visible_texts(window) -> list[str]:
    """What the window shows in words: labels, buttons, list rows, tooltips, status bar, tab titles."""
    texts = [window.statusBar().currentMessage(), window.canvas_view._placeholder.text(),
             window.result_view._placeholder.text()]
    texts += [window.tabs.tabText(i) for i in range(window.tabs.count())]
    for label in window.findChildren(QLabel):
        texts += [label.text(), label.toolTip()]
    for button in window.findChildren(QAbstractButton):
        texts += [button.text(), button.toolTip()]
    for widget in window.findChildren(QListWidget):
        for row in range(widget.count()):
            texts += [widget.item(row).text(), widget.item(row).toolTip()]
    return texts


@pytest.fixture
def blocked_model_load(monkeypatch):
    """Makes every window's retrieval wait in the model load until `.set()`: a slow first load."""
    from engine.pipelines.session import EngineSession

    release, entered = threading.Event(), threading.Event()
    real = EngineSession.retriever

    def slow_retriever(self, run):
        entered.set()
        release.wait(WAIT_MS / 1000)
        return real(self, run)

    monkeypatch.setattr(EngineSession, "retriever", slow_retriever)
    release.entered = entered
    yield release
    release.set()  # never leave the worker waiting


def test_opening_and_a_slow_model_load_show_their_state_not_the_empty_hints(qtbot, settings, chapter,
                                                                             blocked_model_load):
    chapter_dir, refs_dir = chapter
    document = ChapterDocument.open(chapter_dir)  # a chapter reopened: its references are known
    document.add_references([str(refs_dir)])
    document.close()
    window = make_window(qtbot, settings)
    first = placeholder(window.canvas_view)
    assert "File ▸ Open chapter folder…" in first
    assert_names_real_menus(window, first)
    with qtbot.waitSignal(window.document_opened, timeout=WAIT_MS):
        window.open_path(str(chapter_dir))
        assert "Opening chapter" in placeholder(window.canvas_view)
    qtbot.waitUntil(blocked_model_load.entered.is_set, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: "Loading models" in placeholder(window.canvas_view), timeout=WAIT_MS)
    shown = placeholder(window.canvas_view)
    assert window.reference_panel.references.count() == 4
    assert EMPTY_REFERENCES_HINT not in shown and "Open a chapter" not in shown
    assert "1.png" in shown  # the page it is for
    assert "Loading models" in window.reference_panel.page_box.title()  # the rows say it too
    blocked_model_load.set()
    qtbot.waitUntil(window.canvas_view.has_image, timeout=WAIT_MS)
    assert "Loading" not in window.reference_panel.page_box.title()
    assert window.reference_panel.patch_buttons[("TL", 0)].isEnabled()
    close(qtbot, window)


def test_adding_references_replaces_the_empty_references_hint(qtbot, settings, chapter, blocked_model_load):
    chapter_dir, refs_dir = chapter
    window = make_window(qtbot, settings)
    with qtbot.waitSignal(window.document_opened, timeout=WAIT_MS):
        window.open_path(str(chapter_dir))
    hint = placeholder(window.canvas_view)
    assert EMPTY_REFERENCES_HINT in hint and window.reference_panel.references.count() == 0  # true here
    window.add_references([str(refs_dir)])
    assert "Adding references" in placeholder(window.canvas_view)
    qtbot.waitUntil(lambda: "Loading models" in placeholder(window.canvas_view), timeout=WAIT_MS)
    assert window.reference_panel.references.count() == 4
    blocked_model_load.set()
    qtbot.waitUntil(window.canvas_view.has_image, timeout=WAIT_MS)
    close(qtbot, window)


def test_failed_page_enables_retry_and_shows_its_reason_in_result(qtbot, settings, chapter, tmp_path, monkeypatch):
    window = make_window(qtbot, settings)
    open_with_refs(qtbot, window, *chapter)
    working = window.settings.run
    window.settings.run = replace(working, models=str(tmp_path / "no-such-models"))
    with qtbot.waitSignal(window.run_finished, timeout=WAIT_MS):
        window.colorize_current()
    assert window.page_strip.status(0) == "failed"
    assert window.actions.retry_failed.isEnabled() and window.queue.retry_failed.isEnabled()
    window.tabs.setCurrentIndex(1)
    shown = placeholder(window.result_view)
    assert shown.startswith("Failed:") and "no-such-models" in shown and "does not exist" in shown
    assert "Run ▸ Retry failed pages" in shown and "Edit ▸ Settings…" in shown
    assert_names_real_menus(window, shown)
    # back to working models through Settings: Retry stays enabled and colors the page
    monkeypatch.setattr(SettingsDialog, "exec", lambda dialog: dialog.models.setCurrentText(working.models) or 1)
    window.settings_dialog()
    assert window.settings.run.models == working.models
    assert window.actions.retry_failed.isEnabled() and window.queue.retry_failed.isEnabled()
    with qtbot.waitSignal(window.run_finished, timeout=WAIT_MS):
        window.queue.retry_failed.click()
    assert window.page_strip.status(0) == "done"
    assert window.result_view.has_image()
    assert not window.actions.retry_failed.isEnabled() and not window.queue.retry_failed.isEnabled()
    close(qtbot, window)


def test_undecodable_page_shows_its_reason_in_result(qtbot, settings, chapter):
    chapter_dir, refs_dir = chapter
    (chapter_dir / "3.png").write_bytes(b"\x89PNG broken")
    window = make_window(qtbot, settings)
    open_with_refs(qtbot, window, chapter_dir, refs_dir)
    window.page_strip.setCurrentRow(2)
    window.tabs.setCurrentIndex(1)
    shown = placeholder(window.result_view)
    assert shown.startswith("Failed:") and "not a readable image" in shown
    assert window.actions.retry_failed.isEnabled() and window.queue.retry_failed.isEnabled()
    close(qtbot, window)


def _ok(dialog):
    dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok).click()


@pytest.mark.parametrize("folder, reason", [("no-such-folder", "does not exist"),
                                            ("empty-folder", "not a ColorFlow models directory")])
def test_settings_refuse_a_bad_models_folder_with_the_reason(qtbot, tmp_path, folder, reason):
    (tmp_path / "empty-folder").mkdir()
    dialog = SettingsDialog(AppSettings(RunSettings(models="tiny")))
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.models.setCurrentText(str(tmp_path / folder))
    _ok(dialog)
    assert dialog.isVisible() and dialog.result() != QDialog.DialogCode.Accepted
    shown = [label.text() for label in dialog.findChildren(QLabel) if label.isVisible()]
    assert any(reason in text and folder in text for text in shown), shown


@pytest.mark.parametrize("choice", ["official", "tiny", "models folder"])
def test_settings_accept_the_presets_and_a_valid_models_folder(qtbot, tiny_models_dir, choice):
    dialog = SettingsDialog(AppSettings(RunSettings(models="tiny")))
    qtbot.addWidget(dialog)
    dialog.show()
    value = str(tiny_models_dir) if choice == "models folder" else choice
    dialog.models.setCurrentText(value)
    _ok(dialog)
    assert dialog.result() == QDialog.DialogCode.Accepted
    assert dialog.result_settings().models == value


def test_engine_hints_reach_the_gui_as_menu_actions(qtbot, settings, chapter, tmp_path, monkeypatch):
    """The official models missing: the engine's message names `--models tiny` (the CLI's words);
    the window says Models ▸ Model manager… and Edit ▸ Settings… instead, wherever it shows it."""
    from engine.models.sources import resolve_models

    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    with pytest.raises(Exception, match="--models tiny"):  # what the CLI says, unchanged
        resolve_models("official")
    window = make_window(qtbot, settings)
    open_with_refs(qtbot, window, *chapter)
    window.settings.run = replace(window.settings.run, models="official")
    window.request_retrieval()
    qtbot.waitUntil(lambda: "Retrieval failed" in placeholder(window.canvas_view), timeout=WAIT_MS)
    canvas = placeholder(window.canvas_view)
    assert "Models ▸ Model manager…" in canvas and "Edit ▸ Settings…" in canvas
    assert_names_real_menus(window, canvas)
    with qtbot.waitSignal(window.run_finished, timeout=WAIT_MS):
        window.colorize_current()
    window.tabs.setCurrentIndex(1)
    result = placeholder(window.result_view)
    assert "not downloaded" in result and "Models ▸ Model manager…" in result
    texts = visible_texts(window)
    offending = [t for t in texts if "--models" in t or "`colorflow" in t]
    assert not offending, offending
    close(qtbot, window)


def test_gui_text_rewrites_the_engines_flag_hints():
    from app.gui_messages import gui_text
    from engine.core.devices import precheck_device
    from engine.core.errors import InputError
    from engine.models.hub_cache import missing_message
    from engine.models.presets import preset_files
    from engine.pipelines.run_guard import oom_advice

    with pytest.raises(InputError) as no_metal:  # not a Mac with Apple silicon
        precheck_device("mps")
    engine_texts = [missing_message(preset_files("official")), oom_advice(RuntimeError("CUDA out of memory")),
                    str(no_metal.value)]
    for text in engine_texts:
        assert " --" in text  # the engine's own words name flags (the CLI keeps them)
        shown = gui_text(text)
        assert " --" not in shown and "`colorflow" not in shown, shown
        assert "Edit ▸ Settings…" in shown
    assert "Models ▸ Model manager…" in gui_text(engine_texts[0])
    assert "smaller Working size" in gui_text(engine_texts[1]) and "Device cpu" in gui_text(engine_texts[1])
