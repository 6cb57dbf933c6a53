"""Region pins and the drift list in the window, without models: the rectangle drawn on a reference
becomes a RegionPin of hand-computed fractions; OK, undo and redo change the project and its file;
a reopened project shows the pin in its canvas cell; the Consistency dock lists pages as the drift
check ranks them and "Pin and re-run" pins the compared region and colors the drifted page again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("PySide6")

from PySide6.QtCore import QPoint, Qt  # noqa: E402
from PySide6.QtWidgets import QDialogButtonBox  # noqa: E402

from app import jobs  # noqa: E402
from app.region_pin_dialog import DISPLAY, RegionPinDialog  # noqa: E402
from app.settings import AppSettings  # noqa: E402
from engine.core.options import RunSettings  # noqa: E402
from engine.io.chapter import open_chapter  # noqa: E402
from engine.project.state import ChapterProject  # noqa: E402
from engine.project.store import PROJECT_FILE  # noqa: E402
from engine.rap.curation import RegionPin  # noqa: E402
from window_helpers import close, make_window  # noqa: E402

WAIT_MS = 20_000
PAGE_SIZE = (256, 384)  # the pages, their colored results and the working size: no scaling anywhere
CANVAS_CELL = (128, 192)  # GEOMETRY.md: a 256x384 page gives a 512x768 canvas of 4x4 cells of W/2 x H/2


@pytest.fixture
def settings(tmp_path) -> AppSettings:
    # no models are ever loaded here: retrieval and the run are replaced where the test needs them
    return AppSettings(RunSettings(models="tiny", device="cpu", steps=1, size="256x384",
                                   cache_dir=str(tmp_path / "embeddings")))


@pytest.fixture(autouse=True)
def no_device_probe(monkeypatch):
    monkeypatch.setattr(jobs, "device_in_words", lambda choice: "cpu")  # no torch import in the worker


def hand_cell(row: int, col: int) -> tuple[int, int, int, int]:
    """A canvas cell's pasted area (GEOMETRY.md): the W/2 x H/2 cell less its 1-px white frame."""
    cw, ch = CANVAS_CELL
    return col * cw + 1, row * ch + 1, col * cw + cw - 1, row * ch + ch - 1


# rank 1, 2, 3 of each query region as (row, col) in the canvas (GEOMETRY.md, "Placement")
HAND_PLACEMENT = {"TL": ((1, 0), (0, 1), (0, 0)), "TR": ((1, 3), (0, 2), (0, 3)),
                  "BL": ((2, 0), (3, 1), (3, 0)), "BR": ((2, 3), (3, 2), (3, 3))}


def fake_retrieval(monkeypatch, calls: list[str]) -> None:
    """Retrieval without models: every slot holds the first reference's whole image, except the slots the
    page's effective region pins take (as engine.rap.retrieval places them: patch "region", pinned)."""

    def retrieve_view(session, document, index, settings, emit=None):
        name = document.page_names[index]
        calls.append(name)
        regions = {pin.slot: pin for pin in document.project.choices_for(name).regions}
        ref = document.references[0].ref
        picks = [[{"ref": regions[(q, r)].ref, "patch": "region", "score": 0.0, "pinned": True}
                  if (q, r) in regions else {"ref": ref, "patch": "full", "score": 0.5, "pinned": False}
                  for r in (1, 2, 3)] for q in HAND_PLACEMENT]
        thumbs = [[Image.new("RGB", (32, 48), (120, 120, 120)) for _ in row] for row in picks]
        tiles = [[hand_cell(*cell) for cell in HAND_PLACEMENT[q]] for q in HAND_PLACEMENT]
        return jobs.RetrievalView(index, picks, thumbs, Image.new("RGB", (512, 768), (90, 90, 90)),
                                  (128, 192, 384, 576), [], tiles, [(128, 192, 320, 480)] * 4, [])

    monkeypatch.setattr(jobs, "retrieve_view", retrieve_view)


