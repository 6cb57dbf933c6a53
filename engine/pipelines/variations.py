"""The settings one page is colored with (its picked variation's seed and guidance, or a new
variation's for "Colorize again") and the file each variation is written to."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from engine.core.options import check_option
from engine.io.naming import page_folder_name
from engine.pipelines.settings import PipelineSettings
from engine.project.state import PageState
from engine.project.variations import next_unused_seed


@dataclass(frozen=True)
class VariationRequest:
    """"Colorize again": a new variation of a page, kept beside the others, with the next seed no
    variation of the page has used (`new_seed`) or the page's own, and a guidance (None: the page's own)."""

    new_seed: bool = True
    guidance: float | None = None

    def __post_init__(self) -> None:
        if self.guidance is not None:
            object.__setattr__(self, "guidance", check_option("guidance", self.guidance))


def variation_file(index: int, name: str, variation_id: int) -> str:
    """`NNN_name.png` for a page's first variation (the file a plain run has always written),
    `NNN_name.vK.png` for variation K."""
    suffix = "" if variation_id == 1 else f".v{variation_id}"
    return f"{page_folder_name(index, name)}{suffix}.png"


def with_seed_and_guidance(settings: PipelineSettings, seed: int, guidance: float) -> PipelineSettings:
    """`settings` with another seed (every stream it seeds: ICP, GSRP, ScreenStyle) and guidance."""
    return replace(settings, colorize=replace(settings.colorize, seed=seed, guidance_scale=guidance),
                   upscale=replace(settings.upscale, seed=seed))


def page_settings(settings: PipelineSettings, page: PageState,
                  again: VariationRequest | None = None) -> tuple[PipelineSettings, dict[str, Any]]:
    """The settings `page` is colored with and what its variation records (seed, guidance, steps,
    override). A page whose picked variation came from "Colorize again" keeps that seed and
    guidance; others follow the run's. `again` gives a new variation its seed and guidance."""
    picked = page.picked_variation()
    own = picked is not None and picked.override
    seed = picked.seed if own and picked.seed is not None else settings.colorize.seed
    guidance = picked.guidance if own and picked.guidance is not None else settings.colorize.guidance_scale
    if again is not None:
        if again.new_seed:
            seed = next_unused_seed([v.seed for v in page.variations], seed)
        guidance = guidance if again.guidance is None else again.guidance
        own = True
    made_with = {"seed": seed, "guidance": guidance, "steps": settings.colorize.steps, "override": own}
    return with_seed_and_guidance(settings, seed, guidance), made_with
