"""Chapter project state: round trip, atomic save under crashes, refusal to touch bad files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine.core.errors import ProjectFileError
from engine.project.state import ChapterProject
from engine.project.store import BACKUP_FILE, PROJECT_FILE
from engine.rap.curation import Target

REPO_ROOT = Path(__file__).resolve().parents[1]


def make_project(folder) -> ChapterProject:
    project = ChapterProject(folder=folder, inputs=["/c"], references=["/r/1.png", "/r/2.png"])
    project.sync_pages([("1.png", "/c/1.png"), ("2.png", "/c/2.png")])
    project.pin("/r/1.png", "TL", page="1.png")
    project.reject("/r/2.png")
    project.set_status("2.png", "failed", "bad page")
    return project


def test_round_trip_keeps_pages_choices_and_status(tmp_path):
    project = make_project(tmp_path)
    project.save()
    loaded = ChapterProject.load(tmp_path)
    assert loaded.to_json() == project.to_json()
    assert loaded.page("2.png").error == "bad page"
    effective = loaded.curation.effective("1.png")
    assert [t.ref for t in effective.pins] == ["/r/1.png"] and effective.pins[0].patch == "TL"
    assert [t.ref for t in effective.rejects] == ["/r/2.png"]


def test_sync_pages_keeps_state_of_remaining_pages(tmp_path):
    project = make_project(tmp_path)
    project.sync_pages([("2.png", "/c/2.png"), ("3.png", "/c/3.png")])
    assert [p.name for p in project.pages] == ["2.png", "3.png"]
    assert project.page("2.png").status == "failed" and project.page("3.png").status == "pending"


def test_failed_save_leaves_previous_file_intact(tmp_path, monkeypatch):
    project = make_project(tmp_path)
    project.save()
    before = (tmp_path / PROJECT_FILE).read_bytes()
    project.set_status("1.png", "done")

    def crash(_fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError):
        project.save()
    assert (tmp_path / PROJECT_FILE).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [PROJECT_FILE]  # no temp file left behind


# The child saves 3 times, then dies by SIGKILL at one point of its 4th save: hooks replace
# engine.io.fileio.atomic_write (to write half the temp file) and os.replace (around the rename)
# of the project file, or of its .bak for "mid-backup".
KILL_MID_SAVE = """
import os, signal, sys
from pathlib import Path

sys.path.insert(0, {repo!r})
import engine.io.fileio as fileio
from engine.project.state import ChapterProject

point, folder = sys.argv[1], Path(sys.argv[2])
armed = False
real_atomic_write, real_replace = fileio.atomic_write, os.replace


def die():
    os.kill(os.getpid(), signal.SIGKILL)


