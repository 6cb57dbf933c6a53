"""Safe reading of model files: tensors and JSON configs, each failure one ModelError line naming the file.

safetensors preferred, their header checked first; pickled .bin/.pth only through
torch.load(weights_only=True), which refuses any pickle that would construct arbitrary objects
(and so never runs code).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from engine.core.errors import ModelError, model_permission_error

if TYPE_CHECKING:
    import torch

PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt")
# The fix every damaged-model message ends with.
REPAIR_HINT = "repair it with `colorflow models download --repair` (official models) or replace the file"


def one_line(exc: BaseException, limit: int = 240) -> str:
    """`Type: message` of an exception on one line (library messages span many)."""
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}{': ' + text if text else ''}"


def require_model_file(path: Path, what: str) -> Path:
    """`path` if it exists, else a ModelError naming it and the fix."""
    if not Path(path).exists():
        raise ModelError(
            f"{path}: {what} is missing from the model directory "
            f"(official models: fetch it with `colorflow models download`)"
        )
    return Path(path)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, on the CPU; never unpickles arbitrary objects."""
    import torch  # here: reading a config or a header needs no torch

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint file is missing")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        check_safetensors(path)
        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise model_permission_error(exc, path) or ModelError(
                f"{path}: not a valid safetensors file ({one_line(exc)}); {REPAIR_HINT}") from exc
    if path.suffix not in PICKLE_SUFFIXES:
        raise ModelError(f"{path}: unknown checkpoint format (expected .safetensors or .bin)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError for truncated zips, ...
        raise model_permission_error(exc, path) or ModelError(
            f"{path}: refused or unreadable ({one_line(exc, 200)}); only plain tensor checkpoints are loaded; "
            f"{REPAIR_HINT}"
        ) from exc
    if isinstance(data, Mapping) and "state_dict" in data and isinstance(data["state_dict"], Mapping):
        data = data["state_dict"]
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ModelError(f"{path}: does not hold a flat dictionary of tensors")
    return dict(data)


# --- checks before a library reads a file -------------------------------------------------
# diffusers/transformers report a damaged file as an error about its folder (or with a
# traceback); these checks name the file itself first.

_SAFETENSORS_ITEM_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}


def check_safetensors(path: Path) -> None:
    """The header of a safetensors file parses and its tensors exactly fill the file (a
    truncated or padded file, a corrupted header length), read from the header alone."""
    path = Path(path)

    def bad(reason: str) -> ModelError:
        return ModelError(f"{path}: not a valid safetensors file ({reason}); {REPAIR_HINT}")

    try:
        size = path.stat().st_size
        opened = path.open("rb")
    except OSError as exc:
        raise model_permission_error(exc, path) or bad(one_line(exc)) from exc
    with opened as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise bad(f"{size} bytes, too short for a header")
        length = int.from_bytes(head, "little")
        if length > size - 8:
            raise bad(f"header length {length:,} is larger than the file ({size:,} bytes): truncated or damaged")
        try:
            header = json.loads(handle.read(length))
        except ValueError as exc:
            raise bad(f"header is not JSON: {one_line(exc)}") from exc
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            start, stop = (int(x) for x in entry["data_offsets"])
            count = 1
            for dim in entry["shape"]:
                count *= int(dim)
            item = _SAFETENSORS_ITEM_BYTES.get(entry["dtype"])
        except (KeyError, TypeError, ValueError) as exc:
            raise bad(f"entry {name!r} of the header is malformed") from exc
        if item is not None and stop - start != count * item:
            raise bad(f"tensor {name!r} has {stop - start} bytes for shape {list(entry['shape'])}")
        end = max(end, stop)
    if 8 + length + end != size:
        raise bad(f"the tensors need {8 + length + end:,} bytes but the file has {size:,}: truncated or damaged")


def read_config(path: Path, what: str) -> dict:
    """The JSON object in a model config file, or one ModelError line naming the file."""
    path = require_model_file(path, what)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: {what} is not valid JSON ({one_line(exc)}); {REPAIR_HINT}") from exc
    except OSError as exc:
        raise model_permission_error(exc, path) or ModelError(f"{path}: {what} cannot be read ({one_line(exc)})") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path}: {what} is not a JSON object; {REPAIR_HINT}")
    return data
