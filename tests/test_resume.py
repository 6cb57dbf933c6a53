"""A chapter run killed with SIGKILL loses at most the page in flight; --resume finishes it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from engine.cli.main import main
from engine.project.store import PROJECT_FILE

REPO_ROOT = Path(__file__).resolve().parents[1]


def _done_pages(out: Path) -> list[str]:
    data = json.loads((out / PROJECT_FILE).read_text())
    return [p["name"] for p in data["pages"] if p["status"] == "done"]


def _stamp(path: Path) -> tuple[int, int]:
    # An atomic rewrite is a new inode, whatever the file system's mtime resolution.
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns


# The CLI in a child process that SIGKILLs itself at a chosen point of the run: on the first
# ICP progress event of page 3 (hooked into the CLI's event sink: the page is in flight), or
# right after the atomic rename of page 3's output (on disk, not yet recorded in the project).
KILLED_RUN = """
import os, signal, sys

sys.path.insert(0, {repo!r})
from engine.cli import main as cli
from engine.core.events import Progress

point = {point!r}
real_sink, real_replace = cli._progress_sink, os.replace


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def progress_sink(enabled):
    emit, close = real_sink(enabled)

    def hooked(event):
        emit(event)
        if point == "3rd page's ICP" and isinstance(event, Progress) and event.stage == "ICP" and event.page == "3.png":
            die()  # after the first denoising step of page 3

    return hooked, close


def replace(src, dst):
    real_replace(src, dst)
    if point == "3rd page written" and os.path.basename(dst) == "003_3.png":
        die()


cli._progress_sink = progress_sink
os.replace = replace  # fileio's atomic writes rename through the os module
cli.main(sys.argv[1:])
sys.exit("the kill hook never fired")
"""


@pytest.mark.parametrize("point", ["3rd page's ICP", "3rd page written"])
def test_killed_run_resumes_and_recomputes_only_missing_pages(tiny_models_dir, tmp_path, capsys, point):
    from engine.io.demo import make_demo_chapter

    chapter, refs = make_demo_chapter(tmp_path / "data", pages=4, refs=2)
    out = tmp_path / "out"
    # Gray input style: the ScreenStyle pass would double the runtime and has no part in resuming.
    args = ["colorize", str(chapter), "--refs", str(refs), "--out", str(out), "--models", str(tiny_models_dir),
            "--steps", "2", "--size", "256x384", "--input-style", "gray", "--json"]
    script = KILLED_RUN.format(repo=str(REPO_ROOT), point=point)
    result = subprocess.run([sys.executable, "-c", script, *args], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert _done_pages(out) == ["1.png", "2.png"]
    assert not list(out.glob(".*tmp"))  # no write was in flight at either point
    written = {"1.png": "001_1.png", "2.png": "002_2.png"}
    if point == "3rd page written":  # on disk but not in the project: must be made again
        written["3.png"] = "003_3.png"
    assert sorted(p.name for p in out.glob("*.png")) == sorted(written.values())
    stamps = {name: _stamp(out / file) for name, file in written.items()}

    assert main([*args, "--resume"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert sorted(report["skipped"]) == ["1.png", "2.png"]
    assert sorted(report["done"]) == ["3.png", "4.png"]
    assert report["timings_s"]["ICP"] > 0
    assert _done_pages(out) == ["1.png", "2.png", "3.png", "4.png"]
    outputs = sorted(out.glob("*.png"))
    assert [p.name for p in outputs] == ["001_1.png", "002_2.png", "003_3.png", "004_4.png"]
    for name in ("1.png", "2.png"):
        assert _stamp(out / written[name]) == stamps[name]  # skipped, not rewritten
    if "3.png" in stamps:
        assert _stamp(out / "003_3.png") != stamps["3.png"]  # recomputed
    assert all(Image.open(p).size == (360, 512) for p in outputs)


def test_resume_recomputes_when_settings_change(tiny_models_dir, tmp_path, capsys):
    from engine.io.demo import make_demo_chapter

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
