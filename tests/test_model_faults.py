"""Every file of the model layout, damaged every way (truncated, invalid JSON, wrong types, wrong sizes, deleted), fails as one ModelError line naming it."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest
import torch

from engine.models.sources import RANDOM_WEIGHTS_NOTE

from engine.core.errors import InputError, ModelError

REPO_ROOT = Path(__file__).resolve().parents[1]

# The layout as make_tiny writes it (the official files plus tokenizer.json, which the
# official SD1.5 tokenizer folder lacks). A test below keeps this list honest.
LAYOUT = [
    "colorflow/GraySD/MultiResNetModel.bin",
    "colorflow/GraySD/config.json",
    "colorflow/GraySD/diffusion_pytorch_model.bin",
    "colorflow/GraySD/unet_lora.bin",
    "colorflow/ScreenStyle/ScreenVAE/latest_net_dec.pth",
    "colorflow/ScreenStyle/color2manga/color2manga_cycle_ganstft/latest_net_G_RGB2INTSCR.pth",
    "colorflow/image_encoder/config.json",
    "colorflow/image_encoder/model.safetensors",
    "sd15/model_index.json",
    "sd15/scheduler/scheduler_config.json",
    "sd15/text_encoder/config.json",
    "sd15/text_encoder/model.safetensors",
    "sd15/tokenizer/merges.txt",
    "sd15/tokenizer/special_tokens_map.json",
    "sd15/tokenizer/tokenizer.json",
    "sd15/tokenizer/tokenizer_config.json",
    "sd15/tokenizer/vocab.json",
    "sd15/unet/config.json",
    "sd15/unet/diffusion_pytorch_model.safetensors",
    "sd15/vae/config.json",
    "sd15/vae/diffusion_pytorch_model.safetensors",
]
# The line-art styles' files (issue 24): the PixArt-alpha base, the sketch/ and shading/ folders and
# the line extractor. Not walked by the damage cases below, which load the SD1.5 family.
LINE_ART_LAYOUT = [
    *(f"colorflow/{style}/{name}" for style in ("shading", "sketch")
      for name in ("MultiResNetModel.bin", "config.json", "diffusion_pytorch_model.bin", "transformer_lora.bin")),
    "colorflow/LE/erika.pth",
    "pixart/model_index.json",
    "pixart/scheduler/scheduler_config.json",
    "pixart/text_encoder/config.json",
    "pixart/text_encoder/model-00001-of-00002.safetensors",
    "pixart/text_encoder/model-00002-of-00002.safetensors",
    "pixart/text_encoder/model.safetensors.index.json",
    "pixart/tokenizer/added_tokens.json",
    "pixart/tokenizer/special_tokens_map.json",
    "pixart/tokenizer/spiece.model",
    "pixart/tokenizer/tokenizer_config.json",
    "pixart/transformer/config.json",
    "pixart/transformer/diffusion_pytorch_model.safetensors",
    "pixart/vae/config.json",
    "pixart/vae/diffusion_pytorch_model.safetensors",
]

# Damage that is harmless because the loader never needs that content; everything else
# must fail. Values: why loading is right to succeed.
HARMLESS = {
    ("sd15/model_index.json", fault): "the pipeline index: components are loaded from their own folders"
    for fault in ("truncate", "invalid-json", "wrong-type", "delete")
}
HARMLESS[("sd15/tokenizer/special_tokens_map.json", "delete")] = "tokenizer_config.json names the same tokens"
HARMLESS[("sd15/tokenizer/tokenizer.json", "delete")] = "the official layout: vocab.json + merges.txt"

# Files read only when tokenizer.json is absent, as in the official SD1.5 folder: their
# cases run without it (with it, their damage would not even be read).
OFFICIAL_TOKENIZER_ONLY = {"sd15/tokenizer/vocab.json", "sd15/tokenizer/merges.txt"}

# Wrong types: a number or list the loader uses, replaced by a string (None: no such value).
WRONG_TYPE_KEY = {
    "colorflow/GraySD/config.json": "block_out_channels",
    "colorflow/image_encoder/config.json": "hidden_size",
    "sd15/model_index.json": "unet",
    "sd15/scheduler/scheduler_config.json": "num_train_timesteps",
    "sd15/text_encoder/config.json": "hidden_size",
    "sd15/tokenizer/special_tokens_map.json": None,  # strings only
    "sd15/tokenizer/tokenizer.json": "added_tokens",
    "sd15/tokenizer/tokenizer_config.json": "model_max_length",
    "sd15/tokenizer/vocab.json": "a",  # a token's id
    "sd15/unet/config.json": "block_out_channels",
    "sd15/vae/config.json": "block_out_channels",
}

# Wrong sizes of a config: a dimension that no longer fits the weights (or the text encoder).
WRONG_SIZE_CONFIG = {
    "colorflow/GraySD/config.json": ("conditioning_channels", 5),
    "colorflow/image_encoder/config.json": ("projection_dim", 16),
    "sd15/text_encoder/config.json": ("hidden_size", 48),
    "sd15/tokenizer/tokenizer_config.json": ("model_max_length", 100),
    "sd15/unet/config.json": ("cross_attention_dim", 48),
    "sd15/vae/config.json": ("latent_channels", 8),
}
WEIGHTS = (".safetensors", ".bin", ".pth")


# --- damage -------------------------------------------------------------------------------

def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _invalid_json(path: Path) -> None:
    path.write_bytes(path.read_bytes().rstrip()[:-1] + b",,}")


def _set(path: Path, key: str, value) -> None:
    data = json.loads(path.read_text())
    assert key in data, f"{path}: no {key!r} to damage"
    data[key] = value
    path.write_text(json.dumps(data))


def _resize_one_tensor(path: Path) -> None:
    """Rewrite a checkpoint in its own format with its first tensor one row longer."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file, save_file

        state = load_file(str(path))
    else:
        state = torch.load(path, weights_only=True)
    key = sorted(k for k, v in state.items() if v.dim() >= 1)[0]
    tensor = state[key]
    state[key] = torch.zeros((tensor.shape[0] + 1, *tensor.shape[1:]), dtype=tensor.dtype)
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)


