"""The Model manager dialog: sizes, destination and free space, licences, GPU, and the speed probe run in the worker."""

from __future__ import annotations

import collections
import json
import shutil

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import Qt  # noqa: E402

from app.model_dialog import ModelDialog  # noqa: E402
from app.worker import EngineWorker  # noqa: E402
from engine.io.storage import human_bytes  # noqa: E402
from engine.models.presets import preset_files  # noqa: E402
from engine.models.speed import probe_path  # noqa: E402

Usage = collections.namedtuple("Usage", "total used free")
WAIT_MS = 120_000


@pytest.fixture
def worker():
    worker = EngineWorker()
    yield worker
    worker.shutdown()


def open_dialog(qtbot, worker) -> ModelDialog:
    dialog = ModelDialog(worker)
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog


def test_dialog_shows_sizes_folder_space_warning_licences_gpu_and_speed(qtbot, worker, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(3 * 10**9, 10**9, 2 * 10**9))
    dialog = open_dialog(qtbot, worker)
    files = preset_files()
    rows = {dialog.tree.topLevelItem(i).text(0): dialog.tree.topLevelItem(i) for i in range(dialog.tree.topLevelItemCount())}
    assert len(rows) == len(files)
    for file in files:  # nothing installed: every size is the expected download size
        row = rows[f"{file.repo}/{file.path}"]
        assert (row.text(1), row.text(2)) == (f"~{human_bytes(file.approx_bytes)}", "no")
        # no sha256 is published and no full hub commit is known for any official file
        assert row.text(3) == "trust on first use" and "main branch" in row.toolTip(3)
    needed = human_bytes(sum(f.approx_bytes for f in files))
    assert dialog.total.text() == f"Total {needed}: 0 B installed, {needed} still to download."
    assert str(tmp_path / "hf" / "hub") in dialog.destination.text()
    assert f"2.0 GB free (measured at {tmp_path})" in dialog.destination.text()
    assert dialog.space_warning.isVisible() and "not enough free disk space" in dialog.space_warning.text()
    licences = dialog.licences.text()
    for text in ("CreativeML OpenRAIL-M", "Academic Software Licence (ASL)",
                 "href='https://github.com/TencentARC/ColorFlow/blob/main/LICENSE'",
                 "href='https://huggingface.co/spaces/CompVis/stable-diffusion-license'"):
        assert text in licences
    qtbot.waitUntil(lambda: "checking" not in dialog.gpu.text(), timeout=WAIT_MS)
    assert dialog.gpu.text().startswith("GPU: ")
    assert dialog.speed.text().endswith("not measured — run `colorflow models probe` or press Measure speed")
    assert dialog.download_button.isEnabled() and not dialog.probe_button.isEnabled()


def test_no_warning_when_the_download_fits(qtbot, worker, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**13, 0, 10**12))
    dialog = open_dialog(qtbot, worker)
    assert not dialog.space_warning.isVisible() and dialog.space_warning.text() == ""


def test_measure_speed_runs_the_probe_in_the_worker_and_shows_it(qtbot, worker, hub_snapshot, monkeypatch):
    from engine.core.geometry import WorkSize

    monkeypatch.setattr(ModelDialog, "probe_size", WorkSize.parse("256x384"))
    monkeypatch.setattr(ModelDialog, "probe_steps", 1)
    dialog = open_dialog(qtbot, worker)
    assert dialog.summary.text() == "All official files are installed."
    assert not dialog.download_button.isEnabled() and dialog.probe_button.isEnabled()
    stages = []
    worker.progress.connect(lambda job, event: stages.append(event.stage))
    qtbot.mouseClick(dialog.probe_button, Qt.LeftButton)
    assert not dialog.probe_button.isEnabled() and dialog.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: dialog.task() is None, timeout=WAIT_MS)
    probe = json.loads(probe_path().read_text())["official"]
    assert (probe["size"], probe["steps"]) == ("256x384", 1)
    assert dialog.summary.text().startswith(f"Measured {probe['page_s']:.1f} s per page on {probe['device_name']}")
    assert dialog.speed.text().endswith(f"last probe: {probe['page_s']:.1f} s/page on {probe['device']} "
                                        f"({probe['measured'][:10]}, 1 step, 256x384)")
    assert {"load", "ScreenStyle", "RAP", "ICP", "GSRP"} <= set(stages)
    assert dialog.probe_button.isEnabled() and not dialog.cancel_button.isEnabled()


def test_cancelled_probe_stores_nothing(qtbot, worker, hub_snapshot, monkeypatch):
    from engine.core.geometry import WorkSize

    monkeypatch.setattr(ModelDialog, "probe_size", WorkSize.parse("256x384"))
    dialog = open_dialog(qtbot, worker)
    qtbot.mouseClick(dialog.probe_button, Qt.LeftButton)
    qtbot.mouseClick(dialog.cancel_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: dialog.task() is None, timeout=WAIT_MS)
    assert dialog.summary.text().startswith("Speed probe stopped:")
    assert not probe_path().exists()
    assert dialog.speed.text().endswith("not measured — run `colorflow models probe` or press Measure speed")


def test_dialog_shows_the_memory_estimate_for_the_settings_size(qtbot, worker, tmp_path, monkeypatch):
    """The Model manager shows, for the working size it is given (Settings), the same per-stage
    figures as `colorflow models list --size` (engine/pipelines/memory.summary), computed in the worker."""
    from engine.pipelines.memory import GIB, summary

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    dialog = ModelDialog(worker, size="640x640")
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitUntil(lambda: "estimating" not in dialog.memory.text(), timeout=WAIT_MS)
    text = dialog.memory.text()
    assert "at 640x640" in text
    for label, found in summary("640x640"):
        assert f"{label}: <b>{found.peak / GIB:.1f} GiB</b> ({found.stage_text()})" in text
