"""Official weights from the Hugging Face hub: download with byte progress and sha256 check, conversion.

Each downloaded file is checked against its published (else the hub's) sha256 and pinned
(engine/models/pins.py). Files go to the standard HF cache (engine/models/hub_cache.py); only
the files a preset needs are fetched, never whole repositories.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from engine.core.errors import ModelError
from engine.core.events import CancelToken, EventSink, Progress, ignore
from engine.io.storage import human_bytes
from engine.models.hub_cache import hf_cache_dir, local_path, missing_files
from engine.models.pins import FileState, pin, sha256_file
from engine.models.presets import PresetFile, preset_files

DOWNLOAD_MARGIN = 1.05  # a download wants 5% more free space than the files' own size


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

    from engine.io.weight_files import PICKLE_SUFFIXES, read_state_dict

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