def _grow_vocabulary(path: Path) -> None:
    """More tokens than the text encoder has embeddings."""
    data = json.loads(path.read_text())
    vocab = data["model"]["vocab"] if path.name == "tokenizer.json" else data
    for extra in range(20):
        vocab[f"zz{extra}"] = len(vocab)
    path.write_text(json.dumps(data))


def damage_for(relative: str, fault: str) -> Callable[[Path], None]:
    if fault == "truncate":
        return _truncate
    if fault == "invalid-json":
        return _invalid_json
    if fault == "delete":
        return Path.unlink
    if fault == "wrong-type":
        return lambda path: _set(path, WRONG_TYPE_KEY[relative], "abc")
    if relative.endswith(WEIGHTS):
        return _resize_one_tensor
    if Path(relative).name in ("vocab.json", "tokenizer.json"):
        return _grow_vocabulary
    return lambda path: _set(path, *WRONG_SIZE_CONFIG[relative])


def faults_of(relative: str) -> list[str]:
    name = Path(relative).name
    faults = ["truncate", "delete"]
    if name.endswith(".json"):
        faults.append("invalid-json")
        if WRONG_TYPE_KEY[relative]:
            faults.append("wrong-type")
    if relative.endswith(WEIGHTS) or relative in WRONG_SIZE_CONFIG or name in ("vocab.json", "tokenizer.json"):
        faults.append("wrong-size")
    return faults


CASES = [(relative, fault) for relative in LAYOUT for fault in faults_of(relative)]
# Truncation applies to every file: those cases go through the full entry point.
FULL_ENTRY_FAULT = "truncate"


@contextlib.contextmanager
def damaged(root: Path, relative: str, fault: str) -> Iterator[Path]:
    """`relative` under `root` damaged for the duration, then restored byte for byte."""
    path = root / relative
    original = path.read_bytes()
    moved = []
    if relative in OFFICIAL_TOKENIZER_ONLY:
        fast = root / "sd15/tokenizer/tokenizer.json"
        moved.append((fast, fast.read_bytes()))
        fast.unlink()
    try:
        damage_for(relative, fault)(path)
        yield path
    finally:
        path.write_bytes(original)
        for other, data in moved:
            other.write_bytes(data)


# --- loading ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fault_root(tiny_models_dir, tmp_path_factory) -> Path:
    """One private copy of the tiny models for the whole walk: each case restores its file."""
    import shutil

    root = tmp_path_factory.mktemp("fault-walk") / "models"
    shutil.copytree(tiny_models_dir, root)
    return root


def load_full(root: Path, cache: Path) -> None:
    """What `colorflow colorize` loads: RAP, ScreenStyle, SD1.5 + GraySD."""
    from engine.pipelines.page import load_pipeline

    load_pipeline(str(root), cache_dir=cache, input_style="screen")


