"""ICP sampler settings, checked before any model loads (no torch import)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import InputError
from engine.rng import check_seed


PROCEDURES = ("ours", "official")
DECODE_REGIONS = ("canvas", "page")


@dataclass(frozen=True)
class ColorizeSettings:
    """Sampler settings; defaults are the official GrayImage ones."""

    steps: int = 10
    guidance_scale: float = 7.5
    prompt: str = "manga"
    negative_prompt: str = ""
    conditioning_scale: float = 1.0
    seed: int = 0
    procedure: str = "ours"  # "official": the official random draws (see the module doc)
    decode: str = "canvas"  # "page": decode only the page region + margin (less memory, differs)
    decode_margin: int = 64  # pixels decoded around the page with decode="page"
    preview_every: int = 2  # 0 disables previews

    def check(self) -> None:
        if not 1 <= self.steps <= 100:
            raise InputError(f"steps must be between 1 and 100, got {self.steps}")
        if self.guidance_scale < 0:
            raise InputError(f"guidance scale must be >= 0, got {self.guidance_scale}")
        check_seed(self.seed)
        if self.procedure not in PROCEDURES:
            raise InputError(f"procedure must be one of {', '.join(PROCEDURES)}, got {self.procedure!r}")
        if self.decode not in DECODE_REGIONS:
            raise InputError(f"decode must be one of {', '.join(DECODE_REGIONS)}, got {self.decode!r}")
        if self.procedure == "official" and self.decode != "canvas":
            raise InputError("the official procedure decodes the whole canvas; drop the page-region decode")