def gray_chapter(folder: Path, pages: int) -> Path:
    folder.mkdir(parents=True)
    for number in range(1, pages + 1):
        Image.new("L", PAGE_SIZE, 40 * number).save(folder / f"{number}.png")
    return folder


def new_project(tmp_path: Path, pages: int, references: list[str] = ()) -> ChapterProject:
    chapter = gray_chapter(tmp_path / "chapter", pages)
    project = ChapterProject.open_or_create(tmp_path / "project")
    project.inputs = [str(chapter)]
    project.sync_pages([(s.name, s.ref) for s in open_chapter([str(chapter)]).sources])
    project.add_references(list(references))
    project.save()
    return project


def open_project(qtbot, window, folder: Path) -> None:
    with qtbot.waitSignal(window.document_opened, timeout=WAIT_MS):
        window.open_path(str(folder))


def saved_regions(folder: Path, page: str) -> list[dict]:
    data = json.loads((folder / PROJECT_FILE).read_text(encoding="utf-8"))
    return data["curation"]["pages"].get(page, {}).get("regions", [])


def drag(qtbot, widget, start: tuple[int, int], end: tuple[int, int]) -> None:
    qtbot.mousePress(widget, Qt.MouseButton.LeftButton, pos=QPoint(*start))
    qtbot.mouseMove(widget, QPoint((start[0] + end[0]) // 2, (start[1] + end[1]) // 2))
    qtbot.mouseMove(widget, QPoint(*end))
    qtbot.mouseRelease(widget, Qt.MouseButton.LeftButton, pos=QPoint(*end))


def test_dragged_rectangle_and_spin_boxes_give_the_pin_in_fractions_of_the_reference(qtbot, tmp_path):
    ref = tmp_path / "ref.png"
    Image.new("RGB", (200, 100), (200, 40, 40)).save(ref)
    dialog = RegionPinDialog([("ref.png", str(ref))], str(ref), page="1.png")
    qtbot.addWidget(dialog)
    dialog.show()
    canvas = dialog.canvas
    assert DISPLAY == 400 and (canvas.width(), canvas.height()) == (400, 200)  # long side 400 px: scale 2
    assert not dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).isEnabled()  # nothing drawn yet
    drag(qtbot, canvas, (40, 30), (240, 150))  # on screen; /2 -> image pixels (20, 15) to (120, 75)
    assert [dialog.box_spins[k].value() for k in ("x", "y", "width", "height")] == [20, 15, 100, 60]
    dialog.query_buttons["BR"].click()
    dialog.rank.setValue(2)
    # 20/200, 15/100, 120/200, 75/100
    assert dialog.pin() == RegionPin(str(ref), (0.1, 0.15, 0.6, 0.75), "BR", 2)
    assert dialog.page() == "1.png"
    drag(qtbot, canvas, (380, 190), (300, 100))  # dragged up-left: the same rectangle as down-right
    assert dialog.pin().box == (150 / 200, 50 / 100, 190 / 200, 95 / 100)

    # the keyboard way: the spin boxes set the rectangle (and the canvas follows)
    for key, value in (("x", 50), ("y", 25), ("width", 100), ("height", 50)):
        dialog.box_spins[key].setValue(value)
    assert dialog.pin().box == (0.25, 0.25, 0.75, 0.75)
    assert canvas.box == (50, 25, 150, 75)
    dialog.box_spins["width"].setValue(0)  # retyping the width: no rectangle for a moment, the rest kept
    assert [dialog.box_spins[k].value() for k in ("x", "y", "height")] == [50, 25, 50] and canvas.box is None
    assert not dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).isEnabled()
    dialog.box_spins["width"].setValue(60)
    assert canvas.box == (50, 25, 110, 75)
    dialog.box_spins["width"].setValue(100)
    dialog.scope.setCurrentIndex(1)
    assert dialog.page() is None  # the whole chapter
    assert dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).isEnabled()


