"""A chapter run killed with SIGKILL loses at most the page in flight; --resume finishes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from engine.cli import main
from engine.project import PROJECT_FILE

REPO_ROOT = Path(__file__).resolve().parents[1]


def _done_pages(out: Path) -> list[str]:
    try:
        data = json.loads((out / PROJECT_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return []
    return [p["name"] for p in data["pages"] if p["status"] == "done"]


def test_killed_run_resumes_and_recomputes_only_missing_pages(tiny_models_dir, demo_data, tmp_path, capsys):
    from engine.demo import make_demo_chapter

    chapter, refs = make_demo_chapter(tmp_path / "data", pages=6, refs=2)
    out = tmp_path / "out"
    args = ["colorize", str(chapter), "--refs", str(refs), "--out", str(out), "--models", str(tiny_models_dir),
            "--steps", "2", "--size", "256x384", "--json"]
    env = dict(os.environ)
    process = subprocess.Popen([sys.executable, str(REPO_ROOT / "main.py"), *args], cwd=tmp_path, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while len(_done_pages(out)) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = _done_pages(out)
    assert 2 <= len(done_before) < 6, "the run must be killed part-way"
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert len(stamps) == len(done_before)  # nothing half-written beside the done pages
    assert not list(out.glob(".*tmp"))

    assert main([*args, "--resume"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert sorted(report["skipped"]) == sorted(done_before)
    assert sorted(report["done"]) == sorted(set(f"{i}.png" for i in range(1, 7)) - set(done_before))
    assert report["timings_s"]["ICP"] > 0
    outputs = sorted(out.glob("*.png"))
    assert len(outputs) == 6
    for path, stamp in stamps.items():
        assert path.stat().st_mtime_ns == stamp  # not recomputed
    assert all(Image.open(p).size == (360, 512) for p in outputs)


def test_resume_recomputes_when_settings_change(tiny_models_dir, tmp_path, capsys):
    from engine.demo import make_demo_chapter

    chapter, refs = make_demo_chapter(tmp_path / "data", pages=1, refs=1)
    out = tmp_path / "out"
    base = ["colorize", str(chapter), "--refs", str(refs), "--out", str(out), "--models", str(tiny_models_dir),
            "--steps", "2", "--size", "256x384", "--json"]
    assert main(base) == 0
    capsys.readouterr()
    assert main([*base, "--resume"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped"] == ["1.png"]
    assert main([*base, "--resume", "--seed", "7"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["skipped"] == [] and report["done"] == ["1.png"]