def load_narrow(root: Path, relative: str, cache: Path) -> None:
    """The entry point of the stage that reads `relative` (`colorflow retrieve` for the image
    encoder, the ScreenStyle preparer, the diffusion loader for SD1.5 and GraySD)."""
    from engine.pipelines.page import load_preparer, load_retriever

    if relative.startswith("colorflow/image_encoder/"):
        load_retriever(str(root), cache_dir=cache)
    elif relative.startswith("colorflow/ScreenStyle/"):
        load_preparer(str(root), cache_dir=cache, style="screen")
    else:
        from engine.models.loading import load_diffusion
        from engine.models.sources import resolve_models

        load_diffusion(resolve_models(str(root)))


def outcome(load: Callable[[], None]) -> str | None:
    """None when it loads, else the message of the (one permitted) error type."""
    try:
        load()
    except (ModelError, InputError) as error:
        return str(error)
    return None


def test_layout_lists_every_file_make_tiny_writes(tiny_models_dir):
    written = sorted(
        p.relative_to(tiny_models_dir).as_posix() for p in tiny_models_dir.rglob("*")
        if p.is_file() and p.parent != tiny_models_dir and p.name != RANDOM_WEIGHTS_NOTE  # the markers: not read by loaders
    )
    assert written == sorted(LAYOUT + LINE_ART_LAYOUT)
    assert sorted(p for p in WRONG_TYPE_KEY) == [p for p in LAYOUT if p.endswith(".json")]


@pytest.mark.parametrize("relative, fault", CASES, ids=[f"{r}-{f}" for r, f in CASES])
def test_damaged_file_fails_as_one_line_naming_it(fault_root, tmp_path, relative, fault):
    with damaged(fault_root, relative, fault):
        if fault == FULL_ENTRY_FAULT:
            message = outcome(lambda: load_full(fault_root, tmp_path / "cache"))
        else:
            message = outcome(lambda: load_narrow(fault_root, relative, tmp_path / "cache"))
    harmless = HARMLESS.get((relative, fault))
    if harmless:
        assert message is None, f"{relative} {fault} should load ({harmless}): {message}"
        return
    assert message is not None, f"{relative} {fault}: loaded without an error"
    assert "\n" not in message and "Traceback" not in message, message
    assert relative in message or Path(relative).name in message, message
    assert any(hint in message for hint in ("colorflow models download", "replace", "expected")), message


def test_every_file_goes_through_the_full_entry_point_at_least_once():
    full = {relative for relative, fault in CASES if fault == FULL_ENTRY_FAULT}
    assert full == set(LAYOUT)


@pytest.mark.parametrize("relative", ["sd15/unet/diffusion_pytorch_model.safetensors", "sd15/text_encoder/model.safetensors"])
def test_weights_file_missing_one_tensor_is_refused_not_left_random(fault_root, tmp_path, relative):
    """diffusers and transformers would load it and leave that weight random."""
    from safetensors.torch import load_file, save_file

    path = fault_root / relative
    original = path.read_bytes()
    state = load_file(str(path))
    dropped = sorted(state)[-1]
    del state[dropped]
    save_file(state, str(path))
    try:
        message = outcome(lambda: load_narrow(fault_root, relative, tmp_path / "cache"))
    finally:
        path.write_bytes(original)
    assert message is not None and "\n" not in message
    assert message.startswith(f"{path} does not match {path.parent / 'config.json'}: 1 missing key(s): ")
    assert dropped.removeprefix("text_model.") in message


def test_damaged_models_folder_on_the_command_line_is_one_stderr_line(models_copy, one_page_chapter, tmp_path):
    """A corrupted safetensors header length ("header too large" inside safetensors) under
    `colorflow colorize`: exit 2, one line, no traceback, no library load report."""

    unet = models_copy / "sd15/unet/diffusion_pytorch_model.safetensors"
    data = bytearray(unet.read_bytes())
    data[:8] = (10**12).to_bytes(8, "little")
    unet.write_bytes(bytes(data))
    pages, refs = one_page_chapter
    result = subprocess.run(
        [sys.executable, "-m", "engine.cli.main", "colorize", str(pages), "--refs", str(refs), "--out",
         str(tmp_path / "out"), "--models", str(models_copy), "--steps", "1", "--size", "256x384"],
        cwd=REPO_ROOT, capture_output=True, text=True, env=dict(os.environ), timeout=300,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("colorflow: error: ")
    assert "sd15/unet/diffusion_pytorch_model.safetensors" in lines[0]
    assert "header length 1,000,000,000,000 is larger than the file" in lines[0]