def test_ok_undo_redo_change_the_project_and_its_file_and_the_reopened_project_shows_the_pin(
        qtbot, settings, tmp_path, monkeypatch):
    ref = tmp_path / "refs" / "sheet.png"
    ref.parent.mkdir()
    Image.new("RGB", (400, 200), (30, 160, 60)).save(ref)
    project = new_project(tmp_path, pages=2, references=[str(ref)])
    retrieved: list[str] = []
    fake_retrieval(monkeypatch, retrieved)
    window = make_window(qtbot, settings)
    open_project(qtbot, window, project.folder)
    qtbot.waitUntil(lambda: retrieved == ["1.png"] and window._view is not None, timeout=WAIT_MS)
    assert window.region_marks() == []

    dialog = window.pin_region_dialog(str(ref))
    for key, value in (("x", 100), ("y", 50), ("width", 200), ("height", 100)):
        dialog.box_spins[key].setValue(value)
    dialog.query_buttons["TR"].click()
    dialog.rank.setValue(3)
    expected = RegionPin(str(ref), (0.25, 0.25, 0.75, 0.75), "TR", 3)  # 100/400, 50/200, 300/400, 150/200
    with qtbot.waitSignal(window.retrieval_shown, timeout=WAIT_MS):
        dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
    curation = window.document.project.curation
    assert curation.pages["1.png"].regions == [expected] and curation.chapter.regions == []
    assert saved_regions(project.folder, "1.png") == [expected.to_json()]
    assert retrieved == ["1.png", "1.png"]  # retrieval ran again, as after a pin
    # TR rank 3 sits in canvas cell (row 0, col 3): x 385..511, y 1..191
    assert window.region_marks() == [((385, 1, 511, 191), "pinned region")]
    tooltip = window.reference_panel.patch_buttons[("TR", 2)].toolTip()
    assert tooltip.startswith("your region of sheet.png")

    with qtbot.waitSignal(window.retrieval_shown, timeout=WAIT_MS):
        window.undo_stack.undo()
    assert "1.png" not in window.document.project.curation.pages
    assert saved_regions(project.folder, "1.png") == []
    assert window.region_marks() == []
    with qtbot.waitSignal(window.retrieval_shown, timeout=WAIT_MS):
        window.undo_stack.redo()
    assert saved_regions(project.folder, "1.png") == [expected.to_json()]

    # the References panel's menu opens the dialog on that reference; a new rectangle in the same slot
    # replaces the pin, and undo gives the first one back (not an empty slot)
    [action] = [a for a in window.reference_panel.reference_menu(str(ref)).actions() if a.text() == "Pin a region…"]
    action.trigger()
    [dialog] = [d for d in window.findChildren(RegionPinDialog) if d.isVisible()]
    assert dialog.ref() == str(ref) and dialog.page() == "1.png"
    for key, value in (("x", 0), ("y", 0), ("width", 40), ("height", 20)):
        dialog.box_spins[key].setValue(value)
    dialog.query_buttons["TR"].click()
    dialog.rank.setValue(3)
    assert "Replaces the region from sheet.png" in dialog.replaces.text()
    with qtbot.waitSignal(window.retrieval_shown, timeout=WAIT_MS):
        dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
    second = RegionPin(str(ref), (0.0, 0.0, 0.1, 0.1), "TR", 3)  # 40/400, 20/200
    assert saved_regions(project.folder, "1.png") == [second.to_json()]
    with qtbot.waitSignal(window.retrieval_shown, timeout=WAIT_MS):
        window.undo_stack.undo()
    assert saved_regions(project.folder, "1.png") == [expected.to_json()]
    close(qtbot, window)

    reopened = make_window(qtbot, settings)
    open_project(qtbot, reopened, project.folder)
    qtbot.waitUntil(lambda: reopened._view is not None and reopened.region_marks() != [], timeout=WAIT_MS)
    assert reopened.document.project.curation.pages["1.png"].regions == [expected]
    assert reopened.region_marks() == [((385, 1, 511, 191), "pinned region")]
    close(qtbot, reopened)


