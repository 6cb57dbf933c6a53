"""Safe checkpoint reading and strict loading with a readable key report.

safetensors preferred; pickled .bin/.pth only through torch.load(weights_only=True), which
refuses any pickle that would construct arbitrary objects (and so never runs code).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

import torch

from engine.errors import ModelError

PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt")


def require_model_file(path: Path, what: str) -> Path:
    """`path` if it exists, else a ModelError naming it and the fix."""
    if not Path(path).exists():
        raise ModelError(
            f"{path}: {what} is missing from the model directory "
            f"(official models: fetch it with `colorflow models download`)"
        )
    return Path(path)


def find_weights(folder: Path, stem: str) -> Path:
    """`folder/stem.safetensors` if present, else the official pickled `stem.bin`/`.pth`."""
    for suffix in (".safetensors", *PICKLE_SUFFIXES):
        candidate = Path(folder) / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    raise ModelError(f"{folder}: no {stem}.safetensors or {stem}.bin found")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, on the CPU; never unpickles arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint file is missing")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise ModelError(f"{path}: not a valid safetensors file ({exc})") from exc
    if path.suffix not in PICKLE_SUFFIXES:
        raise ModelError(f"{path}: unknown checkpoint format (expected .safetensors or .bin)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError for truncated zips, ...
        raise ModelError(
            f"{path}: refused or unreadable ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            f"only plain tensor checkpoints are loaded"
        ) from exc
    if isinstance(data, Mapping) and "state_dict" in data and isinstance(data["state_dict"], Mapping):
        data = data["state_dict"]
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ModelError(f"{path}: does not hold a flat dictionary of tensors")
    return dict(data)


@dataclass
class KeyReport:
    """Differences between a checkpoint and a module's expected keys and shapes."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 8) -> str:
        lines = []
        for title, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            if items:
                shown = ", ".join(items[:limit]) + (f" ... (+{len(items) - limit})" if len(items) > limit else "")
                lines.append(f"{len(items)} {title} key(s): {shown}")
        if self.mismatched:
            shown = ", ".join(f"{k} file {list(a)} vs model {list(b)}" for k, a, b in self.mismatched[:limit])
            lines.append(f"{len(self.mismatched)} mis-shaped key(s): {shown}")
        return "; ".join(lines)


def compare_keys(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> KeyReport:
    report = KeyReport()
    report.missing = sorted(k for k in expected if k not in found)
    report.unexpected = sorted(k for k in found if k not in expected)
    report.mismatched = [
        (k, tuple(found[k].shape), tuple(expected[k].shape))
        for k in expected
        if k in found and tuple(found[k].shape) != tuple(expected[k].shape)
    ]
    return report


def load_strict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Load every tensor or fail with a report naming each missing/unexpected/mis-shaped key."""
    report = compare_keys(module.state_dict(), state)
    if not report.ok:
        raise ModelError(f"{what} does not match the model: {report.describe()}")
    module.load_state_dict(state, strict=True, assign=any(p.is_meta for p in module.parameters()))


# --- LoRA --------------------------------------------------------------------------------

LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2"]
LORA_RANK = 64
LORA_ALPHA = 64


def lora_config(rank: int = LORA_RANK, alpha: int = LORA_ALPHA):
    """The official UNet LoRA configuration (peft)."""
    from peft import LoraConfig

    return LoraConfig(
        r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=LORA_TARGETS
    )


_PREFIXES = ("base_model.model.", "unet.", "module.")


def normalise_lora_key(key: str, adapter: str = "default") -> str:
    """Map the LoRA key spellings seen in the wild onto peft's in-model naming:
    `<module>.lora_A.<adapter>.weight` / `<module>.lora_B.<adapter>.weight`."""
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    key = key.replace(".lora.down.", ".lora_A.").replace(".lora.up.", ".lora_B.")
    key = key.replace(".processor.", ".")
    key = re.sub(r"\.(lora_[AB])\.(?:[\w-]+\.)?weight$", rf".\1.{adapter}.weight", key)
    return key


def attach_lora(unet, rank: int = LORA_RANK, alpha: int = LORA_ALPHA, adapter: str = "default") -> None:
    """Add the official LoRA adapter to a diffusers UNet (weights still random)."""
    unet.add_adapter(lora_config(rank, alpha), adapter_name=adapter)


def load_lora(unet, path: Path, adapter: str = "default") -> int:
    """Attach the LoRA adapter (rank read from the file, alpha = rank as in the official
    config) and load it; every adapter tensor must be matched or this fails naming the keys."""
    raw = read_state_dict(path)
    state = {normalise_lora_key(key, adapter): tensor for key, tensor in raw.items()}
    ranks = {t.shape[0] for k, t in state.items() if ".lora_A." in k}
    if len(ranks) != 1:
        raise ModelError(f"LoRA file {path}: expected one rank in its lora_A tensors, found {sorted(ranks) or 'none'}")
    rank = ranks.pop()
    attach_lora(unet, rank=rank, alpha=rank, adapter=adapter)
    expected = {k: v for k, v in unet.state_dict().items() if ".lora_" in k and f".{adapter}." in k}
    report = compare_keys(expected, state)
    if not report.ok:
        raise ModelError(f"LoRA file {path} does not fit the UNet: {report.describe()}")
    result = unet.load_state_dict(state, strict=False)
    if result.unexpected_keys:  # cannot happen after compare_keys; kept as a hard guard
        raise ModelError(f"LoRA keys not applied: {result.unexpected_keys[:5]}")
    return len(state)


@contextlib.contextmanager
def reading_model(path: Path, what: str) -> Iterator[None]:
    """Any failure while reading a model file or folder (a tokenizer, a config, weights)
    becomes one ModelError line naming it and what to do, never a traceback."""
    try:
        yield
    except ModelError:
        raise
    except Exception as exc:  # transformers/tokenizers/diffusers raise many types, some bare Exception
        text = str(exc).strip()
        first = text.splitlines()[0][:200] if text else ""
        raise ModelError(
            f"{path}: {what} could not be read ({type(exc).__name__}{': ' + first if first else ''}); "
            f"repair it with `colorflow models download --repair` (official models) or replace the folder"
        ) from exc
