"""The main window's menus and shortcuts; returns the actions whose enabled state follows the
window's state (no chapter, nothing selected, nothing running)."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMenu, QMessageBox

from engine.core.options import ExportFormat

from .help_dialogs import show_shortcuts, show_user_guide
from .queue_panel import CANCEL_ALL_KEY, CANCEL_PAGE_KEY, RETRY_FAILED_KEY
from .variations import AGAIN_SHORTCUT


@dataclass
class WindowActions:
    """Actions that need a chapter, a selected patch, a running queue or failed pages."""

    need_chapter: list[QAction]
    need_selection: list[QAction]
    need_queue: list[QAction]
    retry_failed: QAction
    export_default: QAction


def add_action(window, menu: QMenu, text: str, slot, shortcut=None) -> QAction:
    action = QAction(text, window)
    if shortcut:
        action.setShortcut(QKeySequence(shortcut))
    action.triggered.connect(slot)
    menu.addAction(action)
    return action


def build_menus(window) -> WindowActions:
    bar = window.menuBar()
    file = bar.addMenu("&File")
    add_action(window, file, "Open chapter folder…", window.open_folder_dialog, QKeySequence.StandardKey.Open)
    add_action(window, file, "Open CBZ/ZIP…", window.open_archive_dialog)
    window.recent_menu = file.addMenu("Open recent")
    add_refs = add_action(window, file, "Add references…", window.add_references_dialog)
    # The format chosen in Settings is the default; the submenu picks another one.
    export_default = add_action(window, file, "Export…", lambda: window.export(window.settings.run.export_format), "Ctrl+E")
    info = add_action(window, file, "Chapter info…", window.chapter_info_dialog)
    export = file.addMenu("Export as")
    export_as = [add_action(window, export, fmt.upper() + "…", lambda _c=False, f=fmt: window.export(f)) for fmt in ExportFormat]
    file.addSeparator()
    add_action(window, file, "Quit", window.close, QKeySequence.StandardKey.Quit)

    edit = bar.addMenu("&Edit")
    undo = window.undo_stack.createUndoAction(window, "Undo")
    undo.setShortcut(QKeySequence.StandardKey.Undo)
    redo = window.undo_stack.createRedoAction(window, "Redo")
    redo.setShortcuts([QKeySequence("Ctrl+Y"), QKeySequence.StandardKey.Redo])
    edit.addActions([undo, redo])
    edit.addSeparator()
    panel = window.reference_panel
    pin = add_action(window, edit, "Pin selected patch", lambda: panel._apply_to_selection("pin"), "P")
    reject = add_action(window, edit, "Reject selected patch", lambda: panel._apply_to_selection("reject"), "R")
    region = add_action(window, edit, "Pin a region…", lambda: window.pin_region_dialog())
    panel.region_pin_requested.connect(window.pin_region_dialog)  # the References panel's "Pin a region…"
    add_action(window, edit, "Settings…", window.settings_dialog)
    window._build_series_ui(file, bar.addMenu("&Pages"))  # Accept page, the Series dock (app/series_window.py)

    run = bar.addMenu("&Run")
    colorize = add_action(window, run, "Colorize page", window.colorize_current, "Ctrl+Return")
    # a new variation of the page beside the others (the Variations panel's seed and guidance)
    again = add_action(window, run, "Colorize again", window.colorize_again, AGAIN_SHORTCUT)
    colorize_all = add_action(window, run, "Colorize all pages", window.colorize_all, "Ctrl+Shift+Return")
    retry = add_action(window, run, "Retry failed pages", window.colorize_failed, RETRY_FAILED_KEY)
    # Esc is a reflex key in paint programs: it asks first; Ctrl+Esc (or the Queue's button)
    # cancels everything at once.
    cancel_ask = add_action(window, run, "Cancel all…", window.ask_cancel_all, "Esc")
    cancel_now = add_action(window, run, "Cancel all now", window.cancel_all, CANCEL_ALL_KEY)
    cancel_page = add_action(window, run, "Cancel page", window.cancel_page, CANCEL_PAGE_KEY)
    run.addSeparator()
    consistency = add_action(window, run, "Check consistency", window.check_consistency)

    view = bar.addMenu("&View")
    toggle = add_action(window, view, "Toggle original / result", window.toggle_original, "Space")
    add_action(window, view, "Next page", lambda: window._step_page(1), "Right")
    add_action(window, view, "Previous page", lambda: window._step_page(-1), "Left")
    add_action(window, view, "Fit to window", lambda: window.fit_current(), "Ctrl+0")
    window.follow_running = add_action(window, view, "Follow the running page", window.follow_running_toggled)
    window.follow_running.setCheckable(True)
    window.follow_running.setChecked(True)  # a run shows its live preview without clicking along
    add_action(window, view, "Zoom in", lambda: window.fit_current(1.25), QKeySequence.StandardKey.ZoomIn)
    add_action(window, view, "Zoom out", lambda: window.fit_current(0.8), QKeySequence.StandardKey.ZoomOut)
    models = bar.addMenu("&Models")
    add_action(window, models, "Model manager…", window.models_dialog)
    help_menu = bar.addMenu("&Help")
    add_action(window, help_menu, "User guide…", lambda: show_user_guide(window), QKeySequence.StandardKey.HelpContents)
    add_action(window, help_menu, "Keyboard shortcuts…", lambda: show_shortcuts(window), "Ctrl+/")
    help_menu.addSeparator()
    add_action(window, help_menu, "About ColorFlow", lambda: QMessageBox.about(
        window, "ColorFlow", "Reference-based manga colorization (ColorFlow: retrieval, in-context "
        "diffusion colorization, guided super-resolution)."))
    return WindowActions(
        need_chapter=[add_refs, info, export_default, *export_as, colorize, again, colorize_all, toggle, region, consistency],
        need_selection=[pin, reject],
        need_queue=[cancel_ask, cancel_now, cancel_page],
        retry_failed=retry,
        export_default=export_default,
    )
