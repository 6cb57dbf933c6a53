"""Images to model tensors and the latent grid: the one conversion every stage and trainer uses."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image -> (1, C, H, W) float32 in [-1, 1], C its channels (3 for RGB, 1 for L).

    x / 127.5 - 1 equals torchvision's ToTensor + Normalize(0.5, 0.5), (x / 255 - 0.5) / 0.5, for
    every uint8 value in float32, so ScreenStyle, ICP and GSRP share it."""
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    if array.ndim == 2:
        array = array.reshape(*array.shape, 1)
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)


def downscale_factor(config) -> int:
    """How many pixels one latent cell spans for a diffusers VAE or UNet config: each block after
    the first halves the resolution (diffusers' vae_scale_factor)."""
    return 2 ** (len(config.block_out_channels) - 1)
