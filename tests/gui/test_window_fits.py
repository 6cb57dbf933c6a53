"""The window on a small screen: first start sized to it, docks that scroll, dialogs that wrap, an
eliding status bar, the layout restored per user; the launcher without a display; a clean quit."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("PySide6")

from PySide6.QtCore import QPoint, QRect, QSize  # noqa: E402
from PySide6.QtWidgets import QAbstractButton, QApplication, QDockWidget, QStyle  # noqa: E402

from app import window_layout  # noqa: E402
from app.settings_store import load_settings, save_settings  # noqa: E402

from window_helpers import REPO_ROOT, WAIT_MS, close, make_window  # noqa: E402

# The smallest screen the issue names, and a common laptop one (available geometry: no task bar here)
SCREENS = {"1366x768": QRect(0, 0, 1366, 768), "1280x720": QRect(0, 0, 1280, 720)}


def on_screen(monkeypatch, rect: QRect) -> QRect:
    """Every window and dialog measures the screen through window_layout.available_geometry."""
    monkeypatch.setattr(window_layout, "available_geometry", lambda *_args, **_kwargs: QRect(rect))
    return rect


def rect_in(widget, window) -> QRect:
    return QRect(widget.mapTo(window, QPoint(0, 0)), widget.size())


def assert_inside(widget, window) -> None:
    box = rect_in(widget, window)
    assert window.rect().contains(box), f"{widget.objectName() or type(widget).__name__} {box} outside {window.rect()}"


def assert_window_fits(window, screen: QRect) -> None:
    QApplication.processEvents()
    assert screen.contains(window.frameGeometry()), (window.frameGeometry(), screen)
    buttons = [b for b in window.queue.findChildren(QAbstractButton) if b.isVisibleTo(window)]
    assert len(buttons) >= 4  # Details, Cancel page, Cancel all, Retry failed
    for button in buttons:
        assert_inside(button, window)
        assert button.width() >= button.minimumSizeHint().width(), button.text()  # not squeezed
    assert_inside(window.statusBar(), window)
    assert_inside(window.device_label, window)
    for dock in window.findChildren(QDockWidget):
        dock.raise_()  # a dock tabbed behind another (Series behind References) is checked as its tab shows it
        QApplication.processEvents()
        assert_inside(dock, window)


@pytest.mark.parametrize("name", SCREENS)
def test_first_start_fits_the_screen_with_details_open(qtbot, settings, monkeypatch, name):
    screen = on_screen(monkeypatch, SCREENS[name])
    window = make_window(qtbot, settings)
    qtbot.waitExposed(window)
    # the numbers: 90% of the screen, never more than 1400x900
    assert window.size() == QSize(min(1400, int(screen.width() * 0.9)), min(900, int(screen.height() * 0.9)))
    hint = window.minimumSizeHint()  # what the central widget and the docks need at least
    assert hint.width() <= 1280 and hint.height() <= 720, hint
    assert_window_fits(window, screen)
    window.queue.set_running(True)  # as during a run: the cancel buttons and Details are enabled
    window.queue.details.setChecked(True)
    window.queue.list.addItems([f"{n:03}.png — queued" for n in range(12)])
    QApplication.processEvents()
    assert window.queue.list.isVisible()
    assert window.height() <= screen.height()  # Details opened inside the window: it did not grow
    assert_window_fits(window, screen)
    window.queue.set_running(False)
    close(qtbot, window)


def test_status_bar_elides_a_long_message_and_keeps_the_device_label(qtbot, settings, monkeypatch):
    screen = on_screen(monkeypatch, SCREENS["1280x720"])
    window = make_window(qtbot, settings)
    qtbot.waitExposed(window)
    QApplication.processEvents()  # the size grip beside the label appears once the window is shown
    label_before = rect_in(window.device_label, window)
    message = "Download stopped: " + " ".join(f"https://huggingface.co/repo/file-{n}.safetensors" for n in range(40))
    window.statusBar().showMessage(message)
    QApplication.processEvents()
    assert window.statusBar().currentMessage() == message  # what callers read back is the whole text
    assert window.statusBar().toolTip() == message  # and the user reads it in the tooltip
    assert rect_in(window.device_label, window) == label_before
    assert_window_fits(window, screen)
    window.statusBar().clearMessage()
    assert window.statusBar().toolTip() == ""
    close(qtbot, window)


def test_layout_is_restored_per_user_when_it_fits_the_screen(qtbot, settings, monkeypatch, tmp_path):
    from PySide6.QtCore import Qt

    on_screen(monkeypatch, QRect(0, 0, 1600, 1000))
    window = make_window(qtbot, settings)
    qtbot.waitExposed(window)
    window.setGeometry(QRect(40, 30, 1500, 940))
    queue_dock = window.findChild(QDockWidget, "Queue")
    window.addDockWidget(Qt.DockWidgetArea.TopDockWidgetArea, queue_dock)  # the user moved the Queue up
    QApplication.processEvents()
    close(qtbot, window)
    path = tmp_path / "settings.json"
    save_settings(settings, path)
    loaded = load_settings(path)
    assert loaded.problem is None

    again = make_window(qtbot, loaded.settings)
    qtbot.waitExposed(again)
    assert again.geometry() == QRect(40, 30, 1500, 940)
    assert again.dockWidgetArea(again.findChild(QDockWidget, "Queue")) == Qt.DockWidgetArea.TopDockWidgetArea
    close(qtbot, again)

    screen = on_screen(monkeypatch, SCREENS["1366x768"])  # the same user on the laptop: too big, not restored
    small = make_window(qtbot, load_settings(path).settings)
    qtbot.waitExposed(small)
    assert small.size() == QSize(1229, 691) and screen.contains(small.frameGeometry())
    assert small.dockWidgetArea(small.findChild(QDockWidget, "Queue")) == Qt.DockWidgetArea.TopDockWidgetArea
    close(qtbot, small)


def test_a_damaged_window_layout_costs_only_itself(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text('{"version": 1, "recent": ["/a"], "window": {"geometry": "big", "docks": 7}}')
    loaded = load_settings(path)
    assert loaded.settings.recent == ["/a"] and loaded.settings.window == {}
    assert "window" in loaded.problem and "kept as settings.json.damaged-" in loaded.problem


def test_model_manager_after_a_long_error_stays_within_the_screen(qtbot, monkeypatch, tmp_path):
    import engine.models.hub as hub
    from app.model_dialog import ModelDialog
    from app.worker import EngineWorker
    from engine.core.errors import ColorFlowError

    screen = on_screen(monkeypatch, SCREENS["1366x768"])
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    # a hub error as long as the issue's: URLs and paths, words too long to wrap at spaces
    reason = " ".join(f"https://huggingface.co/TencentARC/ColorFlow/resolve/{n:040x}/GraySD/"
                      "diffusion_pytorch_model.safetensors" for n in range(20))
    assert len(reason) > 2000

    def failing_download(*_args, **_kwargs):
        raise ColorFlowError(reason)

    monkeypatch.setattr(hub, "download", failing_download)
    worker = EngineWorker()
    try:
        dialog = ModelDialog(worker)
        qtbot.addWidget(dialog)
        dialog.show()
        qtbot.waitExposed(dialog)
        assert screen.contains(dialog.frameGeometry())
        for row in range(dialog.tree.topLevelItemCount()):  # file names whole: column wide enough, and the tooltip
            item = dialog.tree.topLevelItem(row)
            needed = dialog.tree.fontMetrics().horizontalAdvance(item.text(0))
            assert dialog.tree.columnWidth(0) >= needed and item.toolTip(0) == item.text(0)
        width = dialog.width()
        dialog.start_download()
        qtbot.waitUntil(lambda: dialog.task() is None, timeout=WAIT_MS)
        assert dialog.summary.text() == f"Download stopped: {reason}"
        summary = dialog.summary  # all of it can be read: as tall as its wrapped lines (it scrolls)
        qtbot.waitUntil(lambda: summary.height() >= summary.heightForWidth(summary.width()) > 10 * summary.fontMetrics().height())
        assert dialog.width() == width and screen.contains(dialog.frameGeometry())
        close_button = next(b for b in dialog.findChildren(QAbstractButton) if b.text() == "Close")
        assert close_button.isVisible() and dialog.rect().contains(rect_in(close_button, dialog))
        dialog.close()
    finally:
        worker.shutdown()


def test_chapter_info_shows_its_placeholders_whole(qtbot):
    from PySide6.QtWidgets import QLineEdit, QStyleOptionFrame

    from app.chapter_info import ChapterInfoDialog

    dialog = ChapterInfoDialog({}, "Chapter 1")
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    edits = [e for e in dialog.findChildren(QLineEdit) if e.placeholderText()]
    assert len(edits) == 2
    for edit in edits:
        option = QStyleOptionFrame()
        edit.initStyleOption(option)
        room = edit.style().subElementRect(QStyle.SubElement.SE_LineEditContents, option, edit).width()
        room -= 2 * 2  # QLineEdit's own horizontal margin inside its contents
        assert room >= edit.fontMetrics().horizontalAdvance(edit.placeholderText()), edit.placeholderText()


def test_a_lock_error_leaves_no_stale_opening_status(qtbot, settings, chapter, monkeypatch):
    import app.window_jobs as window_jobs
    from engine.io.projectlock import ProjectLock

    warnings = []
    monkeypatch.setattr(window_jobs.QMessageBox, "warning", lambda _parent, _title, text: warnings.append(text))
    chapter_dir, _refs = chapter
    window = make_window(qtbot, settings)
    with ProjectLock(chapter_dir.parent / "chapter.colorflow"):  # another window of this process has it
        window.open_path(str(chapter_dir))
        assert window.statusBar().currentMessage().startswith("Opening")
        qtbot.waitUntil(lambda: bool(warnings), timeout=WAIT_MS)
    assert "in use" in warnings[0]
    assert "Opening" not in window.statusBar().currentMessage()
    close(qtbot, window)


# ---- the launcher ---------------------------------------------------------------------------

def _gui_env(tmp_path: Path, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env.update(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "config"),
               XDG_CACHE_HOME=str(tmp_path / "cache"), XDG_DATA_HOME=str(tmp_path / "data"),
               COLORFLOW_CONFIG_DIR=str(tmp_path / "cf-config"), COLORFLOW_CACHE_DIR=str(tmp_path / "cf-cache"),
               OMP_NUM_THREADS="1", **extra)
    return env


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a display is a Linux (X11/Wayland) matter")
def test_no_display_says_so_in_one_line_and_exits_2(tmp_path):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "main.py")], env=_gui_env(tmp_path),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == ["no display: run `colorflow` for batch work, or set QT_QPA_PLATFORM=offscreen"], lines


def test_missing_library_message_names_the_batch_command_as_typed():
    from app.platform_check import xcb_problem

    message = xcb_problem({"QT_QPA_PLATFORM": "xcb"}, "linux", lambda soname: soname != "libxcb-cursor.so.0")
    assert "`colorflow colorize" in message and "ColorFlow colorize" not in message


def _run_until_exit(command: list[str], env: dict, marker: Path, timeout: float = 300) -> tuple[int, str, float]:
    """Run `command`; the seconds from `marker` appearing to the process having exited."""
    process = subprocess.Popen(command, env=env, cwd=str(marker.parent), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    seen = None
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if seen is None and marker.exists():
            seen = time.monotonic()
        time.sleep(0.02)
    ended = time.monotonic()
    if process.poll() is None:
        process.kill()
    _out, err = process.communicate()
    assert seen is not None, err
    return process.returncode, err, ended - seen


@pytest.mark.slow
def test_screenshot_of_a_chapter_is_the_window_and_the_run_quits_cleanly_and_at_once(tmp_path, tiny_models_dir,
                                                                                      chapter):
    """`colorflow-gui CHAPTER --models DIR --screenshot PNG` (a chapter with references in its project): the image
    is the window at first start, and the process exits at once after writing it, without Qt warnings. (The
    --demo form runs in the wheel and frozen-bundle tests.)"""
    from engine.project.state import ChapterProject

    chapter_dir, refs_dir = chapter
    project = ChapterProject(folder=chapter_dir.parent / "chapter.colorflow")
    project.add_references([str(p) for p in sorted(refs_dir.glob("*.png"))])
    project.save()
    shot = tmp_path / "shot.png"
    command = [sys.executable, str(REPO_ROOT / "main.py"), str(chapter_dir), "--models", str(tiny_models_dir),
               "--screenshot", str(shot)]
    code, err, after = _run_until_exit(command, _gui_env(tmp_path, QT_QPA_PLATFORM="offscreen"), shot)
    assert code == 0, err
    assert "QObject" not in err, err
    assert after < 2.0
    with Image.open(shot) as image:
        assert image.size == (720, 720)  # the window at first start: 90% of the offscreen platform's 800x800 screen


# Closes the window while the worker is busy (the demo chapter opening: models built and loaded),
# after writing `marker`: the moment the user closed it.
CLOSE_WHILE_BUSY = """
import sys
from pathlib import Path
sys.path.insert(0, {repo!r})
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
import app.launcher as launcher
import app.main_window as main_window
app = QApplication(sys.argv[:1])

def close_when_busy():
    windows = [w for w in app.topLevelWidgets() if isinstance(w, main_window.MainWindow) and w.isVisible()]
    if windows and windows[0].worker.busy:
        Path({marker!r}).write_text("closing")
        windows[0].close()
    else:
        QTimer.singleShot(50, close_when_busy)

QTimer.singleShot(300, close_when_busy)
sys.exit(launcher.run(["--demo"]))
"""


def test_closing_while_a_job_runs_ends_the_process_within_a_second(tmp_path):
    marker = tmp_path / "closed"
    script = tmp_path / "close_while_busy.py"
    script.write_text(CLOSE_WHILE_BUSY.format(repo=str(REPO_ROOT), marker=str(marker)))
    code, err, after = _run_until_exit([sys.executable, str(script)], _gui_env(tmp_path, QT_QPA_PLATFORM="offscreen"),
                                       marker)
    assert code == 0, err
    assert "QObject" not in err and "QThread" not in err, err
    assert after < 2.0, f"the process lingered {after:.1f} s after the window closed"
