"""Chapter project state: round trip, atomic save under crashes, refusal to touch bad files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
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


def test_project_survives_being_killed_mid_save(tmp_path):
    """A process saving in a loop is SIGKILLed; the file on disk is always a complete save."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from engine.project import ChapterProject
        project = ChapterProject(folder=__import__("pathlib").Path({str(tmp_path)!r}))
        project.sync_pages([(f"{{i}}.png", f"/c/{{i}}.png") for i in range(2000)])
        n = 0
        while True:
            n += 1
            project.settings["n"] = n
            project.save()
            print(n, flush=True)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    for _ in range(3):  # let it complete a few saves
        process.stdout.readline()
    time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    loaded = ChapterProject.load(tmp_path)
    assert len(loaded.pages) == 2000 and loaded.settings["n"] >= 3


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
