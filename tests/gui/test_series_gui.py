"""Series memory in the window (issue 25), without models: Pages ▸ Accept page and its undo, the
accepted mark in the page strip, the Series dock listing the library, a reference moved between the
chapter and the series (and back by undo), and a whole-series reject saved in the library file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("PySide6")

from app.settings import AppSettings  # noqa: E402
from engine.pipelines.session import RunSettings  # noqa: E402
from engine.project.state import ChapterProject  # noqa: E402
from engine.rap.curation import Target  # noqa: E402
from window_helpers import WAIT_MS, close, make_window  # noqa: E402


@pytest.fixture
def offline(tmp_path) -> AppSettings:
    """No models at all: a retrieval the window asks for fails at once (these tests need none)."""
    return AppSettings(RunSettings(models=str(tmp_path / "no-models"), device="cpu", steps=1, size="256x384",
                                   cache_dir=str(tmp_path / "embeddings")))


def _image(path: Path, value: int, mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((48, 32, 3), (value, 255 - value, value // 2), np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)
    return path


def colored_chapter(tmp_path: Path, refs: list[Path] = ()) -> tuple[Path, ChapterProject]:
    """A chapter of 3 gray pages whose project (beside it, as the window finds it) has page 1 colored."""
    chapter = tmp_path / "ch1"
    for index in range(3):
        _image(chapter / f"{index + 1}.png", 40 * index)
    project = ChapterProject(folder=tmp_path / "ch1.colorflow")
    project.folder.mkdir()
    project.inputs = [str(chapter)]
    project.sync_pages([(f"{i + 1}.png", str(chapter / f"{i + 1}.png")) for i in range(3)])
    _image(project.folder / "001_1.png", 200, "RGB")
    project.record_variation("1.png", project.folder / "001_1.png", "k", {"seed": 0}, replace=None)
    project.add_references([str(r) for r in refs])
    project.save()
    return chapter, project


def open_window(qtbot, settings, chapter: Path):
    window = make_window(qtbot, settings)
    with qtbot.waitSignal(window.document_opened, timeout=WAIT_MS):
        window.open_path(str(chapter))
    qtbot.waitUntil(lambda: not window.worker.busy, timeout=WAIT_MS)  # its retrieval (which fails: no models) saves too
    return window


def action(window, menu: str, text: str):
    [found] = [a for m in window.menuBar().actions() if m.text().replace("&", "") == menu
               for a in m.menu().actions() if a.text() == text]
    return found


def saved_project(folder: Path) -> dict:
    return json.loads((folder / "colorflow-project.json").read_text())


def test_accept_undo_redo_follow_the_project_and_the_page_strip_mark(qtbot, offline, tmp_path):
    chapter, _ = colored_chapter(tmp_path)
    window = open_window(qtbot, offline, chapter)
    accept, unaccept = action(window, "Pages", "Accept page"), action(window, "Pages", "Un-accept page")
    assert accept.shortcut().toString() == "A"
    window.page_strip.setCurrentRow(0)
    assert accept.isEnabled() and not unaccept.isEnabled()  # page 1 is colored, not yet accepted
    window.page_strip.setCurrentRow(1)
    assert not accept.isEnabled()  # page 2 has no result: nothing to accept
    window.page_strip.setCurrentRow(0)
    assert not window.page_strip.is_accepted(0)

    accept.trigger()
    folder = window.document.project.folder
    assert window.document.project.page("1.png").accepted == 1
    assert saved_project(folder)["pages"][0]["accepted"] == 1  # saved at once, as pins are
    assert window.page_strip.is_accepted(0) and not window.page_strip.is_accepted(1)
    assert "accepted" in window.page_strip.item(0).toolTip()
    assert unaccept.isEnabled() and not accept.isEnabled()

    window.undo_stack.undo()
    assert window.document.project.page("1.png").accepted is None
    assert "accepted" not in saved_project(folder)["pages"][0]
    assert not window.page_strip.is_accepted(0) and accept.isEnabled()
    window.undo_stack.redo()
    assert window.document.project.page("1.png").accepted == 1 and window.page_strip.is_accepted(0)
    unaccept.trigger()
    assert window.document.project.page("1.png").accepted is None and not window.page_strip.is_accepted(0)
    window.undo_stack.undo()  # undoing the un-accept accepts it again
    assert window.document.project.page("1.png").accepted == 1 and window.page_strip.is_accepted(0)

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    offered = []  # the page strip's right-click offers it too, for the page clicked

    def read_menu():
        menu = QApplication.activePopupWidget()
        offered.extend((a.text(), a.isEnabled()) for a in menu.actions())
        menu.close()

    QTimer.singleShot(300, read_menu)
    window._page_style_menu(window.page_strip.visualItemRect(window.page_strip.item(0)).center())
    assert ("Accept page", False) in offered and ("Un-accept page", True) in offered  # page 1 is accepted
    close(qtbot, window)


def series_library(tmp_path: Path, refs: list[Path]):
    """A library holding `refs`, one earlier chapter "ch0" with an accepted page, and this chapter "ch1"."""
    from engine.io.chapter import ImageSource
    from engine.project.series import SeriesLibrary

    library = SeriesLibrary.create(tmp_path / "series", name="Hero")
    files = [library.add_reference(ImageSource(ref)) for ref in refs]
    library.add_accepted("ch0", "p1.png", _image(tmp_path / "ch0-p1.png", 90, "RGB"))
    library.register_chapter("ch1")
    library.save()
    return library, files


def link(project: ChapterProject, library) -> None:
    project.series = {"folder": str(library.folder), "chapter": "ch1"}
    project.save()


def library_state(folder: Path) -> tuple[dict, dict]:
    """The library file without its writer, and every image it holds, by path."""
    data = json.loads((folder / "colorflow-series.json").read_text())
    images = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*.png")}
    return data, images


def menu_action(menu, text: str, last: bool = False):
    found = [a for a in menu.actions() if a.text() == text]
    assert found, [a.text() for a in menu.actions()]
    return found[-1] if last else found[0]


def test_the_series_dock_and_the_references_panel_list_what_the_library_holds(qtbot, offline, tmp_path):
    mine = _image(tmp_path / "refs" / "mine.png", 10, "RGB")
    library, files = series_library(tmp_path, [_image(tmp_path / "lib" / "hero.png", 60, "RGB"),
                                               _image(tmp_path / "lib" / "villain.png", 120, "RGB")])
    hero, villain = (str(library.folder / f) for f in files)
    library.set_choice(Target(villain), "reject")
    library.save()
    chapter, project = colored_chapter(tmp_path, [mine])
    link(project, library)
    window = open_window(qtbot, offline, chapter)
    listed = window.series_panel.listed()
    assert listed["references"] == [hero, villain]
    assert listed["accepted"] == {"ch0": ["p1.png"], "ch1": []}
    assert listed["choices"] == ["rejected: all patches of villain.png"]
    refs = window.reference_panel.references
    levels = {refs.item(i).data(0x0100): refs.item(i).text().split("\n")[1] for i in range(refs.count())}
    assert levels == {str(mine): "chapter", hero: "series", villain: "series"}
    from app import jobs  # what the window's retrieval and runs use: the series' references, under its reject

    pool = jobs.reference_pool(window.document, offline.run)
    assert [s.ref for s in pool.for_page("2.png")] == [str(mine), hero, villain]
    assert window.document.project.choices_for("2.png", pool.series_choices).rejects == [Target(villain)]
    qtbot.waitUntil(lambda: not window.series_panel.references.item(0).icon().isNull(), timeout=WAIT_MS)
    close(qtbot, window)


def test_moving_a_reference_to_the_series_and_back_is_undone_exactly(qtbot, offline, tmp_path):
    mine, other = _image(tmp_path / "refs" / "mine.png", 10, "RGB"), _image(tmp_path / "refs" / "other.png", 30, "RGB")
    library, files = series_library(tmp_path, [_image(tmp_path / "lib" / "hero.png", 60, "RGB")])
    hero = str(library.folder / files[0])
    chapter, project = colored_chapter(tmp_path, [mine, other])
    project.set_choice(Target(str(mine), "TL"), "pin")  # the chapter's pin follows the reference
    link(project, library)
    window = open_window(qtbot, offline, chapter)
    panel, folder = window.reference_panel, library.folder
    before = library_state(folder), saved_project(project.folder)

    menu_action(panel.reference_menu(str(mine)), "Move to series").trigger()
    moved = str(folder / "references" / "mine.png")
    assert window.document.project.references == [str(other)]
    assert [s.ref for s in window.document.references] == [str(other)]
    data, images = library_state(folder)
    assert [r["file"] for r in data["references"]] == [files[0], "references/mine.png"]
    assert images["references/mine.png"] == mine.read_bytes()  # copied in, byte for byte
    assert saved_project(project.folder)["curation"]["chapter"]["pins"] == [{"ref": moved, "patch": "TL"}]
    assert panel.levels.level(moved) == "series"

    window.undo_stack.undo()
    assert (library_state(folder), saved_project(project.folder)) == before
    assert [s.ref for s in window.document.references] == [str(mine), str(other)]

    menu_action(panel.reference_menu(hero), "Move to chapter").trigger()  # the other way
    copy = project.folder / "references" / "hero.png"
    assert window.document.project.references == [str(mine), str(other), str(copy)]
    assert copy.read_bytes() == before[0][1][files[0]]
    data, images = library_state(folder)
    assert data["references"] == [] and files[0] not in images
    window.undo_stack.undo()
    assert (library_state(folder), saved_project(project.folder)) == before and not copy.exists()
    close(qtbot, window)


def test_a_whole_series_reject_made_in_the_window_is_saved_in_the_library_file(qtbot, offline, tmp_path):
    library, files = series_library(tmp_path, [_image(tmp_path / "lib" / "hero.png", 60, "RGB")])
    chapter, project = colored_chapter(tmp_path, [_image(tmp_path / "refs" / "mine.png", 10, "RGB")])
    link(project, library)
    window = open_window(qtbot, offline, chapter)
    hero = str(library.folder / files[0])
    menu = window.reference_panel.reference_menu(hero)
    assert "For the whole series" in [a.text() for a in menu.actions() if a.isSeparator()]
    menu_action(menu, "Reject all patches of hero.png", last=True).trigger()  # the whole-series section is last
    curation = library_state(library.folder)[0]["curation"]
    assert curation == {"pins": [], "rejects": [{"ref": files[0], "patch": None}]}
    assert window.document.project.curation.chapter.is_empty()  # not the chapter's: the series'
    assert window.series_panel.listed()["choices"] == ["rejected: all patches of hero.png"]
    window.undo_stack.undo()
    assert library_state(library.folder)[0]["curation"] == {"pins": [], "rejects": []}
    # a chapter reference has no whole-series section: it is not in the library
    mine_menu = window.reference_panel.reference_menu(window.document.project.references[0])
    assert "For the whole series" not in [a.text() for a in mine_menu.actions() if a.isSeparator()]
    close(qtbot, window)


def test_linking_a_chapter_to_a_series_registers_it_with_its_accepted_pages_and_undo_unlinks_it(
        qtbot, offline, tmp_path):
    """File ▸ Link chapter to series: the library lists the chapter after the earlier ones, with a copy of the page
    accepted before the link; the project records the link. Ctrl+Z gives both files back what they listed (the
    copy deleted), Ctrl+Y links again."""
    from engine.project.series import SeriesLibrary

    library = SeriesLibrary.create(tmp_path / "series", name="Hero")
    library.register_chapter("ch0")
    library.save()
    before = library_state(library.folder)
    chapter, _ = colored_chapter(tmp_path)
    window = open_window(qtbot, offline, chapter)
    window.page_strip.setCurrentRow(0)
    action(window, "Pages", "Accept page").trigger()  # page 1 accepted before the chapter is linked
    folder = window.document.project.folder

    window.link_series(tmp_path / "series", "ch1")
    linked, images = library_state(library.folder)
    assert linked["chapters"] == ["ch0", "ch1"] and [a["page"] for a in linked["accepted"]] == ["1.png"]
    assert images[linked["accepted"][0]["file"]] == (folder / "001_1.png").read_bytes()  # a copy of the accepted page
    assert saved_project(folder)["series"] == {"folder": str((tmp_path / "series").resolve()), "chapter": "ch1"}
    assert "ch1 is now chapter 2 of the series Hero" in window.statusBar().currentMessage()

    window.undo_stack.undo()
    assert library_state(library.folder) == before  # the chapter and the accepted copy gone from the library
    assert saved_project(folder).get("series") is None and window.series_library() is None
    window.undo_stack.redo()
    assert library_state(library.folder)[0]["chapters"] == ["ch0", "ch1"]
    assert saved_project(folder)["series"]["chapter"] == "ch1"
    close(qtbot, window)


def test_a_series_reject_is_listed_as_such_and_restoring_it_takes_it_out_of_the_library_undoably(
        qtbot, offline, tmp_path):
    """The Rejected list shows what the linked library rejects ("whole series"), after the page's and the chapter's;
    Restore allows it again in the library file (not the chapter's curation), and Undo puts the reject back."""
    from app import jobs
    from engine.core.geometry import WorkSize

    library, files = series_library(tmp_path, [_image(tmp_path / "lib" / "hero.png", 60, "RGB")])
    hero = str(library.folder / files[0])
    library.set_choice(Target(hero), "reject")
    library.save()
    mine = _image(tmp_path / "refs" / "mine.png", 10, "RGB")
    chapter, project = colored_chapter(tmp_path, [mine])
    link(project, library)
    window = open_window(qtbot, offline, chapter)
    window.document.project.set_choice(Target(str(mine)), "reject")  # the chapter's own, listed before

    class NoThumbnails:  # the list shows entries without a picture when a thumbnail cannot be made
        def reference_patch(self, *_args):
            raise OSError("no models here")

    entries = jobs.rejected_patches(NoThumbnails(), window.document, "2.png", WorkSize(256, 384))
    assert [(e.ref, e.patch, e.scope) for e in entries] == [(str(mine), None, "chapter"), (hero, None, "series")]
    panel = window.reference_panel
    panel.set_page_picks([], [], {}, entries)
    texts = [panel.rejected.item(row).text() for row in range(panel.rejected.count())]
    assert texts == ["all patches of mine.png  (whole chapter)", "all patches of hero.png  (whole series)"]
    panel.restore(panel.rejected.item(1))
    assert library_state(library.folder)[0]["curation"] == {"pins": [], "rejects": []}
    assert window.document.project.curation.chapter.rejects == [Target(str(mine))]  # the chapter's untouched
    window.undo_stack.undo()
    assert library_state(library.folder)[0]["curation"]["rejects"] == [{"ref": files[0], "patch": None}]
    close(qtbot, window)


def test_accepting_in_a_linked_chapter_copies_the_page_into_the_library_and_undo_takes_it_out(qtbot, offline, tmp_path):
    library, _ = series_library(tmp_path, [])
    chapter, project = colored_chapter(tmp_path)
    link(project, library)
    window = open_window(qtbot, offline, chapter)
    window.page_strip.setCurrentRow(0)
    action(window, "Pages", "Accept page").trigger()
    data, images = library_state(library.folder)
    assert [(a["chapter"], a["page"]) for a in data["accepted"]] == [("ch0", "p1.png"), ("ch1", "1.png")]
    copied = [f for f in images if f.startswith("accepted/ch1/")]
    assert len(copied) == 1
    ours = np.asarray(Image.open(project.folder / "001_1.png").convert("RGB"))
    assert np.array_equal(np.asarray(Image.open(library.folder / copied[0]).convert("RGB")), ours)
    assert window.series_panel.listed()["accepted"] == {"ch0": ["p1.png"], "ch1": ["1.png"]}
    window.undo_stack.undo()
    data, images = library_state(library.folder)
    assert [(a["chapter"], a["page"]) for a in data["accepted"]] == [("ch0", "p1.png")]
    assert not [f for f in images if f.startswith("accepted/ch1/")]
    close(qtbot, window)


def test_with_rolling_references_an_accepted_page_is_listed_as_such_with_its_own_pin_and_reject(qtbot, offline, tmp_path):
    chapter, project = colored_chapter(tmp_path, [_image(tmp_path / "refs" / "mine.png", 10, "RGB")])
    window = open_window(qtbot, offline, chapter)
    window.page_strip.setCurrentRow(0)
    action(window, "Pages", "Accept page").trigger()
    accepted = str(project.folder / "001_1.png")
    assert window.reference_panel.levels.level(accepted) is None  # rolling references off: not a reference
    rolling = action(window, "Pages", "Use rolling references")
    rolling.trigger()
    assert window.settings.run.rolling_refs
    refs = window.reference_panel.references
    listed = {refs.item(i).data(0x0100): refs.item(i).text() for i in range(refs.count())}
    assert listed[accepted] == "1.png\naccepted"  # by its page name, at its level
    menu_action(window.reference_panel.reference_menu(accepted), "Reject all patches of 001_1.png", last=True).trigger()
    assert saved_project(project.folder)["curation"]["chapter"]["rejects"] == [{"ref": accepted, "patch": None}]
    rolling.trigger()  # off again: the accepted page leaves the References panel
    assert window.reference_panel.levels.level(accepted) is None
    close(qtbot, window)
