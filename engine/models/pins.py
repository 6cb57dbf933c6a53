"""sha256 pins of the official files: the lock, the check before each use, verify, the intact roots."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from engine.core.errors import ModelError, model_permission_error
from engine.core.events import EventSink, Progress, ignore
from engine.core.paths import config_dir
from engine.io.fileio import atomic_write_json
from engine.io.storage import human_bytes
from engine.models.hub_cache import local_path, missing_files, missing_message, snapshot_folder
from engine.models.presets import BASE, LINE_ART_TEXT_ENCODER, PresetFile, preset_files

LOCK_FILE = "models.lock.json"
CHECKED_FILE = "models.checked.json"  # files whose sha256 matched their pin, by path: size, mtime_ns
CHECK_STAGE = "checking model files"  # Progress stage of check_pinned
REPAIR_COMMAND = "colorflow models download --repair"


@dataclass
class FileState:
    file: PresetFile
    local: Path | None  # where it is in the cache, if present
    status: str  # ok | missing | corrupt | unpinned | optional (a line-art file not downloaded: no failure)
    detail: str = ""


def official_roots(emit: EventSink = ignore) -> tuple[Path, Path]:
    """(sd15, colorflow) snapshot folders, or a ModelError naming every missing file or the
    first one whose content no longer matches its pinned sha256 (see check_pinned, which reports
    the files it hashes to `emit`)."""
    missing = missing_files("official")
    if missing:
        raise ModelError(missing_message(missing))
    check_pinned("official", emit)
    files = preset_files("official")
    roots = {f.root: snapshot_folder(f.repo, revision=f.revision) for f in files}
    return roots["sd15"], roots["colorflow"]


# --- checksums ----------------------------------------------------------------------------

def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def lock_path() -> Path:
    return config_dir() / LOCK_FILE


def read_lock() -> dict[str, dict]:
    try:
        return json.loads(lock_path().read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{lock_path()}: checksum lock file is damaged ({exc}); delete it to re-pin") from exc


def expected_hash(file: PresetFile, lock: dict[str, dict]) -> dict | None:
    """What a file must hash to: its published sha256, else the one the lock recorded (with
    its size) at its first download; None when neither exists."""
    if file.sha256:
        return {"sha256": file.sha256, "published": True}
    return lock.get(file.key)


def pin(file: PresetFile, path: Path, sha256: str) -> None:
    """Pin `sha256`, the hash of `path` as it is now (just computed): it also counts as the
    first check of the file (see check_pinned)."""
    lock = read_lock()
    lock[file.key] = {"sha256": sha256, "size": path.stat().st_size}
    atomic_write_json(lock_path(), lock)
    _remember_checked({str(path): _stamp(file, path, sha256)})


# --- integrity on use ---------------------------------------------------------------------

def unreadable_for_check(path: Path, exc: OSError, advice: str) -> ModelError:
    """Why a model file cannot be checked: a permission problem says so (it is not damaged),
    anything else ends with `advice`."""
    return model_permission_error(exc, path) or ModelError(
        f"{path}: cannot be read to check it ({exc.strerror or exc}); {advice}")


def hash_for_check(path: Path, index: int, count: int, total_bytes: int, emit: EventSink, stage: str,
                   advice: str) -> str:
    """sha256 of file `index` of the `count` a check hashes, announced first as a Progress of
    `stage` (seconds per GB: say what is happening); a read error ends with `advice`."""
    emit(Progress(stage, index, count, f"{path.name} ({human_bytes(total_bytes)} in all)"))
    try:
        return sha256_file(path)
    except OSError as exc:
        raise unreadable_for_check(path, exc, advice) from exc


def checked_path() -> Path:
    return config_dir() / CHECKED_FILE


def _read_checked() -> dict[str, dict]:
    """The cache of files already found intact; unreadable or damaged means none (they are
    hashed again, which is only slower)."""
    try:
        data = json.loads(checked_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _remember_checked(changes: dict[str, dict | None]) -> None:
    """Add (or, for None, forget) entries of the cache; a cache that cannot be written is
    not an error (the files are hashed again next time)."""
    checked = _read_checked()
    for path, stamp in changes.items():
        if stamp is None:
            checked.pop(path, None)
        else:
            checked[path] = stamp
    try:
        atomic_write_json(checked_path(), checked)
    except OSError:
        pass


def _stamp(file: PresetFile, path: Path, sha256: str) -> dict:
    stat = path.stat()  # follows the hub cache's symlink to its blob
    return {"key": file.key, "sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def check_pinned(preset: str = "official", emit: EventSink = ignore) -> int:
    """Check every downloaded file of a preset that has a published or pinned sha256 (see
    expected_hash) against it, before it is used: a flipped byte inside a tensor loads
    silently, so only the hash can tell.

    Every component counts (a line-art file is checked once it is downloaded).
    Hashing GBs takes seconds, so each file is hashed once and remembered (CHECKED_FILE:
    path -> pinned sha256, size, mtime_ns); it is hashed again only when its size or mtime
    changes (or its pin does). Files without a pin are not checked: a user's own models
    folder has no pins at all (it has its own record: engine/models/folder_record.py), and a
    file present but never pinned (copied into the cache by hand) has nothing to compare with,
    unless the presets publish its sha256; so is a safetensors conversion of a pinned pickle.
    Returns how many files were hashed; raises a ModelError naming the first damaged file
    and the repair command (its cache entry is dropped, so it is hashed again next time).
    A change that keeps both size and mtime (a clock set back, a byte flipped in place by
    the disk) is only seen by `colorflow models verify`, which always hashes.
    """
    lock = read_lock()
    checked = _read_checked()
    to_hash = []  # (path, pinned, stamp) of files not checked yet in their current state
    for file in preset_files(preset, None):
        pinned = expected_hash(file, lock)
        path = local_path(file)
        if not isinstance(pinned, dict) or "sha256" not in pinned or path is None:
            continue
        if path.suffix == ".safetensors" and not file.path.endswith(".safetensors"):
            continue  # a conversion: the pin is that of the removed original
        try:
            stat = path.stat()
        except OSError as exc:
            raise unreadable_for_check(path, exc, f"run `{REPAIR_COMMAND}`") from exc
        stamp = {"key": file.key, "sha256": pinned["sha256"], "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        if checked.get(str(path)) != stamp:
            to_hash.append((path, pinned, stamp))
    changes: dict[str, dict | None] = {}
    hashed = 0
    total_bytes = sum(stamp["size"] for _, _, stamp in to_hash)
    try:
        for index, (path, pinned, stamp) in enumerate(to_hash):
            if "size" in pinned and stamp["size"] != pinned["size"]:
                problem = f"size {stamp['size']:,} bytes, pinned {pinned['size']:,}"
            else:
                hashed += 1
                digest = hash_for_check(path, index, len(to_hash), total_bytes, emit, CHECK_STAGE,
                                        f"run `{REPAIR_COMMAND}`")
                problem = None if digest == pinned["sha256"] else (
                    f"sha256 does not match the {'published' if pinned.get('published') else 'pinned'} value")
            if problem:
                changes[str(path)] = None
                raise ModelError(f"{path}: {problem} (damaged or replaced); run `{REPAIR_COMMAND}`")
            changes[str(path)] = stamp
        if to_hash:
            emit(Progress(CHECK_STAGE, len(to_hash), len(to_hash)))
    finally:
        if changes:
            _remember_checked(changes)
    return hashed


def verify(preset: str = "official", emit: EventSink = ignore,
           components: tuple[str, ...] | None = (BASE,)) -> list[FileState]:
    """Presence and sha256 of every file of those components of a preset (default: the base; None:
    all) against the published or pinned checksums. A line-art file not downloaded is "optional",
    as are the T5 weights once the prompt embeddings are cached (line_art.embeddings_cached)."""
    from engine.models.line_art import OPTIONAL_DETAIL, T5_CACHED_DETAIL, embeddings_cached, official_pixart_root

    lock = read_lock()
    files = preset_files(preset, components)
    t5_cached = any(f.component == LINE_ART_TEXT_ENCODER for f in files) and embeddings_cached(
        official_pixart_root(preset))
    states = []
    for index, file in enumerate(files):
        emit(Progress("verify", index, len(files), file.path))
        path = local_path(file)
        if path is None and file.component != BASE:
            cached = t5_cached and file.component == LINE_ART_TEXT_ENCODER
            states.append(FileState(file, None, "optional", T5_CACHED_DETAIL if cached else OPTIONAL_DETAIL))
            continue
        if path is None:
            states.append(FileState(file, None, "missing", "not downloaded"))
            continue
        pinned = expected_hash(file, lock)
        if pinned is None:
            states.append(FileState(file, path, "unpinned", "present; no checksum pinned yet"))
            continue
        if path.suffix == ".safetensors" and not file.path.endswith(".safetensors"):
            states.append(FileState(file, path, "ok", "converted copy present (original removed)"))
            continue
        try:
            size = path.stat().st_size
            actual = sha256_file(path) if size == pinned.get("size", size) else ""
        except OSError as exc:  # not damaged: no download would help a permission problem
            raise unreadable_for_check(path, exc, f"run `{REPAIR_COMMAND}`") from exc
        if size != pinned.get("size", size):
            states.append(FileState(file, path, "corrupt", f"size {size:,} bytes, expected {pinned['size']:,}"))
            continue
        status = "ok" if actual == pinned["sha256"] else "corrupt"
        detail = "sha256 matches" if status == "ok" else f"sha256 {actual[:12]}... expected {pinned['sha256'][:12]}..."
        states.append(FileState(file, path, status, detail))
        _remember_checked({str(path): _stamp(file, path, actual) if status == "ok" else None})
    emit(Progress("verify", len(files), len(files)))
    return states
