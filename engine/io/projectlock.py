"""ProjectLock: one ColorFlow process at a time on a project folder (`.colorflow.lock` holding the
PID and host, created with O_EXCL; a lock whose process is gone is taken over)."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from engine.core.errors import OutputError, ProjectLockedError
from engine.io.fileio import remove_stale_temp_files
from engine.io.storage import is_storage_error, storage_advice

LOCK_FILE = ".colorflow.lock"
UNFINISHED_GRACE_S = 10.0  # an empty/garbled lock younger than this is being written: busy

_held: set[Path] = set()  # folders this process holds (a second lock on one is refused)
_held_guard = threading.Lock()


@dataclass(frozen=True)
class LockOwner:
    """Who holds a lock, as written in the lock file."""

    pid: int
    host: str
    started: str  # local time, for people
    started_ts: float  # seconds since the epoch, to spot a reused PID

    @classmethod
    def me(cls) -> "LockOwner":
        now = time.time()
        return cls(os.getpid(), socket.gethostname(), time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)), now)

    def to_bytes(self) -> bytes:
        return json.dumps({"pid": self.pid, "host": self.host, "started": self.started,
                           "started_ts": self.started_ts, "argv": sys.argv[:3]}).encode("utf-8")

    @classmethod
    def parse(cls, raw: bytes) -> "LockOwner | None":
        try:
            data = json.loads(raw.decode("utf-8"))
            pid, host = data["pid"], data["host"]
            if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or not isinstance(host, str):
                return None
            started_ts = data.get("started_ts")
            return cls(pid, host, str(data.get("started", "?")),
                       float(started_ts) if isinstance(started_ts, (int, float)) else 0.0)
        except (UnicodeDecodeError, ValueError, KeyError, TypeError):
            return None


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID runs on this machine (signal 0 on POSIX; psutil elsewhere,
    where os.kill would end the process)."""
    if os.name == "posix":
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # it exists, owned by another user
        except OSError:
            return True
        return not _zombie(pid)
    import psutil

    return psutil.pid_exists(pid)


def _zombie(pid: int) -> bool:
    try:
        import psutil

        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except Exception:  # no psutil, or the process just ended: signal 0 decides
        return False


def _started_after(pid: int, when: float) -> bool:
    """True when the process now using `pid` began after `when` (the PID was reused)."""
    if not when:
        return False
    try:
        import psutil

        return psutil.Process(pid).create_time() > when + 1.0
    except Exception:
        return False


class ProjectLock:
    """`with ProjectLock(folder):` holds `folder/.colorflow.lock` for the block. Another process
    (or another lock in this one) on the same folder gets ProjectLockedError with the holder's
    PID and start time. A lock left by a process that no longer runs on this host is taken over."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._content: bytes | None = None
        self.left_behind: str | None = None  # why release() could not remove the file

    @property
    def held(self) -> bool:
        return self._content is not None

    def acquire(self) -> "ProjectLock":
        if self.held:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        key = self.folder.resolve()
        with _held_guard:
            if key in _held:
                raise ProjectLockedError(f"{self.folder} is in use by another job of this process; "
                                         f"wait for it to finish")
            for _ in range(5):
                content = LockOwner.me().to_bytes()
                try:
                    fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    self._take_over_if_stale()
                    continue
                except OSError as exc:
                    raise self._cannot_write(exc) from exc
                try:
                    try:
                        os.write(fd, content)
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                except OSError as exc:  # a full disk: no empty or partial lock may stay behind
                    try:
                        os.unlink(self.path)
                    except OSError:
                        pass
                    raise self._cannot_write(exc) from exc
                self._content = content
                _held.add(key)
                # ours now, so no write is in flight: clear what a killed run left half-written
                remove_stale_temp_files(self.folder)
                return self
        raise ProjectLockedError(f"{self.folder} is in use: its lock {self.path} keeps changing hands; try again")

    def release(self) -> None:
        """Remove the lock file if it is still ours. In a folder that turned read-only it cannot
        be: it stays, `left_behind` says why, and as its process has ended the next run takes it
        over (no second error on top of the one that stopped the run)."""
        if not self.held:
            return
        try:
            if self.path.read_bytes() == self._content:
                self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            self.left_behind = exc.strerror or str(exc)
        finally:
            self._content = None
            with _held_guard:
                _held.discard(self.folder.resolve())

    def __enter__(self) -> "ProjectLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _cannot_write(self, exc: OSError) -> OutputError:
        advice = storage_advice(exc) if is_storage_error(exc) else "choose another output folder"
        return OutputError(f"{self.path}: cannot write the lock file ({exc.strerror or exc}); {advice}")

    def _busy(self, owner: LockOwner | None) -> ProjectLockedError:
        if owner is None:
            holder = "another process (its lock file is being written)"
        else:
            here = owner.host == socket.gethostname()
            holder = f"process {owner.pid}{'' if here else ' on ' + owner.host} (started {owner.started})"
        return ProjectLockedError(f"{self.folder} is in use by {holder}; wait for it to finish or "
                                  f"remove {self.path} if it is gone")

    def _take_over_if_stale(self) -> None:
        """Raise ProjectLockedError when the holder may still run; else remove its lock."""
        try:
            raw = self.path.read_bytes()
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return  # released meanwhile: try again
        owner = LockOwner.parse(raw)
        if owner is None:
            if age < UNFINISHED_GRACE_S:
                raise self._busy(None)
        elif owner.host != socket.gethostname():
            raise self._busy(owner)  # its process cannot be checked from here
        elif owner.pid != os.getpid() and pid_alive(owner.pid) and not _started_after(owner.pid, owner.started_ts):
            raise self._busy(owner)
        # Stale (its process is gone, or it carries our own PID from a previous life). Move it
        # aside atomically, so that of two processes taking it over only one removes it.
        aside = self.path.with_name(f"{LOCK_FILE}.stale-{uuid.uuid4().hex}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return
        if aside.read_bytes() != raw:  # a live lock created after we looked: put it back
            try:
                os.link(aside, self.path)
            except OSError:
                pass
        aside.unlink()
