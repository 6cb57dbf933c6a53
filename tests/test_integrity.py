"""Official files are checked against their pinned sha256 before use, hashed once and again only after a change of size or mtime."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from engine.core.errors import ModelError
from engine.models import pins
from engine.models.hub_cache import local_path
from engine.models.pins import check_pinned, checked_path, pin, sha256_file, verify
from engine.models.presets import preset_files
from engine.models.sources import resolve_models

VAE = "vae/diffusion_pytorch_model.safetensors"


@pytest.fixture
def hashed(monkeypatch) -> list[str]:
    """The files hashed by the engine from now on (by path relative to the snapshot)."""
    calls: list[str] = []

    def counting(path, *args, **kwargs):
        calls.append("/".join(Path(path).parts[-2:]))
        return sha256_file(path, *args, **kwargs)

    monkeypatch.setattr(pins, "sha256_file", counting)
    return calls


def _pin_all(checked: bool = True) -> None:
    """Pin every file as a download does; without `checked`, as pins written before the
    on-use check existed (nothing remembered as checked yet)."""
    for file in preset_files("official"):
        path = local_path(file)
        pin(file, path, sha256_file(path))
    if not checked:
        checked_path().unlink()


def _path(relative: str) -> Path:
    return local_path(next(f for f in preset_files() if f.path == relative))


def _flip_byte_in_tensor_data(path: Path) -> None:
    """One bit of one weight: the header (and so every shape) stays valid."""
    data = bytearray(path.read_bytes())
    header = int.from_bytes(data[:8], "little")
    data[8 + header + (len(data) - 8 - header) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_flipped_byte_in_a_tensor_is_caught_before_the_models_load(hub_snapshot, hashed):
    from safetensors.torch import load_file

    from engine.pipelines.page import load_retriever

    _pin_all()
    vae = _path(VAE)
    _flip_byte_in_tensor_data(vae)
    load_file(str(vae))  # what makes the check necessary: safetensors loads it without a word
    with pytest.raises(ModelError) as error:
        load_retriever("official")
    message = str(error.value)
    assert message == (
        f"{vae}: sha256 does not match the pinned value (damaged or replaced); "
        f"run `colorflow models download --repair`"
    )
    assert hashed == ["vae/diffusion_pytorch_model.safetensors"]  # the others are unchanged since pinned
    with pytest.raises(ModelError, match="sha256 does not match"):  # still damaged: still refused
        resolve_models("official")
    assert hashed.count("vae/diffusion_pytorch_model.safetensors") == 2


def test_first_use_hashes_each_pinned_file_once_then_only_stats(hub_snapshot, hashed):
    _pin_all(checked=False)
    resolve_models("official")
    assert len(hashed) == len(preset_files("official")) == 20
    hashed.clear()
    resolve_models("official")
    resolve_models("official")
    assert hashed == []
    remembered = json.loads(checked_path().read_text())
    assert remembered[str(_path(VAE))]["size"] == _path(VAE).stat().st_size


def test_touched_file_is_hashed_again_and_passes(hub_snapshot, hashed):
    _pin_all()
    vae = _path(VAE)
    stat = vae.stat()
    os.utime(vae, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert check_pinned() == 1
    assert hashed == ["vae/diffusion_pytorch_model.safetensors"]
    assert check_pinned() == 0


def test_truncated_file_is_refused_by_size_without_hashing(hub_snapshot, hashed):
    _pin_all()
    lora = _path("GraySD/unet_lora.bin")
    size = lora.stat().st_size
    lora.write_bytes(lora.read_bytes()[:1000])
    with pytest.raises(ModelError) as error:
        resolve_models("official")
    assert str(error.value) == (
        f"{lora}: size 1,000 bytes, pinned {size:,} (damaged or replaced); run `colorflow models download --repair`"
    )
    assert hashed == []


def test_repaired_file_passes_again(hub_snapshot, hashed):
    _pin_all()
    vae = _path(VAE)
    original = vae.read_bytes()
    _flip_byte_in_tensor_data(vae)
    with pytest.raises(ModelError):
        resolve_models("official")
    vae.write_bytes(original)  # what `models download --repair` does: the file anew
    resolve_models("official")
    assert hashed == [f"vae/{vae.name}"] * 2


def test_verify_counts_as_a_check(hub_snapshot, hashed):
    _pin_all(checked=False)
    assert all(state.status == "ok" for state in verify())
    hashed.clear()
    assert check_pinned() == 0 and hashed == []


def test_files_without_a_pin_are_not_checked(hub_snapshot, hashed):
    resolve_models("official")  # downloaded files never pinned (nothing to compare with)
    assert hashed == []  # (a user's own folder has its own record: tests/test_model_record.py)


def test_colorize_with_a_damaged_official_file_is_one_line_before_torch(hub_snapshot, one_page_chapter, tmp_path):
    import subprocess
    import sys

    _pin_all()
    lora = _path("GraySD/unet_lora.bin")
    data = bytearray(lora.read_bytes())
    data[len(data) // 2] ^= 0xFF
    lora.write_bytes(bytes(data))
    pages, refs = one_page_chapter
    from cli_probe import PROBE as probe

    result = subprocess.run(
        [sys.executable, "-c", probe, "colorize", str(pages), "--refs", str(refs), "--out", str(tmp_path / "out"),
         "--models", "official"],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, env=dict(os.environ),
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"code": 2, "torch": False}, result.stderr
    # first run after the pins: one progress line per file hashed, then the one error line
    *progress, error = result.stderr.strip().splitlines()
    assert progress and all(line.startswith("checking the model files against their pinned sha256 (once): ")
                            for line in progress), result.stderr
    assert progress[0].split(": ", 1)[1].startswith("1/")
    assert error == (f"colorflow: error: {lora}: sha256 does not match the pinned value (damaged or replaced); "
                        f"run `colorflow models download --repair`")


def test_hashing_reports_progress_per_file_and_nothing_once_checked(hub_snapshot):
    from engine.core.events import Progress

    _pin_all(checked=False)
    pinned = sum(1 for f in preset_files("official") if local_path(f) is not None)
    events: list[Progress] = []
    pins.check_pinned("official", events.append)
    assert [(e.step, e.total) for e in events] == [(i, pinned) for i in range(pinned + 1)]
    assert all(e.stage == "checking model files" for e in events)
    assert events[0].page.startswith(Path(local_path(preset_files("official")[0])).name)
    events.clear()
    pins.check_pinned("official", events.append)  # all remembered as checked: no hashing, no lines
    assert events == []
