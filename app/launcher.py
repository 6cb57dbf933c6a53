"""GUI entry: `colorflow-gui` or `python main.py` [PROJECT_OR_CHAPTER] [--demo] [--models M] [--screenshot FILE]."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

QUIT_WAIT_MS = 500  # closing the window waits this long for the worker's step, then the process ends


def build_parser(prog: str = "python main.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="ColorFlow desktop. Opens the window; with PATH, opens that chapter folder, "
        ".cbz/.zip or project. Run `colorflow --help` (in a checkout: `python main.py --help-cli`) "
        "for the batch commands.",
    )
    parser.add_argument("path", nargs="?", metavar="PROJECT_OR_CHAPTER")
    parser.add_argument("--demo", action="store_true",
                        help="generate a small chapter with references and open it with the tiny models (offline)")
    parser.add_argument("--models", default=None, help="model source for this session: official, tiny or a folder")
    parser.add_argument("--screenshot", type=Path, metavar="FILE",
                        help="save a screenshot of the window once the page is shown, then exit")
    return parser


def main() -> int:
    """The `colorflow-gui` command (installed with the package)."""
    return run(sys.argv[1:], prog="colorflow-gui")


def run(argv: list[str], prog: str = "python main.py") -> int:
    args = build_parser(prog).parse_args(argv)
    from .platform_check import display_problem, xcb_problem

    problem = display_problem()
    if problem:  # Qt would abort with a core dump and a hint that does not apply
        print(problem, file=sys.stderr)
        return 2
    problem = xcb_problem()
    if problem:  # Qt would abort with a core dump and no library named: say what to install
        print(problem, file=sys.stderr)
        return 1
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from .main_window import MainWindow
    from .settings_store import load_settings

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("ColorFlow")
    from engine.core.resources import resource

    icon = resource("colorflow.png")  # drawn by the desktop build; absent in a source tree
    if icon.is_file():
        from PySide6.QtGui import QIcon

        app.setWindowIcon(QIcon(str(icon)))
    loaded = load_settings()
    settings = loaded.settings
    persist = True
    path = args.path
    if args.demo:
        from engine.io.demo import DEMO_STEPS, DEMO_WORK_SIZE, make_demo_chapter
        from engine.core.paths import cache_dir

        # screentoned pages and two line-art inserts: the Pages dock suggests each page's input style
        chapter, refs = make_demo_chapter(cache_dir() / "demo", pages=4, refs=3, tone=True, line_art=2)
        path = str(chapter)
        # the demo's small working size and few steps: a page in seconds on a CPU
        settings.run = replace(settings.run, models="tiny", size=DEMO_WORK_SIZE, steps=DEMO_STEPS)
        persist = False
    if args.models:
        settings.run = replace(settings.run, models=args.models)
        persist = False
    window = MainWindow(settings, persist_settings=persist)
    window.quit_wait_ms = QUIT_WAIT_MS
    window.show()
    if loaded.problem:
        window.report_settings_problem(loaded.problem)
    if path:
        window.open_path(path)
        if args.demo:
            refs_folder = Path(path).parent / "refs"
            window.document_opened.connect(
                lambda: not window.document.references and window.add_references([str(refs_folder)])
            )
    if args.screenshot:
        target = args.screenshot

        def capture() -> None:
            window.grab().save(str(target))
            window.close()

        def after_page(_index=None) -> None:
            QTimer.singleShot(400, capture)

        if path:
            window.retrieval_shown.connect(after_page)
            QTimer.singleShot(120_000, capture)  # never hang: capture whatever is there
        else:
            QTimer.singleShot(800, capture)
    code = app.exec()
    if window.worker.is_running():
        # A step that cannot stop early (a model load) still runs: end the process rather than
        # linger. Its writes are atomic and the project lock of a gone process is taken over.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    # Delete the widgets now, in order, on this thread: left to the interpreter's exit they go in
    # no set order, the worker's thread objects among them.
    import shiboken6

    shiboken6.delete(window)
    return code