# --- the drift list ---------------------------------------------------------------------------------
ORANGE, BLUE = (205, 120, 80), (80, 120, 205)
TL_BOX = [0, 0, 192, 288]  # the TL query region of a 256x384 page: 3/4 of the width and height


def record(page: str) -> dict:
    """A retrieval record whose TL region retrieved the same reference patch on every page (one recurring
    region); the other regions retrieved a patch of their own."""
    own = [[{"ref": f"/refs/{page}-{q}.png", "patch": "full", "box": None}] for q in ("TR", "BL", "BR")]
    return {"work_size": list(PAGE_SIZE), "page_size": list(PAGE_SIZE), "content_box": [0, 0, *PAGE_SIZE],
            "picks": [[{"ref": "/refs/hero.png", "patch": "TL", "box": TL_BOX}], *own], "accepted_used": []}


def colored_project(tmp_path: Path) -> ChapterProject:
    """Four colored pages whose TL regions share a pick: all orange but page 3, recolored blue."""
    project = new_project(tmp_path, pages=4)
    for number in range(1, 5):
        file = project.folder / f"00{number}_{number}.png"
        Image.new("RGB", PAGE_SIZE, BLUE if number == 3 else ORANGE).save(file)
        project.record_variation(f"{number}.png", file, "key", {"seed": 0, "retrieval": record(f"{number}.png")},
                                 replace=None)
    project.save()
    return project


def test_drift_list_follows_the_report_and_pin_and_rerun_pins_the_compared_region(
        qtbot, settings, tmp_path, monkeypatch):
    from engine.evaluation.consistency import check_consistency

    project = colored_project(tmp_path)
    report = check_consistency(ChapterProject.load(project.folder))
    window = make_window(qtbot, settings)
    runs: list[tuple[set, list]] = []

    def colorize(chapter, references, project, *, pages, **_run):  # the run's other arguments do not matter here
        runs.append((set(pages), project.choices_for(next(iter(pages))).regions))

    monkeypatch.setattr(window.session, "colorize", colorize)
    open_project(qtbot, window, project.folder)
    panel = window.drift_panel
    with qtbot.waitSignal(panel.shown, timeout=WAIT_MS):
        window.check_consistency()
    order = [panel.list.item(row).data(Qt.ItemDataRole.UserRole) for row in range(panel.list.count())]
    assert order == [drift.page for drift in report.pages]
    assert order[0] == "3.png"  # the page recolored blue drifts most
    assert "3.png" in panel.list.item(0).text() and "top-left region" in panel.list.item(0).text()
    panel.list.setCurrentRow(0)
    assert not panel.this_crop.pixmap().isNull() and not panel.compared_crop.pixmap().isNull()

    compared = report.pages[0].compared_page
    assert compared in ("1.png", "2.png", "4.png")
    compared_file = (project.folder / f"00{compared[0]}_{compared[0]}.png").resolve()
    with qtbot.waitSignal(window.run_finished, timeout=WAIT_MS):
        panel.pin_button.click()
        assert window.jobs.queued_pages() == ["3.png"]  # queued at once, in the same click
    # the compared page's TL region, (0, 0, 192, 288) of its 256x384 file, as fractions
    expected = RegionPin(str(compared_file), (0.0, 0.0, 0.75, 0.75), "TL", 1)
    assert window.document.project.curation.pages["3.png"].regions == [expected]
    assert saved_regions(project.folder, "3.png") == [expected.to_json()]
    assert runs == [({"3.png"}, [expected])]  # the run saw the pin
    window.undo_stack.undo()
    assert saved_regions(project.folder, "3.png") == []
    close(qtbot, window)
