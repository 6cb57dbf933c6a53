"""Official weights from the Hugging Face hub: presence, download with byte progress,
sha256 verification (a published sha256, else the one recorded in a lock file at the first
download), safetensors conversion.

Files live in the standard HF cache (HF_HUB_CACHE / HF_HOME respected, read at call time);
only the files a preset needs are fetched, never whole repositories.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from engine.core.errors import ModelError, model_permission_error
from engine.core.events import CancelToken, EventSink, Progress, ignore
from engine.io.fileio import atomic_write_json
from engine.io.storage import human_bytes  # noqa: F401 - also this module's public helper
from engine.models.presets import PresetFile, preset_files  # noqa: F401 - also this module's public names
from engine.core.paths import config_dir

LOCK_FILE = "models.lock.json"
CHECKED_FILE = "models.checked.json"  # files whose sha256 matched their pin, by path: size, mtime_ns
CHECK_STAGE = "checking model files"  # Progress stage of check_pinned
REPAIR_COMMAND = "colorflow models download --repair"
DOWNLOAD_MARGIN = 1.05  # a download wants 5% more free space than the files' own size


@dataclass
class FileState:
    file: PresetFile
    local: Path | None  # where it is in the cache, if present
    status: str  # ok | missing | corrupt | unpinned
    detail: str = ""


def hf_cache_dir() -> Path:
    """The hub cache folder, from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface"
    )
    return Path(home) / "hub"


def snapshot_folder(repo: str, cache: Path | None = None, revision: str | None = None) -> Path | None:
    """The cached snapshot of `repo` at the commit `revision` (as the hub cache names it), else
    at its `main` ref, if any."""
    base = (cache or hf_cache_dir()) / f"models--{repo.replace('/', '--')}"
    if revision:
        folder = base / "snapshots" / revision
        return folder if folder.is_dir() else None
    ref = base / "refs" / "main"
    if not ref.is_file():
        return None
    folder = base / "snapshots" / ref.read_text().strip()
    return folder if folder.is_dir() else None


def local_path(file: PresetFile, cache: Path | None = None) -> Path | None:
    """The file in the cache, or its safetensors conversion when only that is present."""
    folder = snapshot_folder(file.repo, cache, file.revision)
    if folder is None:
        return None
    candidate = folder / file.path
    if candidate.is_file():
        return candidate
    converted = candidate.with_suffix(".safetensors")
    return converted if converted.is_file() else None


def missing_files(preset: str = "official") -> list[PresetFile]:
    return [f for f in preset_files(preset) if local_path(f) is None]


def missing_message(missing: list[PresetFile]) -> str:
    """One short line: what is missing, the download size, the command."""
    total = sum(f.approx_bytes for f in missing)
    everything = len(missing) == len(preset_files("official"))
    if everything:
        what = f"the official models are not downloaded yet ({len(missing)} files)"
    else:
        names = ", ".join(f.path for f in missing[:2]) + (f" and {len(missing) - 2} more" if len(missing) > 2 else "")
        what = f"{len(missing)} official model file(s) are missing ({names})"
    return (
        f"{what}: {human_bytes(total)} to download once with `colorflow models download` "
        f"(or try everything offline with --models tiny: random weights, meaningless colors)"
    )


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
    for file in preset_files(preset):
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


def verify(preset: str = "official", emit: EventSink = ignore) -> list[FileState]:
    """Presence and sha256 of every file of a preset against the published or pinned checksums."""
    lock = read_lock()
    files = preset_files(preset)
    states = []
    for index, file in enumerate(files):
        emit(Progress("verify", index, len(files), file.path))
        path = local_path(file)
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


# --- download -----------------------------------------------------------------------------

