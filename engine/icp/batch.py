"""Several pages in one denoising call (--batch-pages): which pages may share a batch, and the CFG batch layout.

A batch runs the UNet at batch 2N (the N pages' negative-prompt rows, then their N prompt rows)
and the guide at batch N (procedure "ours": its features do not depend on the prompt). Each page
keeps its own seed streams, so only the order of float sums inside batched GEMMs differs from
coloring the pages one at a time. Diffusers' UniPCMultistepScheduler is exact per page: its
coefficients come from the sigmas (scalars), every update is elementwise over the sample and its
order contraction (`einsum("k,bkc...->bc...")`) keeps the batch axis.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Sequence

from engine.core.errors import InputError
from engine.core.options import Procedure

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from engine.core.geometry import WorkSize
    from engine.icp.guide import GuideFeatures
    from engine.icp.settings import ColorizeSettings


def check_batch(canvases: Sequence[Image.Image], masks: Sequence[Image.Image], size: WorkSize,
                settings: Sequence[ColorizeSettings]) -> None:
    """Pages that can share one denoising call: one working size, the same sampler settings but
    the seed, and procedure "ours" (the official one draws from the global RNG page after page).
    InputError otherwise; nothing is computed."""
    if not canvases or not (len(canvases) == len(masks) == len(settings)):
        raise InputError(f"a batch needs one canvas, mask and settings per page "
                         f"(got {len(canvases)}, {len(masks)}, {len(settings)})")
    if any(s.procedure == Procedure.OFFICIAL for s in settings):
        raise InputError("pages can be batched with --procedure ours only: the official procedure "
                         "draws its random numbers from the global RNG, one page after another")
    for index, image in enumerate([*canvases, *masks]):
        if image.size != size.canvas:
            raise InputError(f"the pages of a batch share one working size ({size}, canvas "
                             f"{size.canvas[0]}x{size.canvas[1]}); page {index % len(canvases) + 1}'s "
                             f"{'canvas' if index < len(canvases) else 'mask'} is {image.size[0]}x{image.size[1]}")
    first = dataclasses.replace(settings[0], seed=0)
    for page, other in enumerate(settings[1:], start=2):
        differ = [f.name for f in dataclasses.fields(first)
                  if f.name != "seed" and getattr(other, f.name) != getattr(first, f.name)]
        if differ:
            raise InputError(f"the pages of a batch share every sampler setting but the seed; page {page} "
                             f"differs from page 1 in {', '.join(differ)}")


def cfg_features(features: GuideFeatures, pages: int) -> GuideFeatures:
    """The guide's features (batch N) for the UNet's CFG batch 2N laid out as negatives then
    prompts. One page keeps its batch-1 features, which broadcast (no copy)."""
    import torch

    from engine.icp.guide import GuideFeatures

    if pages == 1:
        return features

    def twice(tensor: torch.Tensor) -> torch.Tensor:
        return torch.cat([tensor, tensor])

    return GuideFeatures(down=[twice(t) for t in features.down], mid=twice(features.mid),
                         up=[twice(t) for t in features.up])
