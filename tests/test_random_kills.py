"""A chapter run SIGKILLed at random moments, several times over: each time the project loads,
every output file on disk is complete, and --resume never redoes a page already done."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from engine.project.state import ChapterProject
from engine.project.store import PROJECT_FILE

REPO_ROOT = Path(__file__).resolve().parents[1]


def _check_consistent(out: Path) -> dict[str, tuple[int, int]]:
    """The invariants after any kill; returns the done pages' files and their stamps."""
    done = {}
    if (out / PROJECT_FILE).exists():
        project = ChapterProject.load(out)  # never damaged
        for page in project.pages:
            if page.status == "done":
                path = out / page.outputs["colored"]
                assert path.is_file(), f"{page.name} is done but {path.name} is missing"
                stat = path.stat()
                done[path.name] = (stat.st_ino, stat.st_mtime_ns)
    for path in out.glob("*.png"):
        with Image.open(path) as image:
            image.load()  # a truncated PNG raises here
    return done


@pytest.mark.slow
def test_random_sigkills_never_corrupt_and_resume_never_redoes(tiny_models_dir, tmp_path):
    from engine.io.demo import make_demo_chapter

    chapter, refs = make_demo_chapter(tmp_path / "data", pages=4, refs=2)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "engine.cli.main", "colorize", str(chapter), "--refs", str(refs), "--out", str(out),
               "--models", str(tiny_models_dir), "--steps", "2", "--size", "256x384", "--input-style", "gray",
               "--json", "--resume"]
    # Kill moments as fractions of how long a whole run takes on this machine now (a quiet machine
    # ran the chapter faster than fixed delays of seconds, and nothing was killed): at most 45% of
    # it, so the first attempts are killed while pages are still in flight, whatever the speed.
    started = time.monotonic()
    baseline = subprocess.run([*command[:command.index("--out") + 1], str(tmp_path / "baseline"),
                               *command[command.index("--out") + 2:]], cwd=REPO_ROOT, capture_output=True)
    assert baseline.returncode == 0, baseline.stderr.decode()[-2000:]
    whole_run = time.monotonic() - started
    chooser = random.Random(20261125)  # reproducible "random" moments
    seen: dict[str, tuple[int, int]] = {}
    kills = 0
    for attempt in range(6):
        log = (tmp_path / f"attempt{attempt}.log").open("wb")  # a file: a full pipe would stall the child
        child = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log)
        delay = chooser.uniform(0.15, 0.45) * whole_run
        try:
            child.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGKILL)
            child.wait()
            kills += 1
        log.close()
        assert child.returncode in (0, -signal.SIGKILL), (tmp_path / f"attempt{attempt}.log").read_text()[-2000:]
        done = _check_consistent(out)
        for name, stamp in seen.items():  # a page done before is never made again
            assert done.get(name) == stamp, f"{name} was redone after attempt {attempt}"
        seen = done
        if child.returncode == 0:
            break
    else:  # the last attempt runs to the end
        result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-2000:]
        child = None
    report_text = result.stdout if child is None else child.stdout.read().decode()
    report = json.loads(report_text)
    assert kills >= 2, "the run should have been killed several times"
    assert sorted(report["done"] + report["skipped"]) == ["1.png", "2.png", "3.png", "4.png"]
    final = _check_consistent(out)
    assert len(final) == 4
    # the finished run took the lock, so no half-written temp file of a killed attempt is left
    assert [p.name for p in out.rglob("*.tmp")] == []
    for name, stamp in seen.items():
        assert final[name] == stamp
