"""Two processes on one project: the second is refused (exit 2, before torch) while the first
runs; a lock left by a process that is gone is taken over."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.core.errors import ProjectLockedError
from engine.io.projectlock import LOCK_FILE, ProjectLock

from cli_probe import PROBE

REPO_ROOT = Path(__file__).resolve().parents[1]
HOLDER = (
    "import sys, time\n"
    "from engine.io.projectlock import ProjectLock\n"
    "with ProjectLock(sys.argv[1]):\n"
    "    print('held', flush=True)\n"
    "    time.sleep(120)\n"
)


@pytest.fixture
def holder(tmp_path):
    """A real second process holding the lock of tmp_path/out until killed."""
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "held"
        yield out, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stdout.close()


def _dead_pid() -> int:
    """The PID of a process that has ended (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _write_lock(folder: Path, **fields) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    owner = {"pid": _dead_pid(), "host": socket.gethostname(), "started": "2020-01-01 10:00:00",
             "started_ts": time.time() - 60, **fields}
    path = folder / LOCK_FILE
    path.write_text(json.dumps(owner))
    return path


def _lock_pid(folder: Path) -> int:
    return json.loads((folder / LOCK_FILE).read_text())["pid"]


@pytest.mark.parametrize("command", ["colorize", "retrieve"])
def test_second_process_is_refused_quickly_before_torch(holder, one_page_chapter, command):
    out, process = holder
    pages, refs = one_page_chapter
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", PROBE, command, str(pages), "--refs", str(refs), "--out", str(out), "--models", "tiny"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"code": 2, "torch": False}, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert f"{out} is in use by process {process.pid} (started " in line
    assert f"wait for it to finish or remove {out / LOCK_FILE} if it is gone" in line
    assert elapsed < 30, elapsed  # no model loaded, no waiting on the lock
    assert process.poll() is None and _lock_pid(out) == process.pid  # the holder's lock is left alone
    assert not (out / "colorflow-project.json").exists()


def test_python_m_engine_cli_is_refused_with_exit_2(holder, one_page_chapter):
    out, process = holder
    pages, refs = one_page_chapter
    result = subprocess.run(
        [sys.executable, "-m", "engine.cli.main", "colorize", str(pages), "--refs", str(refs), "--out", str(out),
         "--models", "tiny"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert f"is in use by process {process.pid}" in result.stderr


def test_lock_of_a_killed_process_is_taken_over(holder):
    out, process = holder
    with pytest.raises(ProjectLockedError, match=f"in use by process {process.pid}"):
        ProjectLock(out).acquire()
    process.send_signal(signal.SIGKILL)  # no chance to release: the lock file stays
    process.wait()
    assert _lock_pid(out) == process.pid
    with ProjectLock(out):
        assert _lock_pid(out) == os.getpid()
    assert not (out / LOCK_FILE).exists()  # released on exit
    assert [p.name for p in out.iterdir()] == []  # the stale lock moved aside was removed


def test_stale_lock_with_a_dead_pid_does_not_stop_a_run(tiny_models_dir, one_page_chapter, tmp_path, capsys):
    from engine.cli.main import main

    pages, refs = one_page_chapter
    out = tmp_path / "out"
    _write_lock(out)
    code = main(["retrieve", str(pages), "--refs", str(refs), "--out", str(out), "--models", str(tiny_models_dir),
                 "--size", "256x384", "--input-style", "gray", "--json"])
    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["done"] == ["1.png"]
    assert not (out / LOCK_FILE).exists()


def test_lock_holds_pid_host_and_start_and_is_refused_in_the_same_process(tmp_path):
    with ProjectLock(tmp_path / "out") as lock:
        owner = json.loads(lock.path.read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        assert abs(owner["started_ts"] - time.time()) < 60 and owner["started"]
        with pytest.raises(ProjectLockedError, match="in use by another job of this process"):
            ProjectLock(tmp_path / "out").acquire()
        assert lock.path.exists()
    assert not lock.path.exists()
    with ProjectLock(tmp_path / "out"):  # free again
        pass


def test_release_leaves_a_lock_that_is_no_longer_ours(tmp_path):
    lock = ProjectLock(tmp_path).acquire()
    foreign = _write_lock(tmp_path, pid=1)  # someone removed ours and took it
    lock.release()
    assert json.loads(foreign.read_text())["pid"] == 1


def test_lock_from_another_host_is_respected(tmp_path):
    _write_lock(tmp_path, host="render-box-7")
    with pytest.raises(ProjectLockedError, match=r"in use by process \d+ on render-box-7 \(started 2020-01-01 10:00:00\)"):
        ProjectLock(tmp_path).acquire()


def test_lock_with_a_reused_pid_is_taken_over(holder):
    """The PID is alive, but its process started after the lock was written: another program."""
    out, process = holder
    process.kill()
    process.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(out, pid=live.pid, started_ts=time.time() - 3600)
        with ProjectLock(out):
            assert _lock_pid(out) == os.getpid()
        _write_lock(out, pid=live.pid, started_ts=time.time() + 3600)  # written after it started: alive
        with pytest.raises(ProjectLockedError, match=f"in use by process {live.pid}"):
            ProjectLock(out).acquire()
    finally:
        live.kill()
        live.wait()


def test_garbled_lock_is_busy_while_fresh_and_taken_over_when_old(tmp_path):
    path = tmp_path / LOCK_FILE
    path.write_text("")  # a process between creating the file and writing its PID
    with pytest.raises(ProjectLockedError, match="lock file is being written"):
        ProjectLock(tmp_path).acquire()
    old = time.time() - 3600
    os.utime(path, (old, old))
    with ProjectLock(tmp_path):
        assert _lock_pid(tmp_path) == os.getpid()


def test_taking_the_lock_clears_temp_files_a_killed_run_left(tmp_path):
    """mkstemp's names, as a SIGKILL mid-write leaves them; the user's own files stay."""
    page_folder = tmp_path / "001_page"
    page_folder.mkdir()
    stale = [tmp_path / ".project.json.k3j_9xQa.tmp", page_folder / ".canvas.png.a1B2c3D4.tmp"]
    other_folder = tmp_path / "photos"  # not ColorFlow's: another program's temp file there stays
    other_folder.mkdir()
    kept = [tmp_path / "notes.tmp", tmp_path / ".hidden.tmp", tmp_path / "001_1.png", page_folder / "canvas.png",
            other_folder / ".album.db.q8Zr2kLm.tmp"]
    for path in stale + kept:
        path.write_bytes(b"x")
    with ProjectLock(tmp_path):
        assert [p for p in stale if p.exists()] == []
    assert all(p.exists() for p in kept)


def test_a_refused_lock_leaves_the_holders_temp_files(holder):
    folder, _ = holder
    in_flight = folder / ".project.json.abcdefgh.tmp"
    in_flight.write_bytes(b"being written by the holder")
    with pytest.raises(ProjectLockedError):
        ProjectLock(folder).acquire()
    assert in_flight.exists()
