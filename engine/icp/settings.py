"""ICP sampler settings, checked before any model loads (no torch import)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.core.options import DecodeRegion, Procedure, check_option
from engine.core.rng import check_seed


@dataclass(frozen=True)
class ColorizeSettings:
    """Sampler settings; defaults are the official GrayImage ones."""

    steps: int = 10
    guidance_scale: float = 7.5
    prompt: str = "manga"
    negative_prompt: str = ""
    conditioning_scale: float = 1.0
    seed: int = 0
    procedure: Procedure = Procedure.OURS  # official: the official random draws (see the module doc)
    decode: DecodeRegion = DecodeRegion.CANVAS  # page: decode only the page region + margin (less memory, differs)
    decode_margin: int = 64  # pixels decoded around the page with decode="page"
    preview_every: int = 2  # 0 disables previews

    def check(self) -> None:
        """The declared ranges and values (engine/core/options.py); InputError naming the option."""
        check_option("steps", self.steps)
        check_option("guidance", self.guidance_scale)
        check_seed(self.seed)
        check_option("procedure", self.procedure)
        check_option("decode", self.decode)
