"""Custom models folders (--models DIR) you can check: a record of each file's size and sha256,
made on first use, checked cheaply on every run and fully on request.

The record lives in the per-user config folder (RECORDS_DIR), one JSON file per folder keyed by
its resolved path, never inside the models folder: that folder may be read-only or shared, and
a record that travels with the files could be changed together with them. A file is hashed
again only when its size, mtime, ctime or inode changed since it was last hashed; the ctime
cannot be set back by the user, so a byte changed with the mtime restored is still hashed.
The hashing (and its Progress events) is pins.hash_for_check, the same as for the pinned
official files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from engine.core.errors import ModelError
from engine.core.events import EventSink, Progress, ignore
from engine.io.fileio import atomic_write_json
from engine.core.paths import config_dir

RECORDS_DIR = "model-folders"
RECORD_FORMAT = "colorflow-model-folder-record"
RECORD_VERSION = 1
LAYOUT_ROOTS = ("sd15", "colorflow", "pixart")  # what the loaders read (models.sources.ModelPaths; pixart/ optional)
RECORD_STAGE = "recording model files"  # Progress stage: first use, or --accept
RECHECK_STAGE = "checking model files against their record"  # Progress stage: files whose stamp changed
STAMP_KEYS = ("size", "mtime_ns", "ctime_ns", "ino")
# Progress (one line per file on the command line, as for the official files) only when the
# hashing takes a while: about a second per GB; a small folder is hashed before a line is read.
PROGRESS_MIN_BYTES = 10**9


def accept_command(root: Path) -> str:
    return f"colorflow models verify --models {shlex.quote(str(root))} --accept"


def record_path(root: Path) -> Path:
    """Where the record of the folder `root` (resolved) is kept."""
    return config_dir() / RECORDS_DIR / f"{hashlib.sha256(str(root).encode()).hexdigest()[:24]}.json"


def model_files(root: Path) -> dict[str, Path]:
    """Every non-hidden file under DIR/sd15, DIR/colorflow and DIR/pixart by its path relative to DIR,
    symlinked folders followed (a trainer's output links the base's folders), each real folder once."""
    files: dict[str, Path] = {}
    seen: set[tuple[int, int]] = set()
    for top in LAYOUT_ROOTS:
        for folder, subfolders, names in os.walk(root / top, followlinks=True):
            try:
                stat = os.stat(folder)
            except OSError:
                subfolders[:] = []
                continue
            if (stat.st_dev, stat.st_ino) in seen:  # a symlink loop or a folder linked twice
                subfolders[:] = []
                continue
            seen.add((stat.st_dev, stat.st_ino))
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            for name in names:
                path = Path(folder) / name
                if not name.startswith(".") and path.is_file():
                    files[path.relative_to(root).as_posix()] = path
    return dict(sorted(files.items()))


@dataclass(frozen=True)
class FileChange:
    """One file that differs from the record: changed, missing or new."""

    relative: str
    kind: str
    detail: str = ""

    def line(self) -> str:
        return f"{self.kind:>8}  {self.relative}  {self.detail}".rstrip()

    def sentence(self, root: Path) -> str:
        since = "since this models folder was recorded"
        if self.kind == "changed":
            return f"{root / self.relative}: content changed {since} ({self.detail})"
        return f"{root / self.relative}: {self.kind} {since}"


@dataclass
class FolderCheck:
    """The outcome of checking a folder against its record."""

    root: Path
    record: Path
    first: bool  # no record existed: it was just made
    entries: dict[str, dict]  # the files as they are now: sha256 (None: not hashed) and stamp
    hashed: int = 0
    changes: list[FileChange] = field(default_factory=list)

    @property
    def content_id(self) -> str:
        """The files' contents: relative paths and sha256s (not sizes or times)."""
        return self.content_id_of(lambda relative: True)

    def content_id_of(self, keep: Callable[[str], bool]) -> str:
        """The content id of the files whose relative path `keep` accepts (one model set's files)."""
        digest = hashlib.sha256()
        for relative, entry in sorted(self.entries.items()):
            if keep(relative):
                digest.update(f"{relative}\t{entry['sha256']}\n".encode())
        return digest.hexdigest()[:20]

    @property
    def total_bytes(self) -> int:
        return sum(entry["size"] for entry in self.entries.values())

    def refusal(self) -> str:
        """One line: the first change, how many more, and the two ways out."""
        first, more = self.changes[0], len(self.changes) - 1
        verify = f"colorflow models verify --models {shlex.quote(str(self.root))}"
        listing = f" (and {more} more file(s): `{verify}` lists them)"
        return (f"{first.sentence(self.root)}{listing if more else ''}; if the change is intended run "
                f"`{accept_command(self.root)}`, else restore the file{'s' if more else ''}")


