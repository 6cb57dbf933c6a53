"""Screenshots of Pin a region… and the Consistency dock (docs/screenshots/region-pin.png, drift-list.png),
no models: a generated chapter of four colored pages whose top-left regions retrieved the same patch of a
character sheet, page 3 deliberately recolored (a purple shirt instead of green); its drift is listed first.
Usage: xvfb-run -s "-screen 0 1366x768x24" python scripts/screenshots_region_drift.py OUT_DIR"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PAGE = (512, 768)
SKIN, HAIR = (240, 200, 170), (215, 120, 50)
SHIRT, DRIFTED_SHIRT = (70, 140, 90), (120, 80, 170)  # page 3's shirt came out purple instead of green


def character(size: tuple[int, int], shirt, at: tuple[int, int], scale: float, color: bool = True) -> Image.Image:
    """A flat-colored figure with black ink outlines on white paper (gray when `color` is False)."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    x, y = at

    def shape(kind, box, fill):
        box = [x + round(v * scale) if i % 2 == 0 else y + round(v * scale) for i, v in enumerate(box)]
        fill = fill if color else (sum(fill) // 3,) * 3
        getattr(draw, kind)(box, fill=fill, outline="black", width=4)

    shape("rectangle", (40, 190, 260, 420), shirt)
    shape("ellipse", (40, 10, 260, 210), HAIR)
    shape("ellipse", (70, 70, 230, 240), SKIN)
    shape("ellipse", (105, 130, 130, 160), (40, 40, 40))
    shape("ellipse", (170, 130, 195, 160), (40, 40, 40))
    draw.rectangle([0, 0, size[0] - 1, size[1] - 1], outline="black", width=6)
    return image


def record(page: str) -> dict:
    """Every page's top-left region retrieved the sheet's top-left patch: one recurring region."""
    own = [[{"ref": f"/refs/{page}-{q}.png", "patch": "full", "box": None}] for q in ("TR", "BL", "BR")]
    return {"work_size": list(PAGE), "page_size": list(PAGE), "content_box": [0, 0, *PAGE],
            "picks": [[{"ref": "sheet.png", "patch": "TL", "box": [0, 0, 384, 576]}], *own], "accepted_used": []}


def make_project(root: Path):
    from engine.io.chapter import open_chapter
    from engine.project.state import ChapterProject

    shutil.rmtree(root, ignore_errors=True)
    chapter, colored = root / "chapter", {}
    chapter.mkdir(parents=True)
    for number, (at, scale) in enumerate((((40, 60), 1.0), ((90, 40), 0.9), ((30, 90), 1.1), ((70, 70), 1.0)), 1):
        character(PAGE, SHIRT, at, scale, color=False).convert("L").save(chapter / f"{number}.png")
        colored[f"{number}.png"] = character(PAGE, DRIFTED_SHIRT if number == 3 else SHIRT, at, scale)
    sheet = root / "sheet.png"
    character((420, 480), SHIRT, (60, 20), 1.0).save(sheet)
    project = ChapterProject.open_or_create(root / "project")
    project.inputs = [str(chapter)]
    project.sync_pages([(s.name, s.ref) for s in open_chapter([str(chapter)]).sources])
    project.folder.mkdir()
    for number, (name, image) in enumerate(colored.items(), 1):
        file = project.folder / f"00{number}_{number}.png"
        image.save(file)
        project.record_variation(name, file, "key", {"seed": 0, "retrieval": record(name)}, replace=None)
    project.save()
    return project, sheet


def main(out: Path) -> None:
    """Both screenshots, in a window of their own; scripts/screenshots.py calls this after its own."""
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow
    from app.settings import AppSettings
    from engine.core.paths import cache_dir

    app = QApplication.instance() or QApplication(sys.argv[:1])  # noqa: F841 - must outlive the widgets
    out.mkdir(parents=True, exist_ok=True)
    project, sheet = make_project(cache_dir() / "screenshot-drift")
    window = MainWindow(AppSettings(), persist_settings=False)
    window.show()

    def wait_until(done, seconds: float = 60) -> None:
        end = time.monotonic() + seconds
        while not done() and time.monotonic() < end:
            QTest.qWait(50)

    window.open_path(str(project.folder))
    wait_until(lambda: window.document is not None)
    QTest.qWait(500)
    dialog = window.pin_region_dialog(str(sheet))
    dialog.canvas.set_box((90, 20, 330, 450))  # the character of the sheet, hair to shirt
    dialog.query_buttons["TR"].click()
    QTest.qWait(500)
    dialog.grab().save(str(out / "region-pin.png"))
    dialog.reject()

    panel = window.drift_panel
    window.check_consistency()
    wait_until(lambda: panel.list.count() > 0)
    window.resizeDocks([panel.parentWidget()], [330], Qt.Orientation.Vertical)
    window.page_strip.setCurrentRow(2)  # the drifted page, in the Result tab
    window.tabs.setCurrentIndex(1)
    QTest.qWait(1000)
    window.grab().save(str(out / "drift-list.png"))
    window.close()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "screenshots"))
