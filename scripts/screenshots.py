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
    # four screentoned pages, then two line-art inserts (lines only; lines with flat shading)
    chapter, refs = make_demo_chapter(cache_dir() / "screenshot-demo", pages=4, refs=3, tone=True, line_art=2)
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
    shoot_line_art_pages(window, out, wait_for, settle)
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
    window.page_strip.setCurrentRow(LINE_ART_ROW + 1)  # the shaded line-art page, colored by the PixArt family
    settle(1500)
    window.grab().save(str(out / "line-art-result.png"))
    window.page_strip.setCurrentRow(0)
    settle(1500)
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
    dialog.input_style.showPopup()  # the input styles, line art among them
    settle()
    grab_with_popup(dialog, out / "settings-input-style.png", dialog.input_style.view().window())
    dialog.input_style.hidePopup()
    dialog.close()
    models = ModelDialog(window.worker, window)
    models.show()
    settle()
    models.grab().save(str(out / "models.png"))
    models._end(f"Download stopped: {FAILED_DOWNLOAD}")  # as a failed download ends: the line wraps, the dialog stays on the screen
    settle()
    models.grab().save(str(out / "models-error.png"))
    models.close()
    models = ModelDialog(window.worker, window, line_art_style="sketch")  # as after picking sketch in Settings
    models.show()
    for _ in range(100):  # the line-art row is checked in the worker
        if models.line_art_status is not None:
            break
        settle(200)
    settle()
    models.grab().save(str(out / "models-line-art.png"))
    models.close()
    window.close()
    from screenshots_region_drift import main as shoot_region_pin_and_drift  # a generated project, no models

    shoot_region_pin_and_drift(out)
    from screenshots_series import shoot as shoot_series  # series-panel.png, series-references.png: a generated series

    shoot_series(out)


FAILED_DOWNLOAD = ("download failed: https://huggingface.co/TencentARC/ColorFlow/resolve/main/"
                   "GraySD/checkpoint-200000/unet_lora.safetensors: connection reset by peer after 3 retries "
                   "(HTTPSConnectionPool(host='cdn-lfs.huggingface.co', port=443): Read timed out. "
                   "(read timeout=10)); check the network or a proxy, then press Download again")


LINE_ART_ROW = 4  # the demo chapter's first line-art insert (the sketch page); the next is shaded


def grab_with_popup(widget, path: Path, popup=None) -> None:
    """`widget` as on the screen, with open menus or lists over it (a popup is a window of its own, which
    widget.grab() leaves out); `popup` widens the area to hold it."""
    from PySide6.QtWidgets import QApplication

    area = widget.frameGeometry() if popup is None else widget.frameGeometry().united(popup.geometry())
    QApplication.primaryScreen().grabWindow(0, area.x(), area.y(), area.width(), area.height()).save(str(path))


def shoot_page_menu(window, row: int, path: Path) -> None:
    """A right-click on a page: its Input style menu open (each style with its meaning), the Pages dock's
    panel below it with auto's suggestion and the reason."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    strip = window.page_strip
    position = strip.visualItemRect(strip.item(row)).center()

    def open_styles() -> None:
        menu = QApplication.activePopupWidget()
        (action,) = [a for a in menu.actions() if a.menu() is not None]
        menu.setActiveAction(action)
        action.menu().popup(menu.mapToGlobal(menu.actionGeometry(action).topRight()))
        QTimer.singleShot(600, lambda: grab_and_close(menu, action.menu()))

    def grab_and_close(menu, styles) -> None:
        grab_with_popup(window, path)
        styles.close()
        menu.close()

    QTimer.singleShot(600, open_styles)
    window._page_style_menu(position)  # modal until closed above


def shoot_line_art_pages(window, out: Path, wait_for, settle) -> None:
    """The line-art inserts get their own styles in the Pages dock (the sketch page's menu is shot first, beside
    auto's suggestion and its reason); the Canvas shows the shading composite of the sketch-shading page."""
    for row, style in ((LINE_ART_ROW, "sketch"), (LINE_ART_ROW + 1, "sketch-shading")):
        window.page_strip.setCurrentRow(row)
        wait_for(window.retrieval_shown)
        settle()
        if style == "sketch":  # before it is chosen: the suggestion is offered, not applied
            shoot_page_menu(window, row, out / "page-style.png")
        window.set_page_style(style)
        wait_for(window.retrieval_shown)
        settle()
    window.grab().save(str(out / "line-art.png"))
    window.page_strip.setCurrentRow(0)
    wait_for(window.retrieval_shown)
    settle()


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
