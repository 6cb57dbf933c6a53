"""Screenshots of every screen with the demo chapter and tiny models (for the README, the user guide
and checking the GUI by eye), on a 1366x768 laptop screen.
Usage: xvfb-run -s "-screen 0 1366x768x24" python scripts/screenshots.py OUT_DIR"""

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
    import shutil

    shutil.rmtree(cache_dir() / "screenshot-demo", ignore_errors=True)  # no project (variations) left from a last run
    chapter, refs = make_demo_chapter(cache_dir() / "screenshot-demo", pages=4, refs=3)
    settings = AppSettings()
    settings.run = replace(settings.run, models="tiny", size=DEMO_WORK_SIZE, steps=DEMO_STEPS)
    window = MainWindow(settings, persist_settings=False)  # sized to the screen, as at a first start
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
    window.colorize_again()  # a second variation of page 1, beside the first
    wait_for(window.run_finished)
    settle(1500)
    window.grab().save(str(out / "variations.png"))
    window.tabs.setCurrentIndex(2)
    window.compare_view.mode.setChecked(True)
    settle()
    window.grab().save(str(out / "compare.png"))
    shoot_failed_page(window, out, wait_for, settle)
    dialog = SettingsDialog(settings, window)
    dialog.show()
    settle()
    dialog.grab().save(str(out / "settings.png"))
    dialog.close()
    models = ModelDialog(window.worker, window)
    models.show()
    settle()
    models.grab().save(str(out / "models.png"))
    models._end(f"Download stopped: {FAILED_DOWNLOAD}")  # as a failed download ends: the line wraps, the dialog stays on the screen
    settle()
    models.grab().save(str(out / "models-error.png"))
    models.close()
    window.close()


FAILED_DOWNLOAD = ("download failed: https://huggingface.co/TencentARC/ColorFlow/resolve/main/"
                   "GraySD/checkpoint-200000/unet_lora.safetensors: connection reset by peer after 3 retries "
                   "(HTTPSConnectionPool(host='cdn-lfs.huggingface.co', port=443): Read timed out. "
                   "(read timeout=10)); check the network or a proxy, then press Download again")


def shoot_failed_page(window, out: Path, wait_for, settle) -> None:
    """Page 2 made unreadable: colorized, it fails; its Result tab shows the reason and the fix."""
    document = window.document
    broken = Path(document.chapter.sources[1].path)
    saved = broken.read_bytes()
    try:
        broken.write_bytes(b"not an image")
        window.page_strip.setCurrentRow(1)
        window.colorize_pages([document.page_names[1]])
        wait_for(window.run_finished)
        settle(800)
        window.tabs.setCurrentIndex(1)
        settle()
        window.grab().save(str(out / "failed.png"))
    finally:
        broken.write_bytes(saved)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "screenshots"))
