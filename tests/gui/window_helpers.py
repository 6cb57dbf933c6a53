"""Helpers of the main-window tests: open a window, open a chapter with references, read the canvas."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("PySide6")

from app.main_window import MainWindow  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
WAIT_MS = 180_000


def make_window(qtbot, settings) -> MainWindow:
    window = MainWindow(settings, persist_settings=False)
    qtbot.addWidget(window)
    window.show()
    return window


def open_with_refs(qtbot, window: MainWindow, chapter_dir: Path, refs_dir: Path | None) -> None:
    """Open a chapter (adding references from `refs_dir` when it has none) and wait until the
    first page's retrieval is on screen."""
    with qtbot.waitSignal(window.document_opened, timeout=WAIT_MS):
        window.open_path(str(chapter_dir))
    if window.document.references:
        qtbot.waitUntil(lambda: bool(window.reference_panel._picks), timeout=WAIT_MS)
    else:
        with qtbot.waitSignal(window.retrieval_shown, timeout=WAIT_MS):
            window.add_references([str(refs_dir)])


def canvas_image(window: MainWindow):
    return window.canvas_view._pixmap.pixmap().toImage()


def picked_refs(window: MainWindow) -> set[str]:
    return {p["ref"] for row in window.reference_panel._picks for p in row}


def close(qtbot, window: MainWindow) -> None:
    window.close()
    assert not window.worker.is_running()
