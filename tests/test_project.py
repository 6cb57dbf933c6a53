"""Chapter project state: round trip, atomic save under crashes, refusal to touch bad files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import ProjectFileError
from engine.project import PROJECT_FILE, ChapterProject

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
# engine.io.fileio.atomic_write (to write half the temp file) and os.replace (around the rename).
KILL_MID_SAVE = """
import os, signal, sys
from pathlib import Path

sys.path.insert(0, {repo!r})
import engine.io.fileio as fileio
from engine.project import ChapterProject

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


def atomic_write(path, write):
    if armed and point == "mid-write":
        return real_atomic_write(path, lambda handle: write(HalfWriter(handle)))
    return real_atomic_write(path, write)


def replace(src, dst):
    if armed and point == "before-rename":
        die()
    real_replace(src, dst)
    if armed and point == "after-rename":
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


@pytest.mark.parametrize("point, saved", [("mid-write", 3), ("before-rename", 3), ("after-rename", 4)])
def test_project_survives_being_killed_mid_save(tmp_path, point, saved):
    """SIGKILLed at a chosen point of a save, the project file is the last complete save."""
    script = KILL_MID_SAVE.format(repo=str(REPO_ROOT))
    result = subprocess.run([sys.executable, "-c", script, point, str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == -signal.SIGKILL, result.stderr
    loaded = ChapterProject.load(tmp_path)
    assert loaded.settings["n"] == saved
    assert len(loaded.pages) == 2000 and loaded.pages[-1].name == "1999.png"
    # The temp file shows where the process died: half written, complete, or renamed away.
    temps = [p for p in tmp_path.iterdir() if p.name != PROJECT_FILE]
    assert len(temps) == (0 if point == "after-rename" else 1)
    if point == "mid-write":
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
