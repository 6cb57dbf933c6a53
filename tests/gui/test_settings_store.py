"""settings.json (files written here by hand): migration, and a damaged file kept aside, reported once, its valid parts kept."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("PySide6")

from app.settings_store import load_settings, save_settings  # noqa: E402
from engine.core.paths import config_dir  # noqa: E402

# What the app wrote before settings were versioned (the layout of commit 44b3765), by hand.
UNVERSIONED = {
    "run": {"models": "tiny", "device": "cpu", "steps": 7, "seed": 1234, "size": "512x800", "keep_ink": False,
            "low_vram": True, "input_style": "gray", "procedure": "official", "export_format": "png",
            "cache_dir": None},
    "recent": ["/chapters/one", "/chapters/two.cbz"],
    "projects_dir": "/projects",
}


def write(payload) -> tuple:
    path = config_dir() / "settings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    path.write_bytes(raw)
    return path, raw


def kept_aside(path) -> list:
    return sorted(path.parent.glob("settings.json.damaged-*"))


def test_an_unversioned_file_migrates_with_every_value_and_is_saved_as_the_current_version():
    path, _ = write(UNVERSIONED)
    loaded = load_settings()
    assert loaded.problem is None and not kept_aside(path)
    run = loaded.settings.run
    assert (run.models, run.device, run.steps, run.seed, run.size) == ("tiny", "cpu", 7, 1234, "512x800")
    assert (run.keep_ink, run.low_vram, run.input_style, run.procedure, run.export_format) == (
        False, True, "gray", "official", "png")
    assert loaded.settings.recent == ["/chapters/one", "/chapters/two.cbz"]
    assert loaded.settings.projects_dir == "/projects"
    save_settings(loaded.settings)
    saved = json.loads(path.read_text())
    assert saved["version"] == 2 and saved["recent"] == UNVERSIONED["recent"] and saved["run"]["seed"] == 1234


def test_unversioned_keep_ink_true_was_the_default_and_migrates_to_it():
    # before versions the dialog saved keep_ink true whatever the procedure; official ignored it
    write({"run": {"procedure": "official", "keep_ink": True}, "recent": ["/chapters/one"]})
    loaded = load_settings()
    assert loaded.problem is None and loaded.settings.run.keep_ink is None
    assert loaded.settings.run.procedure == "official" and loaded.settings.recent == ["/chapters/one"]


@pytest.mark.parametrize("saved, loaded", [(7.5, None), (5.0, 5.0), (None, None)])
def test_a_version_1_guidance_of_7_5_was_the_default_and_becomes_each_familys(saved, loaded):
    # issue 24: unset guidance is each page's family's official default (7.5 SD, 4.5 PixArt); version 1's
    # dialog saved the untouched box as 7.5
    write({"version": 1, "run": {"guidance": saved, "seed": 5}, "recent": []})
    result = load_settings()
    assert result.problem is None and result.settings.run.guidance == loaded and result.settings.run.seed == 5


def test_one_bad_field_keeps_recent_files_and_the_rest_and_is_reported_once():
    payload = json.loads(json.dumps(UNVERSIONED))
    payload["version"] = 1
    payload["run"]["steps"] = "ten"
    path, raw = write(payload)
    loaded = load_settings()
    assert loaded.settings.recent == UNVERSIONED["recent"] and loaded.settings.run.seed == 1234
    assert loaded.settings.run.steps == 10  # the default, for that field only
    (aside,) = kept_aside(path)
    assert aside.read_bytes() == raw  # the damaged file as it was
    assert str(path) in loaded.problem and aside.name in loaded.problem and "run.steps" in loaded.problem
    assert "\n" not in loaded.problem
    again = load_settings()  # the valid parts were written back: nothing to report a second time
    assert again.problem is None and again.settings.recent == UNVERSIONED["recent"] and len(kept_aside(path)) == 1


def test_bad_json_is_kept_aside_and_reported_never_silently_reset():
    path, raw = write(b'{"recent": ["/chapters/one"], "run": {"steps": 7')
    loaded = load_settings()
    (aside,) = kept_aside(path)
    assert aside.read_bytes() == raw
    assert loaded.problem.startswith(f"Settings file {path} was damaged (not valid JSON")
    assert loaded.settings.recent == [] and loaded.settings.run.steps == 10


def test_a_newer_version_is_kept_aside_and_its_known_settings_kept():
    path, raw = write({"version": 99, "run": {"steps": 7, "sampler": "new"}, "recent": ["/chapters/one"]})
    loaded = load_settings()
    assert "version 99" in loaded.problem and kept_aside(path)[0].read_bytes() == raw
    assert loaded.settings.run.steps == 7 and loaded.settings.recent == ["/chapters/one"]


@pytest.mark.parametrize("payload, named, survives", [
    ({"version": 1, "recent": "/chapters/one", "run": {"seed": 5}}, "recent", lambda s: s.run.seed == 5),
    ({"version": 1, "recent": ["/chapters/one", 7], "run": []}, "run",
     lambda s: s.recent == ["/chapters/one"]),
    ({"version": 1, "recent": ["/chapters/one"], "run": {"procedure": "fastest", "seed": 5}},
     "run.procedure", lambda s: s.recent == ["/chapters/one"] and s.run.procedure == "ours" and s.run.seed == 5),
    ({"version": "one", "recent": ["/chapters/one"], "projects_dir": 3}, "projects_dir",
     lambda s: s.recent == ["/chapters/one"] and s.projects_dir is None),
    ([1, 2], "not a JSON object", lambda s: s.recent == []),
])
def test_wrong_types_drop_only_their_own_field(payload, named, survives):
    path, _ = write(payload)
    loaded = load_settings()
    assert named in loaded.problem and kept_aside(path)
    assert survives(loaded.settings)


def test_the_window_reports_a_settings_problem_naming_the_file(qtbot):
    from PySide6.QtWidgets import QMessageBox

    from app.main_window import MainWindow

    path, _ = write({"version": 1, "recent": ["/chapters/one"], "run": {"steps": "ten"}})
    loaded = load_settings()
    window = MainWindow(loaded.settings, persist_settings=False)
    qtbot.addWidget(window)
    window.report_settings_problem(loaded.problem)
    (box,) = [box for box in window.findChildren(QMessageBox) if box.isVisible()]
    assert str(path) in box.text() and str(path) in window.statusBar().currentMessage()
    window.close()
