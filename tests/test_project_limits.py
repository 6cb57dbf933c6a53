"""Project files a user or another tool made: size and page limits, unknown keys kept, numbers
outside JSON refused, a BOM accepted, long titles shortened for file names, normal folder modes."""

from __future__ import annotations

import json
import os
import stat
import time
import zipfile
from xml.etree import ElementTree

import pytest
from PIL import Image

from engine.core.errors import InputError, ProjectFileError
from engine.project.state import ChapterProject
from engine.project.store import BACKUP_FILE, PROJECT_FILE

MIB = 1024**2


def _small_project(folder) -> ChapterProject:
    project = ChapterProject(folder=folder, inputs=["/c"], references=["/r/1.png", "/r/2.png"])
    project.sync_pages([(f"{i}.png", f"/c/{i}.png") for i in range(1, 6)])
    project.record_outputs("1.png", {"colored": "001_1.png"}, "done", "k")
    project.pin("/r/1.png", "TL", page="2.png")
    project.reject("/r/2.png")
    return project


def _padded_project_file(path, total_bytes: int) -> bytes:
    """A valid project file padded with trailing whitespace (still JSON) to `total_bytes`."""
    head = json.dumps({"format": "colorflow-project", "version": 2,
                       "pages": [{"name": "1.png", "source": "/c/1.png"}]}).encode()
    with open(path, "wb") as handle:
        handle.write(head)
        handle.write(b" " * (total_bytes - len(head)))
    return head


# --- 1. size and page limits ------------------------------------------------------------------

def test_a_project_file_over_32_mib_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = tmp_path / PROJECT_FILE
    _padded_project_file(path, 40 * MIB)  # valid JSON: without the cap it loads (slowly)
    before = path.stat()
    monkeypatch.setattr(json, "loads", lambda *a, **k: pytest.fail("a file over the cap was parsed"))
    started = time.perf_counter()
    with pytest.raises(ProjectFileError) as caught:
        ChapterProject.load(tmp_path)
    assert time.perf_counter() - started < 1.0
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "32 MiB" in message and "\n" not in message
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)  # left untouched


def test_a_backup_over_the_cap_is_never_read_or_restored(tmp_path):
    (tmp_path / PROJECT_FILE).write_text("{")
    _padded_project_file(tmp_path / BACKUP_FILE, 40 * MIB)
    with pytest.raises(ProjectFileError, match=r"backup .* is unusable too"):
        ChapterProject.load(tmp_path)
    with pytest.raises(ProjectFileError) as caught:
        ChapterProject.restore_backup(tmp_path)
    assert str(caught.value).startswith(f"{tmp_path / BACKUP_FILE}: ") and "32 MiB" in str(caught.value)
    assert (tmp_path / PROJECT_FILE).read_text() == "{"  # nothing restored over it


def _pages_file(path, count: int) -> None:
    pages = [{"name": f"{i}.png", "source": f"/c/{i}.png", "status": "done", "settings_key": "k",
              "outputs": {"colored": f"{i:05d}_{i}.png"}} for i in range(count)]
    path.write_text(json.dumps({"format": "colorflow-project", "version": 2, "inputs": ["/c"], "pages": pages}))


def test_a_project_of_more_than_20000_pages_is_refused_and_a_thick_volume_loads(tmp_path):
    _pages_file(tmp_path / PROJECT_FILE, 20_001)
    with pytest.raises(ProjectFileError, match=r"pages: 20,001 pages, more than .*20,000"):
        ChapterProject.load(tmp_path)
    _pages_file(tmp_path / PROJECT_FILE, 2_000)  # a 2,000-page volume
    assert len(ChapterProject.load(tmp_path).pages) == 2_000


def test_a_chapter_of_more_than_20000_pages_never_becomes_a_project_it_could_not_reopen(tmp_path):
    project = ChapterProject(folder=tmp_path)
    with pytest.raises(InputError, match="20,001 pages"):
        project.sync_pages([(f"{i}.png", f"/c/{i}.png") for i in range(20_001)])
    assert project.pages == []


# --- 2. keys this version does not know are kept ------------------------------------------------

def test_unknown_keys_at_every_level_survive_a_change_and_a_save(tmp_path):
    target = {"ref": "/r/1.png", "patch": "TL", "weight": 0.5}
    data = {
        "format": "colorflow-project", "version": 2, "inputs": ["/c"], "references": ["/r/1.png"],
        "studio": {"name": "A", "ids": [1, 2]},
        "pages": [{"name": "1.png", "source": "/c/1.png", "reviewed_by": "kim"},
                  {"name": "2.png", "source": "/c/2.png", "status": "done", "outputs": {"colored": "002_2.png"},
                   "settings_key": "k", "note": None}],
        "curation": {"locked": True,
                     "chapter": {"pins": [target], "rejects": [], "why": "cover"},
                     "pages": {"1.png": {"pins": [], "rejects": [{"ref": "/r/1.png", "by": "kim"}], "seen": 3}}},
    }
    (tmp_path / PROJECT_FILE).write_text(json.dumps(data))
    project = ChapterProject.load(tmp_path)
    project.set_status("1.png", "failed", "bad page")
    project.pin("/r/9.png", page="1.png")
    project.save()
    saved = json.loads((tmp_path / PROJECT_FILE).read_text())
    assert saved["studio"] == {"name": "A", "ids": [1, 2]}
    assert saved["pages"][0]["reviewed_by"] == "kim" and saved["pages"][0]["status"] == "failed"
    assert "note" in saved["pages"][1] and saved["pages"][1]["note"] is None
    assert saved["curation"]["locked"] is True
    assert saved["curation"]["chapter"]["why"] == "cover"
    assert saved["curation"]["chapter"]["pins"] == [target]
    page_choices = saved["curation"]["pages"]["1.png"]
    assert page_choices["seen"] == 3 and page_choices["rejects"] == [{"ref": "/r/1.png", "patch": None, "by": "kim"}]
    assert page_choices["pins"] == [{"ref": "/r/9.png", "patch": None}]
    assert ChapterProject.load(tmp_path).to_json() == project.to_json()  # and read back the same


