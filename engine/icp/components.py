"""The components ICP (and GSRP) run on: SD1.5, the guide, the VAE, the fusion net, one device."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from engine.preprocess.tensors import downscale_factor

if TYPE_CHECKING:  # the real classes, named for readers and checkers; nothing heavy loads at import
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from engine.core.offload import ModelOffload, Runner
    from engine.icp.guide import ColorGuiderSDModel


@dataclass
class DiffusionComponents:
    """Everything ICP (and GSRP) runs on, loaded and placed on one device."""

    unet: UNet2DConditionModel
    guide: ColorGuiderSDModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler_config: dict
    # gsrp.fusion.FusionNet: GSRP is a sibling layer icp does not import, so its base class here.
    fusion: nn.Module
    device: torch.device
    dtype: torch.dtype
    # Every use of the UNet and the VAE goes through these (see offload.py); set after init.
    unet_runner: Runner | None = None
    vae_runner: Runner | None = None
    offload: ModelOffload | None = None  # in low-VRAM mode, else None

    def __post_init__(self) -> None:
        from engine.core.offload import Runner

        if self.unet_runner is None or self.unet_runner.model is not self.unet:
            self.unet_runner = Runner(self.unet)
        if self.vae_runner is None or self.vae_runner.model is not self.vae:
            self.vae_runner = Runner(self.vae)

    @property
    def vae_scale(self) -> int:
        return downscale_factor(self.vae.config)