def _progress_bar_class(emit: EventSink, name: str, cancel: CancelToken):
    """A tqdm class for huggingface_hub that reports bytes as engine events and cancels."""
    from tqdm.auto import tqdm

    class EventBar(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = False
            kwargs["file"] = open(os.devnull, "w")  # noqa: SIM115 - closed in close()
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            if cancel.cancelled:
                raise ModelError("download cancelled; run it again to resume")
            result = super().update(n)
            emit(Progress("download", int(self.n), int(self.total or 0), name))
            return result

        def close(self):
            handle = self.fp
            super().close()
            try:
                handle.close()
            except Exception:
                pass

    return EventBar


def _expected_sha256(api, repo: str, paths: list[str], revision: str | None) -> dict[str, str]:
    """sha256 of the LFS files as the hub reports them at `revision` (default main; small git
    files have none)."""
    infos = api.get_paths_info(repo, paths, expand=True, revision=revision)
    return {info.path: info.lfs.sha256 for info in infos if getattr(info, "lfs", None)}


def download(
    preset: str = "official",
    emit: EventSink = ignore,
    cancel: CancelToken | None = None,
    force: bool = False,
    endpoint: str | None = None,
    files: list[PresetFile] | None = None,
) -> list[FileState]:
    """Fetch the missing files of a preset (or `files`, or with `force` all of them, fetched
    anew), each at its pinned hub revision (else main); each file's sha256 is checked against
    its published one, else the hub's LFS checksum where there is one, and pinned.
    Interrupted downloads resume."""
    from huggingface_hub import HfApi, hf_hub_download

    cancel = cancel or CancelToken()
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        raise ModelError("HF_HUB_OFFLINE is set: downloads are disabled; unset it to download")
    if files is None:
        files = preset_files(preset) if force else missing_files(preset)
    cache = hf_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    needed = sum(f.approx_bytes for f in files)
    free = shutil.disk_usage(cache).free
    if needed * DOWNLOAD_MARGIN > free:
        raise ModelError(
            f"not enough free disk space in {cache}: {human_bytes(needed)} needed, {human_bytes(free)} free"
        )
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    api = HfApi(endpoint=endpoint)
    states = []
    try:
        expected: dict[str, dict[str, str]] = {}
        for repo in sorted({f.repo for f in files}):
            of_repo = [f for f in files if f.repo == repo]  # one revision per repo (presets.py)
            expected[repo] = _expected_sha256(api, repo, [f.path for f in of_repo], of_repo[0].revision)
        for file in files:
            refetch = force or local_path(file) is not None  # a damaged file is fetched anew
            local = Path(
                hf_hub_download(
                    file.repo, file.path, cache_dir=cache, force_download=refetch, endpoint=endpoint,
                    revision=file.revision, tqdm_class=_progress_bar_class(emit, file.path, cancel),
                )
            )
            actual = sha256_file(local)
            want = file.sha256 or expected[file.repo].get(file.path)
            if want and actual != want:
                local.unlink(missing_ok=True)
                advice = ("fails its published sha256 (the hub serves other bytes now); removed: the "
                          "presets need an update, please report it") if file.sha256 else (
                          "fails its sha256 check; removed, try again")
                raise ModelError(f"{file.repo}/{file.path}: downloaded file {advice}")
            pin(file, local, actual)
            states.append(FileState(file, local, "ok", "downloaded and verified" if want else "downloaded, checksum pinned"))
    except ModelError:
        raise
    except Exception as exc:  # requests/httpx/hub errors: name the cause, never hang
        raise ModelError(
            f"cannot download from the Hugging Face hub ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). "
            f"Check the network or proxy (HTTPS_PROXY), or copy the files into {cache} and use HF_HUB_OFFLINE=1"
        ) from exc
    return states


# --- conversion ---------------------------------------------------------------------------

def convert_to_safetensors(folder: Path, report: Callable[[str], None] = lambda _: None) -> list[Path]:
    """Write `.safetensors` copies of the pickled checkpoints in a GraySD folder (read with
    weights_only=True), checked to reload to identical tensors. The loader prefers them."""
    from safetensors.torch import load_file, save_file

    from engine.io.checkpoints import PICKLE_SUFFIXES, read_state_dict

    written = []
    for path in sorted(Path(folder).iterdir()):
        if path.suffix not in PICKLE_SUFFIXES:
            continue
        target = path.with_suffix(".safetensors")
        state = {k: v.contiguous() for k, v in read_state_dict(path).items()}
        staging = target.with_name(f".{target.name}.tmp")
        save_file(state, str(staging), metadata={"format": "pt", "converted_from": path.name})
        reloaded = load_file(str(staging))
        if reloaded.keys() != state.keys() or any(not reloaded[k].equal(state[k]) for k in state):
            staging.unlink()
            raise ModelError(f"{path}: safetensors copy does not reload identically; not written")
        os.replace(staging, target)
        report(f"{path.name} -> {target.name}")
        written.append(target)
    return written
