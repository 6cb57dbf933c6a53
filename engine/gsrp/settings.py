"""GSRP settings, checked before any model loads (no torch import)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.core.options import BatchNormMode, Procedure, check_option
# The official GSRP frame, 1.5 W x 1.5 H: the frame the preprocess stage prepares the page in.
from engine.preprocess.page import FRAME_SCALE as GSRP_SCALE


@dataclass(frozen=True)
class UpscaleSettings:
    """`batch_norm`: "batch" = per-call statistics, as the official app (it never calls
    .eval() on the fusion net); "running" = the stored running statistics. `procedure`
    "official" draws the latent sample from the global RNG (the draw after ICP's conditioning
    samples), "ours" from the seed's own GSRP stream."""

    scale: float = GSRP_SCALE
    batch_norm: BatchNormMode = BatchNormMode.BATCH
    seed: int = 0
    procedure: Procedure = Procedure.OURS

    def __post_init__(self) -> None:
        object.__setattr__(self, "batch_norm", check_option("gsrp_batchnorm", self.batch_norm))
        object.__setattr__(self, "procedure", check_option("procedure", self.procedure))
