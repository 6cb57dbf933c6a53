"""GSRP settings, checked before any model loads (no torch import)."""

from __future__ import annotations

from dataclasses import dataclass

# The official GSRP frame, 1.5 W x 1.5 H: the frame the preprocess stage prepares the page in.
from engine.preprocess.page import FRAME_SCALE as GSRP_SCALE


@dataclass(frozen=True)
class UpscaleSettings:
    """`batch_norm`: "batch" = per-call statistics, as the official app (it never calls
    .eval() on the fusion net); "running" = the stored running statistics. `procedure`
    "official" draws the latent sample from the global RNG (the draw after ICP's conditioning
    samples), "ours" from the seed's own GSRP stream."""

    scale: float = GSRP_SCALE
    batch_norm: str = "batch"
    seed: int = 0
    procedure: str = "ours"

    def __post_init__(self) -> None:
        if self.batch_norm not in ("batch", "running"):
            raise ValueError(f"batch_norm must be 'batch' or 'running', got {self.batch_norm!r}")
        if self.procedure not in ("ours", "official"):
            raise ValueError(f"procedure must be 'ours' or 'official', got {self.procedure!r}")
