"""Export polish: archive member modes, ComicInfo's BlackAndWhite, placeholders for unreadable
pages, and where the Export dialog starts."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from PIL import Image

from engine.core.events import Notice
from engine.io.chapter import open_chapter
from engine.io.export import export_cbz, export_ora, export_project
from engine.project.state import ChapterProject

# The element order of the ComicInfo v2.0 schema (anansi-project/comicinfo, schema/v2.0/ComicInfo.xsd:
# an xs:sequence, so a strict reader wants its elements in this order).
COMICINFO_V2_ORDER = [
    "Title", "Series", "Number", "Count", "Volume", "AlternateSeries", "AlternateNumber", "AlternateCount",
    "Summary", "Notes", "Year", "Month", "Day", "Writer", "Penciller", "Inker", "Colorist", "Letterer",
    "CoverArtist", "Editor", "Publisher", "Imprint", "Genre", "Web", "PageCount", "LanguageISO", "Format",
    "BlackAndWhite", "Manga", "Characters", "Teams", "Locations", "ScanInformation", "StoryArc", "SeriesGroup",
    "AgeRating", "Pages", "CommunityRating",
]
REGULAR_FILE_0644 = 0o100644  # S_IFREG | rw-r--r--: what `unzip` gives every user to read


def _project(tmp_path, sizes: list[tuple[int, int] | None], colored: set[int]):
    """A chapter of pages 1..n (None: a file that is no image at all; (1, 1): too small to use) and
    its project with the pages in `colored` (1-based) colored red."""
    chapter_dir = tmp_path / "Berserk 12"
    chapter_dir.mkdir()
    for number, size in enumerate(sizes, start=1):
        if size is None:
            (chapter_dir / f"{number}.png").write_bytes(b"not an image")
        else:
            Image.new("L", size, 120).save(chapter_dir / f"{number}.png")
    chapter = open_chapter(chapter_dir)
    project = ChapterProject(folder=tmp_path / "out")
    project.sync_pages([(s.name, s.ref) for s in chapter.sources])
    project.inputs = [str(chapter_dir)]
    project.folder.mkdir()
    for number in colored:
        Image.new("RGB", sizes[number - 1], (200, 30, 30)).save(project.folder / f"{number:03d}_{number}.png")
        project.record_outputs(f"{number}.png", {"colored": f"{number:03d}_{number}.png"}, "done", "k")
    return project, chapter


def _comic_info(cbz: Path) -> ElementTree.Element:
    with zipfile.ZipFile(cbz) as archive:
        return ElementTree.fromstring(archive.read("ComicInfo.xml"))


def test_cbz_and_ora_members_are_regular_files_everyone_can_read(tmp_path):
    page = Image.new("RGB", (40, 60), (10, 120, 200))
    cbz = export_cbz([("1.png", page), ("2.png", page)], tmp_path / "c.cbz", "c")
    ora = export_ora(page, page.convert("L"), tmp_path / "p.ora")
    for path in (cbz, ora):
        with zipfile.ZipFile(path) as archive:
            modes = {info.filename: (info.create_system, oct(info.external_attr >> 16)) for info in archive.infolist()}
        assert modes and all(mode == (3, oct(REGULAR_FILE_0644)) for mode in modes.values()), modes
    unzip = shutil.which("unzip")
    if unzip:  # what a user's unzip makes of them, whatever their umask
        previous = os.umask(0o022)
        try:
            subprocess.run([unzip, "-q", str(cbz), "-d", str(tmp_path / "x")], check=True)
        finally:
            os.umask(previous)
        assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "x").iterdir()} == {0o644}


@pytest.mark.parametrize("colored, expected", [
    (set(), "Yes"),       # every page the original gray one
    ({1, 3}, "Unknown"),  # some colored, some gray: neither Yes nor No is true
    ({1, 2, 3}, "No"),    # every page colored
])
def test_comic_info_says_black_and_white_only_when_every_page_is_gray(tmp_path, colored, expected):
    project, chapter = _project(tmp_path, [(60, 80)] * 3, colored)
    [cbz] = export_project(project, chapter, "cbz", include_uncolored=True)
    info = _comic_info(cbz)
    assert info.findtext("BlackAndWhite") == expected
    tags = [element.tag for element in info]
    assert tags == sorted(tags, key=COMICINFO_V2_ORDER.index)  # the schema's order (a sequence)


def test_every_listed_page_is_placed_and_an_unreadable_one_is_a_labelled_placeholder(tmp_path):
    # pages 2 (1x1 pixels) and 3 (not an image) cannot be read; 1 is colored, 4 is left gray
    project, chapter = _project(tmp_path, [(300, 420), (1, 1), None, (300, 420)], {1})
    assert len(chapter.errors) == 2
    notices = []
    [cbz] = export_project(project, chapter, "cbz", include_uncolored=True, emit=notices.append)
    with zipfile.ZipFile(cbz) as archive:
        names = [n for n in archive.namelist() if n != "ComicInfo.xml"]
        assert names == ["001_1.png", "002_2.png", "003_3.png", "004_4.png"]  # every page, in reading order
        images = {n: np.asarray(Image.open(archive.open(n)).convert("RGB")).astype(int) for n in names}
    assert images["001_1.png"][0, 0].tolist() == [200, 30, 30] and images["004_4.png"][0, 0].tolist() == [120] * 3
    for name in ("002_2.png", "003_3.png"):
        placeholder = images[name]
        assert placeholder.shape == (420, 300, 3)  # the size of the chapter's pages
        assert (placeholder.max(axis=2) == placeholder.min(axis=2)).all()  # gray, not pretending to be colored
        assert (placeholder > 150).mean() > 0.8 and (placeholder < 90).any()  # a light page with dark lettering
    assert not np.array_equal(images["002_2.png"], images["003_3.png"])  # each labelled with its own name
    said = {n.page: n.message for n in notices if isinstance(n, Notice)}
    assert set(said) == {"2.png", "3.png"} and all("could not be read" in m for m in said.values())
    assert "1x1" in said["2.png"]  # the reason, as the chapter reader gave it
    info = _comic_info(cbz)
    assert info.findtext("PageCount") == "4" and info.findtext("BlackAndWhite") == "Unknown"


# --- where File ▸ Export's chooser starts ---------------------------------------------------


@pytest.fixture
def export_flow(monkeypatch, tmp_path):
    pytest.importorskip("PySide6")
    from app import export_flow

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    return export_flow


def _is_hidden(path: Path, cache: Path) -> bool:
    path = path.resolve()
    return any(part.startswith(".") for part in path.parts) or path.is_relative_to(cache.resolve())


def _chapter_project(chapter_dir: Path, settings: dict | None = None) -> ChapterProject:
    chapter_dir.mkdir(parents=True)
    project = ChapterProject(folder=chapter_dir.parent / f"{chapter_dir.name}.colorflow")
    project.inputs = [str(chapter_dir)]
    project.settings = dict(settings or {})
    return project


@pytest.mark.parametrize("cache_name", [".cache/colorflow", "AppData/Local/colorflow/Cache"])
def test_export_chooser_never_starts_in_a_hidden_or_cache_folder(export_flow, tmp_path, monkeypatch, cache_name):
    cache = tmp_path / cache_name  # a dot folder (Linux, macOS) or the app's cache without a dot (Windows)
    monkeypatch.setenv("COLORFLOW_CACHE_DIR", str(cache))
    project = _chapter_project(cache / "demo" / "chapter")  # `python main.py --demo`
    start = export_flow.start_folder(project)
    assert start == tmp_path / "home" and not _is_hidden(start, cache)
    project.settings["export_dir"] = str(project.folder)  # remembered from an earlier export into the cache
    project.folder.mkdir()
    assert export_flow.start_folder(project) == tmp_path / "home"


def test_export_chooser_starts_beside_the_chapter_or_in_the_remembered_folder(export_flow, tmp_path):
    project = _chapter_project(tmp_path / "manga" / "Berserk 12")
    assert export_flow.start_folder(project) == tmp_path / "manga"  # beside the chapter, not in its project
    remembered = tmp_path / "exports"
    remembered.mkdir()
    project.settings["export_dir"] = str(remembered)
    assert export_flow.start_folder(project) == remembered
    project.settings["export_dir"] = str(tmp_path / "gone")  # no longer there: beside the chapter again
    assert export_flow.start_folder(project) == tmp_path / "manga"


def test_export_question_names_the_pages_that_become_placeholders(export_flow, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    project, chapter = _project(tmp_path, [(60, 80), (1, 1), (60, 80)], {1})
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a[2]) or QMessageBox.StandardButton.Yes)
    assert export_flow.ask_include_uncolored(None, ["2.png", "3.png"], chapter) is True
    assert "2 of 3 pages are not colored yet (2.png, 3.png)" in asked[0]
    assert "1 of them could not be read (2.png)" in asked[0] and "labelled with its name" in asked[0]
