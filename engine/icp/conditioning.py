"""The guide's 9 conditioning channels (paper 3.2), computed here once for inference and training.

latent(canvas with the page area black) | mask (1 on the references, bilinear to the latent
grid) | latent(page area alone, the rest black). Inference puts the page at the canvas centre;
training crops the canvas, so the page may sit at any box.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from engine.preprocess.tensors import to_tensor
from engine.core.geometry import Box

if TYPE_CHECKING:
    from engine.core.offload import Runner


def guide_images(canvas: Image.Image, box: Box) -> tuple[Image.Image, Image.Image]:
    """The guide's two image inputs: the canvas with the page box black, and the page box alone."""
    references_only = canvas.copy()
    references_only.paste((0, 0, 0), box)
    page_only = Image.new("RGB", canvas.size, (0, 0, 0))
    page_only.paste(canvas.crop(box), box[:2])
    return references_only, page_only


def _posterior(vae, pixels: torch.Tensor):
    return vae.encode(pixels).latent_dist


def encode_latents(vae: Runner, images: list[Image.Image], generator: torch.Generator | None, *,
                   device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """VAE latents (sampled, scaled) of RGB images in one encode pass. With a generator the sample
    noise comes from it (CPU, any device); with None, from the global RNG of the device, as
    diffusers' `latent_dist.sample()` in the official pipeline. `vae` is a Runner over the VAE."""
    batch = torch.cat([to_tensor(im.convert("RGB")) for im in images]).to(device, dtype)
    posterior = vae(_posterior, batch)
    if generator is None:
        latents = posterior.sample()
    else:
        noise = torch.randn(posterior.mean.shape, generator=generator, dtype=torch.float32)
        latents = posterior.mean + posterior.std * noise.to(posterior.mean.device, posterior.mean.dtype)
    return latents * vae.config.scaling_factor


def mask_latent(mask: Image.Image, latent_size: tuple[int, int]) -> torch.Tensor:
    """(1, 1, h, w) float32: 1 on the references, 0 on the page, bilinear to the latent grid."""
    mask_array = 1.0 - np.asarray(mask.convert("L"), dtype=np.float32) / 255.0
    return F.interpolate(torch.from_numpy(mask_array)[None, None], size=latent_size, mode="bilinear",
                         align_corners=False)


def conditioning(vae: Runner, canvas: Image.Image, mask: Image.Image, box: Box, generator: torch.Generator | None,
                 *, device: torch.device, dtype: torch.dtype, copies: int = 1) -> torch.Tensor:
    """The guide's 9 conditioning channels for a page at `box` of `canvas`.

    copies=1: both images encoded in one pass, sampled from `generator`. copies=2 (the official
    procedure's CFG batch): each image duplicated and sampled from the global RNG, image A then B."""
    references_only, page_only = guide_images(canvas, box)
    if copies == 1:
        latents = encode_latents(vae, [references_only, page_only], generator, device=device, dtype=dtype)
        references, page = latents[:1], latents[1:]
    else:
        references = encode_latents(vae, [references_only] * copies, generator, device=device, dtype=dtype)
        page = encode_latents(vae, [page_only] * copies, generator, device=device, dtype=dtype)
    mask_channel = mask_latent(mask, tuple(references.shape[2:])).to(device, dtype).expand(copies, -1, -1, -1)
    return torch.cat([references, mask_channel, page], dim=1)