class HalfWriter:
    # Half of the payload reaches the disk, then the process dies mid-write.
    def __init__(self, handle):
        self.handle = handle

    def write(self, data):
        self.handle.write(data[: len(data) // 2])
        self.handle.flush()
        os.fsync(self.handle.fileno())
        die()


def target(path):
    return Path(path).name == ("colorflow-project.json.bak" if point == "mid-backup" else "colorflow-project.json")


def atomic_write(path, write):
    if armed and point in ("mid-write", "mid-backup") and target(path):
        return real_atomic_write(path, lambda handle: write(HalfWriter(handle)))
    return real_atomic_write(path, write)


def replace(src, dst):
    if armed and point == "before-rename" and target(dst):
        die()
    real_replace(src, dst)
    if armed and point == "after-rename" and target(dst):
        die()


fileio.atomic_write = atomic_write
os.replace = replace  # fileio calls it through the os module
project = ChapterProject(folder=folder)
project.sync_pages([(f"{{i}}.png", f"/c/{{i}}.png") for i in range(2000)])
for n in (1, 2, 3):
    project.settings["n"] = n
    project.save()
armed = True
project.settings["n"] = 4
project.save()
sys.exit("the kill hook never fired")
"""


@pytest.mark.parametrize("point, saved, backup", [("mid-backup", 3, 2), ("mid-write", 3, 3), ("before-rename", 3, 3),
                                                  ("after-rename", 4, 3)])
def test_project_survives_being_killed_mid_save(tmp_path, point, saved, backup):
    """SIGKILLed at a chosen point of a save, the project file is the last complete save and
    its .bak the complete one before (a save writes the .bak first, then the project file)."""
    script = KILL_MID_SAVE.format(repo=str(REPO_ROOT))
    result = subprocess.run([sys.executable, "-c", script, point, str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == -signal.SIGKILL, result.stderr
    loaded = ChapterProject.load(tmp_path)
    assert loaded.settings["n"] == saved
    assert len(loaded.pages) == 2000 and loaded.pages[-1].name == "1999.png"
    # The temp file shows where the process died: half written, complete, or renamed away.
    assert json.loads((tmp_path / BACKUP_FILE).read_text())["settings"]["n"] == backup
    temps = [p for p in tmp_path.iterdir() if p.name not in (PROJECT_FILE, BACKUP_FILE)]
    assert len(temps) == (0 if point == "after-rename" else 1)
    if point in ("mid-write", "mid-backup"):
        with pytest.raises(json.JSONDecodeError):
            json.loads(temps[0].read_text())
    elif point == "before-rename":
        assert json.loads(temps[0].read_text())["settings"]["n"] == 4


def test_corrupt_file_is_reported_and_never_overwritten(tmp_path):
    path = tmp_path / PROJECT_FILE
    path.write_text('{"format": "colorflow-project", "version": 1, "pages": [')
    before = path.read_bytes()
    with pytest.raises(ProjectFileError, match="damaged"):
        ChapterProject.load(tmp_path)
    with pytest.raises(ProjectFileError):
        ChapterProject.open_or_create(tmp_path)
    assert path.read_bytes() == before


def test_newer_version_is_refused(tmp_path):
    path = tmp_path / PROJECT_FILE
    path.write_text(json.dumps({"format": "colorflow-project", "version": 99}))
    with pytest.raises(ProjectFileError, match="newer ColorFlow"):
        ChapterProject.load(tmp_path)
    assert json.loads(path.read_text())["version"] == 99


# --- schema: a damaged file is a ProjectFileError naming the file and the field -------------

def _v2(**fields) -> dict:
    page = {"name": "1.png", "source": "/c/1.png", "status": "done", "outputs": {"colored": "001_1.png"}}
    return {"format": "colorflow-project", "version": 2, "inputs": ["/c"], "pages": [page], **fields}


def _page(**fields) -> dict:
    return {"name": "1.png", "source": "/c/1.png", **fields}


@pytest.mark.parametrize("data, field", [
    (_v2(pages="x"), "pages"),
    (_v2(pages=[3]), "pages[0]"),
    (_v2(pages=[_page(outputs=["001_1.png"])]), "pages[0].outputs (page '1.png')"),
    (_v2(pages=[_page(status=7)]), "pages[0].status (page '1.png')"),
    (_v2(pages=[_page(status="finished")]), "pages[0].status (page '1.png')"),
    (_v2(pages=[_page(name=None)]), "pages[0].name"),
    (_v2(pages=[{"source": "/c/1.png"}]), "pages[0].name"),
    (_v2(pages=[_page(outputs={"colored": 5})]), "pages[0].outputs.colored (page '1.png')"),
    (_v2(pages=[_page(error=["x"])]), "pages[0].error (page '1.png')"),
    (_v2(inputs="/c"), "inputs"),
    (_v2(references=[1, 2]), "references[0]"),
    (_v2(settings=[]), "settings"),
    (_v2(settings={"title": 3}), "settings.title"),
    (_v2(settings={"export_dir": {"a": 1}}), "settings.export_dir"),
    (_v2(curation={"chapter": {"pins": "a.png"}}), "curation.chapter.pins"),
    (_v2(curation={"chapter": {"pins": [{"ref": "a.png", "patch": "XX"}]}}), "curation.chapter.pins[0].patch"),
    (_v2(curation={"pages": {"1.png": {"rejects": [{"patch": "TL"}]}}}), "curation.pages.1.png.rejects[0].ref"),
    (_v2(version="2"), "version"),
    (_v2(version=True), "version"),
])
def test_wrong_types_are_a_project_file_error_naming_the_field(tmp_path, data, field):
    path = tmp_path / PROJECT_FILE
    path.write_text(json.dumps(data))
    before = path.read_bytes()
    with pytest.raises(ProjectFileError) as caught:
        ChapterProject.load(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "damaged" in message
    assert f"{field}: " in message, message
    assert path.read_bytes() == before


@pytest.mark.parametrize("value", ["../outside/secret.png", "../../../../etc/passwd", "/etc/passwd",
                                   "C:/Windows/win.ini", "a/../../b.png", "..\\x.png", "", "."])
def test_outputs_that_could_leave_the_folder_are_refused_in_every_version(tmp_path, value):
    for version in (1, 2):
        (tmp_path / PROJECT_FILE).write_text(json.dumps(_v2(version=version, pages=[_page(outputs={"colored": value})])))
        with pytest.raises(ProjectFileError, match=r"pages\[0\]\.outputs\.colored \(page '1\.png'\)"):
            ChapterProject.load(tmp_path)


def test_missing_fields_get_defaults_and_unknown_settings_are_kept(tmp_path):
    (tmp_path / PROJECT_FILE).write_text(json.dumps({
        "format": "colorflow-project", "version": 2, "pages": [{"name": "1.png", "source": "/c/1.png"}],
        "settings": {"title": "Guts", "future_option": {"a": [1, 2]}}, "a_field_of_later_versions": 1,
    }))
    project = ChapterProject.load(tmp_path)
    assert project.inputs == [] and project.references == []
    page = project.page("1.png")
    assert (page.status, page.error, page.outputs, page.settings_key) == ("pending", None, {}, None)
    assert project.curation.chapter.pins == [] and project.curation.pages == {}
    assert project.settings == {"title": "Guts", "future_option": {"a": [1, 2]}}
    project.save()
    assert json.loads((tmp_path / PROJECT_FILE).read_text())["settings"]["future_option"] == {"a": [1, 2]}


def test_version_1_files_are_migrated_to_relative_posix_outputs(tmp_path):
    v1 = {
        "format": "colorflow-project", "version": 1, "inputs": ["/c"], "references": ["/r/1.png"],
        "settings": {"procedure": "ours"},
        "pages": [
            {"name": "1.png", "source": "/c/1.png", "status": "done", "error": None, "settings_key": "k",
             "outputs": {"colored": str(tmp_path / "001_1.png"), "canvas": "001_1\\canvas.png",
                         "mask": "001_1/mask.png"}},
            {"name": "2.png", "source": "/c/2.png", "status": "failed", "error": "bad page", "outputs": {}},
        ],
        "curation": {"chapter": {"pins": [], "rejects": [{"ref": "/r/1.png", "patch": None}]},
                     "pages": {"1.png": {"pins": [{"ref": "/r/1.png", "patch": "TL"}], "rejects": []}}},
    }
    raw = json.dumps(v1).encode()
    (tmp_path / PROJECT_FILE).write_bytes(raw)
    project = ChapterProject.load(tmp_path)
    assert project.page("1.png").outputs == {"colored": "001_1.png", "canvas": "001_1/canvas.png",
                                             "mask": "001_1/mask.png"}
    assert project.output_path("1.png", "canvas") == (tmp_path / "001_1" / "canvas.png").resolve()
    assert project.page("2.png").error == "bad page" and project.page("1.png").settings_key == "k"
    assert project.choice(Target("/r/1.png", "TL"), "1.png") == "pin"
    assert project.choice(Target("/r/1.png")) == "reject"
    assert (tmp_path / PROJECT_FILE).read_bytes() == raw  # loading never writes
    project.save()
    saved = json.loads((tmp_path / PROJECT_FILE).read_text())
    assert saved["version"] == 5 and saved["pages"][0]["outputs"]["colored"] == "001_1.png"  # v1 -> ... -> v5
    assert (tmp_path / BACKUP_FILE).read_bytes() == raw  # the v1 file, for an older ColorFlow
    assert ChapterProject.load(tmp_path).to_json() == project.to_json()


def test_recorded_outputs_are_stored_relative_and_never_outside(tmp_path):
    project = make_project(tmp_path)
    project.record_outputs("1.png", {"colored": tmp_path / "001_1.png", "canvas": Path("001_1") / "canvas.png"}, "done")
    assert project.page("1.png").outputs == {"colored": "001_1.png", "canvas": "001_1/canvas.png"}
    with pytest.raises(ValueError):
        project.record_outputs("1.png", {"colored": tmp_path.parent / "elsewhere.png"}, "done")
    with pytest.raises(ValueError):
        project.record_outputs("1.png", {"colored": "../elsewhere.png"}, "done")
    assert project.page("1.png").outputs["colored"] == "001_1.png"


def test_sync_pages_keeps_only_pages_whose_name_and_source_both_match(tmp_path):
    project = make_project(tmp_path)
    project.record_outputs("1.png", {"colored": "001_1.png"}, "done", "k")
    # a page of the file under a chapter page's name but another source: not kept
    project.sync_pages([("1.png", "/other/1.png"), ("2.png", "/c/2.png")])
    assert [(p.name, p.source, p.status, p.outputs) for p in project.pages] == [
        ("1.png", "/other/1.png", "pending", {}), ("2.png", "/c/2.png", "failed", {})]


# --- the previous good file is kept as .bak ------------------------------------------------

def test_each_save_that_changes_the_file_keeps_the_previous_one_as_bak(tmp_path):
    project = make_project(tmp_path)
    project.save()
    assert not (tmp_path / BACKUP_FILE).exists()  # nothing before the first save
    first = (tmp_path / PROJECT_FILE).read_bytes()
    project.set_status("1.png", "done")
    project.save()
    assert (tmp_path / BACKUP_FILE).read_bytes() == first
    second = (tmp_path / PROJECT_FILE).read_bytes()
    project.save()  # nothing changed: the .bak still holds the version before
    assert (tmp_path / BACKUP_FILE).read_bytes() == first and (tmp_path / PROJECT_FILE).read_bytes() == second
    project.set_status("1.png", "failed", "x")
    project.save()
    assert (tmp_path / BACKUP_FILE).read_bytes() == second


def test_damaged_file_names_the_backup_and_restore_backup_brings_it_back(tmp_path):
    project = make_project(tmp_path)
    project.save()
    project.set_status("1.png", "done")
    project.save()
    good_before = (tmp_path / BACKUP_FILE).read_bytes()
    (tmp_path / PROJECT_FILE).write_text('{"format": "colorflow-project", "version": 2, "pages": "x"}')
    damaged = (tmp_path / PROJECT_FILE).read_bytes()
    with pytest.raises(ProjectFileError) as caught:
        ChapterProject.load(tmp_path)
    message = str(caught.value)
    assert "pages: " in message and str(tmp_path / BACKUP_FILE) in message
    assert f"rename {BACKUP_FILE} to {PROJECT_FILE}" in message
    # the project object still in memory (e.g. the GUI) must not save over the damaged file
    project.set_status("2.png", "done")
    with pytest.raises(ProjectFileError, match="not saved over it"):
        project.save()
    assert (tmp_path / PROJECT_FILE).read_bytes() == damaged

    restored = ChapterProject.restore_backup(tmp_path)
    assert restored.page("1.png").status == "pending" and restored.page("2.png").error == "bad page"
    assert (tmp_path / PROJECT_FILE).read_bytes() == good_before
    [aside] = tmp_path.glob(f"{PROJECT_FILE}.damaged-*")
    assert aside.read_bytes() == damaged  # kept, not overwritten
    assert ChapterProject.load(tmp_path).to_json() == restored.to_json()


def test_damaged_file_with_a_damaged_backup_says_so(tmp_path):
    (tmp_path / PROJECT_FILE).write_text("{")
    (tmp_path / BACKUP_FILE).write_text("[]")
    with pytest.raises(ProjectFileError, match="backup .* is unusable too"):
        ChapterProject.load(tmp_path)
    with pytest.raises(ProjectFileError, match="not a ColorFlow project"):
        ChapterProject.restore_backup(tmp_path)
    assert (tmp_path / PROJECT_FILE).read_text() == "{"


def test_a_fresh_project_never_saves_over_a_damaged_file(tmp_path):
    (tmp_path / PROJECT_FILE).write_text("not json")
    with pytest.raises(ProjectFileError, match="not saved over it"):
        make_project(tmp_path).save()
    assert (tmp_path / PROJECT_FILE).read_text() == "not json"
    assert not (tmp_path / BACKUP_FILE).exists()
