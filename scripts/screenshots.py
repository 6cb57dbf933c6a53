"""Screenshots of every screen with the demo chapter and tiny models (for the README and for
checking the GUI by eye). Usage: xvfb-run python scripts/screenshots.py OUT_DIR"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(out: Path) -> None:
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow
    from app.model_dialog import ModelDialog
    from app.settings import AppSettings, SettingsDialog
    from engine.io.demo import DEMO_STEPS, DEMO_WORK_SIZE, make_demo_chapter
    from engine.core.paths import cache_dir

    out.mkdir(parents=True, exist_ok=True)
    app = QApplication(sys.argv[:1])  # noqa: F841 - must outlive the widgets
    chapter, refs = make_demo_chapter(cache_dir() / "screenshot-demo", pages=4, refs=3)
    settings = AppSettings()
    settings.run = replace(settings.run, models="tiny", size=DEMO_WORK_SIZE, steps=DEMO_STEPS)
    window = MainWindow(settings, persist_settings=False)
    window.resize(1400, 900)
    window.show()

    def wait_for(signal, timeout_ms: int = 1_200_000) -> None:
        loop = QEventLoop()
        signal.connect(loop.quit)
        QTimer.singleShot(timeout_ms, loop.quit)
        loop.exec()

    def settle(ms: int = 500) -> None:
        loop = QEventLoop()
        QTimer.singleShot(ms, loop.quit)
        loop.exec()

    window.open_path(str(chapter))
    wait_for(window.document_opened)
    if not window.document.references:
        window.add_references([str(refs)])
    wait_for(window.retrieval_shown)
    settle()
    from PySide6.QtCore import QEvent

    panel = window.reference_panel
    panel.patch_buttons[("BL", 0)].click()  # reject one patch: it moves to the Rejected list
    panel._apply_to_selection("reject")
    wait_for(window.retrieval_shown)
    settle()
    QApplication.sendEvent(panel.patch_buttons[("TR", 0)], QEvent(QEvent.Type.Enter))  # hover
    settle()
    window.grab().save(str(out / "canvas.png"))
    QApplication.sendEvent(panel.patch_buttons[("TR", 0)], QEvent(QEvent.Type.Leave))
    window.tabs.setCurrentIndex(1)
    window.colorize_all()
    wait_for(window.worker.preview)
    settle(300)
    window.grab().save(str(out / "running.png"))
    wait_for(window.run_finished)
    window.page_strip.setCurrentRow(0)
    settle(1500)
    window.tabs.setCurrentIndex(1)
    settle()
    window.grab().save(str(out / "result.png"))
    window.tabs.setCurrentIndex(2)
    window.compare_view.mode.setChecked(True)
    settle()
    window.grab().save(str(out / "compare.png"))
    dialog = SettingsDialog(settings, window)
    dialog.show()
    settle()
    dialog.grab().save(str(out / "settings.png"))
    dialog.close()
    models = ModelDialog(window.worker, window)
    models.show()
    settle()
    models.grab().save(str(out / "models.png"))
    models.close()
    window.close()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "screenshots"))