def _read_record(path: Path, root: Path) -> dict | None:
    """The record's files, None when the folder was never recorded; a damaged record is a
    ModelError (it cannot vouch for anything)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: the record of {root} is damaged ({exc.__class__.__name__}); "
                         f"make it again with `{accept_command(root)}`") from exc
    files = data.get("files") if isinstance(data, dict) else None
    valid = (isinstance(files, dict) and data.get("format") == RECORD_FORMAT and data.get("version") == RECORD_VERSION
             and data.get("folder") == str(root)
             and all(isinstance(e, dict) and isinstance(e.get("sha256"), str)
                     and all(isinstance(e.get(k), int) for k in STAMP_KEYS) for e in files.values()))
    if not valid:
        raise ModelError(f"{path}: the record of {root} is damaged (not a ColorFlow folder record); "
                         f"make it again with `{accept_command(root)}`")
    return files


def _stamp(path: Path) -> dict:
    from engine.models.pins import unreadable_for_check

    try:
        stat = path.stat()
    except OSError as exc:
        raise unreadable_for_check(path, exc, "restore or replace it") from exc
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns, "ino": stat.st_ino}


def _write(check: FolderCheck, files: dict[str, dict], strict: bool) -> None:
    """Save the record; on a plain run (not `strict`) a config folder that cannot be written
    only means the files are hashed again next time."""
    payload = {"format": RECORD_FORMAT, "version": RECORD_VERSION, "folder": str(check.root),
               "recorded": time.strftime("%Y-%m-%d %H:%M:%S"), "files": files}
    try:
        atomic_write_json(check.record, payload)
    except OSError:
        if strict:
            raise


def check_folder(root: Path, emit: EventSink = ignore, rehash: bool = False, accept: bool = False) -> FolderCheck:
    """Compare the folder `root` (resolved) with its record, hashing only the files whose
    size, mtime, ctime or inode changed (every file with `rehash`); first use records it.
    With `accept` the folder as it is now becomes the record (a damaged record is replaced).
    Files seen unchanged get their new stamp remembered; changed ones keep their old entry
    until accepted, so every run refuses them again."""
    from engine.models.pins import hash_for_check

    record = record_path(root)
    try:
        old = _read_record(record, root)
    except ModelError:
        if not accept:
            raise
        old = None
    check = FolderCheck(root, record, first=old is None, entries={})
    recorded = old or {}
    paths = model_files(root)
    stamps = {relative: _stamp(path) for relative, path in paths.items()}

    def same_size(rel: str) -> bool:
        return rel in recorded and recorded[rel]["size"] == stamps[rel]["size"]

    def needs_hash(rel: str) -> bool:
        if old is None:
            return True
        if not (accept or same_size(rel)):
            return False  # new, or a new size: a change either way, hashed once accepted
        return rehash or {k: recorded.get(rel, {}).get(k) for k in STAMP_KEYS} != stamps[rel]

    to_hash = [rel for rel in paths if needs_hash(rel)]
    stage = RECORD_STAGE if old is None or accept else RECHECK_STAGE
    total = sum(stamps[rel]["size"] for rel in to_hash)
    emit = emit if total >= PROGRESS_MIN_BYTES else ignore
    advice = "restore or replace it"
    for index, rel in enumerate(to_hash):
        check.entries[rel] = {"sha256": hash_for_check(paths[rel], index, len(to_hash), total, emit, stage, advice),
                              **stamps[rel]}
    if to_hash:
        emit(Progress(stage, len(to_hash), len(to_hash)))
    check.hashed = len(to_hash)
    for rel in paths:
        if rel not in check.entries:
            known = same_size(rel) and recorded[rel]["sha256"]
            check.entries[rel] = {"sha256": known or None, **stamps[rel]}
    if old is not None:
        check.changes = _changes(recorded, check.entries)
    if old is None or accept:
        _write(check, check.entries, strict=accept)
        return check
    # Unchanged files keep their new stamp (not hashed again); changed ones their recorded entry.
    kept = {rel: check.entries[rel] if _matches(entry, check.entries.get(rel)) else entry
            for rel, entry in recorded.items()}
    if kept != recorded:
        _write(check, kept, strict=False)
    return check


def _matches(recorded: dict, current: dict | None) -> bool:
    return current is not None and current["sha256"] == recorded["sha256"] and current["size"] == recorded["size"]


def _changes(recorded: dict[str, dict], current: dict[str, dict]) -> list[FileChange]:
    changes = []
    for rel in sorted(set(recorded) | set(current)):
        was, now = recorded.get(rel), current.get(rel)
        if now is None:
            changes.append(FileChange(rel, "missing"))
        elif was is None:
            changes.append(FileChange(rel, "new", f"{now['size']:,} bytes"))
        elif now["size"] != was["size"]:
            changes.append(FileChange(rel, "changed", f"size {now['size']:,} bytes, recorded {was['size']:,}"))
        elif now["sha256"] != was["sha256"]:
            changes.append(FileChange(rel, "changed", "sha256 differs"))
    return changes


def require_unchanged(root: Path, emit: EventSink = ignore) -> FolderCheck:
    """The check of the folder `root` (resolved; its content ids), recording it on first use; a ModelError
    naming the first file that changed since it was recorded and how to accept the change."""
    check = check_folder(root, emit)
    if check.changes:
        raise ModelError(check.refusal())
    return check


def accept_if_recorded(root: Path, emit: EventSink = ignore) -> FolderCheck | None:
    """After one of our own commands wrote into a models folder (convert, make-tiny, a trainer):
    its record, if it has one, takes the new files (the change is intended)."""
    root = Path(root).expanduser().resolve()
    if not record_path(root).exists():
        return None
    return check_folder(root, emit, accept=True)
