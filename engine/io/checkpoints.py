"""Strict loading of checkpoints into models: key reports, the official LoRA, checked from_pretrained.

Files are read through engine/io/weight_files.py (safe reading, never plain unpickling).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch

from engine.core.errors import ModelError, model_permission_error
from engine.io.weight_files import (
    PICKLE_SUFFIXES, REPAIR_HINT, check_safetensors, one_line, read_config, read_state_dict, require_model_file,
)


def find_weights(folder: Path, stem: str) -> Path:
    """`folder/stem.safetensors` if present, else the official pickled `stem.bin`/`.pth`."""
    for suffix in (".safetensors", *PICKLE_SUFFIXES):
        candidate = Path(folder) / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    raise ModelError(
        f"{folder}: no {stem}.safetensors or {stem}.bin found "
        f"(official models: fetch it with `colorflow models download`, or copy it into the folder)"
    )


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
        raise ModelError(f"{what} does not match the model: {report.describe()}; {REPAIR_HINT}")
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


_PREFIXES = ("base_model.model.", "unet.", "transformer.", "module.")  # "transformer.": diffusers' PixArt LoRA files


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


def load_lora(unet, path: Path, adapter: str = "default", *, attach: Callable[..., None] | None = None,
              what: str = "the UNet") -> int:
    """Attach the LoRA adapter (rank read from the file, alpha = rank as in the official
    config) and load it; every adapter tensor must be matched or this fails naming the keys.
    `attach(model, rank=, adapter=)` adds another model's official adapter (default: the UNet's,
    attach_lora); `what` names that model in the messages."""
    raw = read_state_dict(path)
    state = {normalise_lora_key(key, adapter): tensor for key, tensor in raw.items()}
    ranks = {t.shape[0] for k, t in state.items() if ".lora_A." in k}
    if len(ranks) != 1:
        raise ModelError(
            f"LoRA file {path}: expected one rank in its lora_A tensors, found {sorted(ranks) or 'none'}; {REPAIR_HINT}"
        )
    rank = ranks.pop()
    if attach is None:
        attach_lora(unet, rank=rank, alpha=rank, adapter=adapter)
    else:
        attach(unet, rank=rank, adapter=adapter)
    expected = {k: v for k, v in unet.state_dict().items() if ".lora_" in k and f".{adapter}." in k}
    report = compare_keys(expected, state)
    if not report.ok:
        raise ModelError(f"LoRA file {path} does not fit {what}: {report.describe()}; {REPAIR_HINT}")
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
        raise model_permission_error(exc, path) or ModelError(
            f"{path}: {what} could not be read ({one_line(exc)}); {REPAIR_HINT}") from exc


def _kind(value: Any) -> str:
    if isinstance(value, bool) or isinstance(value, (int, float)):
        return "number"  # JSON true/false and 0/1 are accepted for each other
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "dict"
    return "any"


def _split_top(text: str, separator: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "["
        depth -= char == "]"
        if char == separator and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def _annotation_kinds(annotation: Any) -> set[str]:
    """Which JSON kinds an __init__ annotation admits ("any" when it is not understood)."""
    if annotation is inspect.Parameter.empty:
        return set()
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    text = text.replace("typing.", "").replace(" ", "")
    kinds: set[str] = set()
    for part in _split_top(text, "|"):
        head, _, inner = part.partition("[")
        if head in ("Optional", "Union"):
            for sub in _split_top(inner[:-1], ","):
                kinds |= _annotation_kinds(sub)
            continue
        head = head.lower()
        if head in ("int", "float", "bool"):
            kinds.add("number")
        elif head == "str":
            kinds.add("str")
        elif head in ("tuple", "list", "sequence"):
            kinds.add("list")
        elif head in ("dict", "mapping"):
            kinds.add("dict")
        elif head not in ("none", "nonetype"):
            kinds.add("any")
    return kinds


def check_config_types(config: Mapping[str, Any], cls: type, path: Path, what: str) -> None:
    """Each value of a diffusers-style config has a kind its class accepts (from the
    __init__ annotation and default): a string where numbers or lists are expected is named
    here rather than failing deep inside the model's constructor."""
    try:
        parameters = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return
    for key, value in config.items():
        parameter = parameters.get(key)
        if parameter is None or value is None or key.startswith("_"):
            continue
        allowed = _annotation_kinds(parameter.annotation)
        if parameter.default is not inspect.Parameter.empty and parameter.default is not None:
            allowed.add(_kind(parameter.default))
        if not allowed or "any" in allowed or _kind(value) in allowed:
            continue
        expected = " or ".join(sorted({"number": "a number", "str": "a string", "list": "a list",
                                       "dict": "an object"}[k] for k in allowed))
        shown = json.dumps(value)
        raise ModelError(
            f"{path}: {key!r} is {shown[:40]} but {what} expects {expected} there; {REPAIR_HINT}"
        )


def _is_transformers(cls: type) -> bool:
    return cls.__module__.split(".")[0] == "transformers"


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    """No warnings or load reports of transformers/diffusers on stderr while loading: what
    matters comes back as one ModelError line."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    levels = transformers_logging.get_verbosity(), diffusers_logging.get_verbosity()
    bars = transformers_logging.is_progress_bar_enabled(), diffusers_logging.is_progress_bar_enabled()
    transformers_logging.set_verbosity_error()
    diffusers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(levels[0])
        diffusers_logging.set_verbosity(levels[1])
        if bars[0]:
            transformers_logging.enable_progress_bar()
        if bars[1]:
            diffusers_logging.enable_progress_bar()


SDPA_ATTENTION = "sdpa"  # transformers' attn_implementation for torch's scaled_dot_product_attention


def load_pretrained(cls: type, folder: Path, what: str, weights: str, **kwargs: Any) -> Any:
    """`cls.from_pretrained(folder)` of a diffusers or transformers model, with every way it
    can fail as one ModelError line naming the file: config.json and the weights present,
    the config valid JSON with values of the right kinds, the safetensors header sound,
    then every weight present and of the shape the config gives (both libraries would
    silently leave a missing weight random; transformers logs a multi-line report).
    Weights the model does not use (unexpected keys) are allowed, as the libraries do."""
    folder = Path(folder)
    config_path = folder / "config.json"
    config = read_config(config_path, f"the config file of {what}")
    if not _is_transformers(cls):
        check_config_types(config, cls, config_path, what)
    weights_path = require_model_file(folder / weights, f"the weights file of {what}")
    if weights_path.suffix == ".safetensors":
        check_safetensors(weights_path)
    pair = f"{config_path} + {weights}"
    kwargs["output_loading_info"] = True
    if _is_transformers(cls):  # report mis-shaped weights here rather than in a logged table
        kwargs["ignore_mismatched_sizes"] = True
        # Attention through torch's scaled_dot_product_attention, whatever the config names
        # (a config saying "eager" would otherwise get the slower softmax(QK^T) path).
        kwargs.setdefault("attn_implementation", SDPA_ATTENTION)
    with _quiet_libraries():
        try:
            model, info = cls.from_pretrained(folder, **kwargs)
        except Exception as exc:
            raise model_permission_error(exc, folder) or ModelError(
                f"{pair}: {what} could not be built ({one_line(exc)}); {REPAIR_HINT}") from exc
    report = KeyReport(
        missing=sorted(info.get("missing_keys") or []),
        mismatched=[(k, tuple(a), tuple(b)) for k, a, b in info.get("mismatched_keys") or []],
    )
    if not report.ok:
        raise ModelError(f"{weights_path} does not match {config_path}: {report.describe()}; {REPAIR_HINT}")
    return model
