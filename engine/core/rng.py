"""Independent random streams derived from one page seed, so no draw repeats another's values.

The diffusion start noise uses the seed itself (as the official generator does); every other
stream (conditioning samples, the ScreenStyle pass, the GSRP sample) gets its own seed hashed
from (seed, stream name).
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import TYPE_CHECKING, Iterator

from engine.core.options import check_option

if TYPE_CHECKING:  # torch is imported where a generator is made: this module stays light
    import torch

START_NOISE = "start-noise"
CONDITIONING = "conditioning"
SCREENSTYLE = "screenstyle"
GSRP = "gsrp"
STREAMS = (START_NOISE, CONDITIONING, SCREENSTYLE, GSRP)


def check_seed(seed: int) -> None:
    """The one seed check of every command and the app: the declared range, 0 to MAX_SEED
    (engine/core/options.py); InputError outside it."""
    check_option("seed", seed)


def stream_seed(seed: int, stream: str) -> int:
    """The seed of one named stream of a page seed."""
    if stream not in STREAMS:
        raise ValueError(f"unknown random stream {stream!r}")
    if stream == START_NOISE:
        return seed
    digest = hashlib.sha256(f"colorflow:{stream}:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def stream_generator(seed: int, stream: str) -> "torch.Generator":
    """A CPU generator for one stream (CPU so a seed gives the same draws on every device)."""
    import torch

    return torch.Generator("cpu").manual_seed(stream_seed(seed, stream))


@contextlib.contextmanager
def official_seeding(seed: int, device: "torch.device | str" = "cpu") -> Iterator[None]:
    """The official `fix_random_seeds(seed)` for torch (CPU and the device), inside a block
    whose end restores the previous global RNG state, so nothing outside is disturbed. (Python's
    and numpy's RNGs, also seeded by the official helper, are never drawn on this path.)"""
    import torch

    device = torch.device(device)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
