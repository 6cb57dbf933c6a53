"""Where the official files lie in the Hugging Face cache, and which of them are missing."""

from __future__ import annotations

import os
from pathlib import Path

from engine.core.errors import listed
from engine.io.storage import human_bytes
from engine.models.presets import BASE, PresetFile, preset_files


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


def missing_files(preset: str = "official", components: tuple[str, ...] | None = (BASE,)) -> list[PresetFile]:
    """The files of those components of the preset (default: the base) not in the cache."""
    return [f for f in preset_files(preset, components) if local_path(f) is None]


def missing_message(missing: list[PresetFile]) -> str:
    """One short line: what is missing, the download size, the command."""
    total = sum(f.approx_bytes for f in missing)
    everything = len(missing) == len(preset_files("official"))
    if everything:
        what = f"the official models are not downloaded yet ({len(missing)} files)"
    else:
        names = listed((f.path for f in missing), 2)
        what = f"{len(missing)} official model file(s) are missing ({names})"
    return (
        f"{what}: {human_bytes(total)} to download once with `colorflow models download` "
        f"(or try everything offline with --models tiny: random weights, meaningless colors)"
    )
