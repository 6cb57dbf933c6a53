"""The components ICP (and GSRP) run on: SD1.5, the guide, the VAE, the fusion net, one device."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from engine.preprocess.tensors import downscale_factor


@dataclass
class DiffusionComponents:
    """Everything ICP (and GSRP) runs on, loaded and placed on one device."""

    unet: Any
    guide: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: dict
    fusion: Any
    device: torch.device
    dtype: torch.dtype
    # Every use of the UNet and the VAE goes through these (see offload.py).
    unet_runner: Any = None
    vae_runner: Any = None
    offload: Any = None  # offload.ModelOffload in low-VRAM mode, else None

    def __post_init__(self) -> None:
        from engine.core.offload import Runner

        if self.unet_runner is None or self.unet_runner.model is not self.unet:
            self.unet_runner = Runner(self.unet)
        if self.vae_runner is None or self.vae_runner.model is not self.vae:
            self.vae_runner = Runner(self.vae)

    @property
    def vae_scale(self) -> int:
        return downscale_factor(self.vae.config)