# --- 3. numbers outside JSON -----------------------------------------------------------------------

@pytest.mark.parametrize("number", ["1e999", "-1e999", "NaN", "Infinity", "-Infinity", "1" * 5000])
def test_numbers_outside_json_are_refused_on_load_naming_the_file(tmp_path, number):
    path = tmp_path / PROJECT_FILE
    path.write_text('{"format": "colorflow-project", "version": 2, "settings": {"strength": %s}}' % number)
    before = path.read_bytes()
    with pytest.raises(ProjectFileError) as caught:
        ChapterProject.load(tmp_path)
    assert str(caught.value).startswith(f"{path}: ") and "number" in str(caught.value)
    assert path.read_bytes() == before


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_numbers_outside_json_are_never_written(tmp_path, value):
    from engine.io.fileio import atomic_write_json

    folder = tmp_path / "project"
    folder.mkdir()
    project = _small_project(folder)
    project.settings["strength"] = value
    with pytest.raises(ValueError):
        project.save()
    with pytest.raises(ValueError):
        atomic_write_json(folder / "r.json", {"score": value})
    assert list(folder.iterdir()) == []  # no file, no temp file


# --- 4. a byte order mark (Notepad) ----------------------------------------------------------------

def test_a_project_saved_with_a_bom_loads_with_every_page(tmp_path):
    project = _small_project(tmp_path)
    project.save()
    path = tmp_path / PROJECT_FILE
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    loaded = ChapterProject.load(tmp_path)
    assert [p.name for p in loaded.pages] == ["1.png", "2.png", "3.png", "4.png", "5.png"]
    assert loaded.page("1.png").outputs == {"colored": "001_1.png"}
    assert loaded.to_json() == project.to_json()


# --- 5. long titles in file names ------------------------------------------------------------------

def _colored_project(tmp_path, title: str):
    from engine.io.chapter import open_chapter

    chapter_dir = tmp_path / "chapter"
    chapter_dir.mkdir()
    Image.new("L", (30, 40), 100).save(chapter_dir / "1.png")
    chapter = open_chapter(chapter_dir)
    project = ChapterProject(folder=tmp_path / "out", inputs=[str(chapter_dir)])
    project.sync_pages([(s.name, s.ref) for s in chapter.sources])
    project.folder.mkdir()
    Image.new("RGB", (30, 40), (200, 0, 0)).save(project.folder / "001_1.png")
    project.record_outputs("1.png", {"colored": "001_1.png"}, "done", "k")
    project.settings["title"] = title
    return project, chapter


@pytest.mark.parametrize("title", ["A" * 400, "色" * 200])  # 400 bytes; 600 bytes in UTF-8
def test_a_long_title_is_shortened_in_the_cbz_name_but_kept_whole_inside(tmp_path, title):
    from engine.io.export import export_project

    project, chapter = _colored_project(tmp_path, title)
    [path] = export_project(project, chapter, "cbz")
    assert path.is_file() and path.name.endswith("-colored.cbz")
    assert len(path.name.encode("utf-8")) < 255
    assert title.startswith(path.name.removesuffix("-colored.cbz"))  # cut on a character boundary
    with zipfile.ZipFile(path) as archive:
        assert ElementTree.fromstring(archive.read("ComicInfo.xml")).findtext("Title") == title


# --- 6. folders the project makes ------------------------------------------------------------------

def test_retrieval_page_folders_have_the_users_normal_permissions(tmp_path):
    from engine.pipelines.chapter import write_retrieval
    from engine.core.geometry import PageFit, WorkSize
    from engine.rap.retrieval import PageRetrieval

    result = PageRetrieval("p", WorkSize(32, 32), PageFit((32, 32), (0, 0, 32, 32)), Image.new("RGB", (32, 32)),
                           [], Image.new("RGB", (64, 64)), Image.new("L", (64, 64)))
    previous = os.umask(0o022)
    try:
        write_retrieval(result, tmp_path / "001_p")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "001_p").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "001_p" / "canvas.png").stat().st_mode) == 0o644


def test_page_folder_names_fit_a_file_system_name_with_four_byte_characters():
    """60 rare kanji (CJK Extension B, 4 bytes each) are 240 bytes: with `.` + `.psd` + `.XXXXXXXX.tmp` around it a temp file name would
    pass the 255 bytes Linux and macOS allow; ASCII and 3-byte (Japanese) names keep 60 characters."""
    from engine.io.naming import page_folder_name

    rare = page_folder_name(0, "\U00020000" * 60 + ".png")
    assert rare == "001_" + "\U00020000" * 45  # 180 bytes
    assert len(f".{rare}.psd.abcdefgh.tmp".encode()) <= 255
    assert page_folder_name(9, "頁" * 70 + ".png") == "010_" + "頁" * 60  # 180 bytes: unchanged
    assert page_folder_name(0, "p" * 70 + ".png") == "001_" + "p" * 60
