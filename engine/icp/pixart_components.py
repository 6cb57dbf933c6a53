"""The components the line-art styles' ICP (and GSRP) run on: PixArt-α, its guide, the VAE, the fusion net, one device."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from engine.preprocess.tensors import downscale_factor

if TYPE_CHECKING:  # the real classes, named for readers and checkers; nothing heavy loads at import
    from diffusers import AutoencoderKL, PixArtTransformer2DModel

    from engine.core.offload import ModelOffload, Runner
    from engine.icp.pixart_guide import ColorGuidePixArt
    from engine.icp.text_embeddings import TextEmbeddings


@dataclass
class PixArtComponents:
    """Everything the PixArt family's ICP (and GSRP) runs on, loaded and placed on one device; the
    counterpart of icp.components.DiffusionComponents (same runners, offload and vae_scale), with
    the T5 prompt embeddings computed once instead of a text encoder."""

    transformer: PixArtTransformer2DModel  # with the style's LoRA loaded
    guide: ColorGuidePixArt
    vae: AutoencoderKL
    text: TextEmbeddings  # rows [negative, prompt] for `prompts`
    scheduler_config: dict  # the PixArt repo's DPMSolverMultistepScheduler config
    # gsrp.fusion.FusionNet: GSRP is a sibling layer icp does not import, so its base class here.
    fusion: nn.Module
    device: torch.device
    dtype: torch.dtype
    # Every use of the transformer and the VAE goes through these (see offload.py); set after init.
    transformer_runner: Runner | None = None
    vae_runner: Runner | None = None
    offload: ModelOffload | None = None  # in low-VRAM mode, else None
    prompts: tuple[str, str] = ("manga", "")  # (prompt, negative) that `text` embeds

    def __post_init__(self) -> None:
        from engine.core.offload import Runner

        if self.transformer_runner is None or self.transformer_runner.model is not self.transformer:
            self.transformer_runner = Runner(self.transformer)
        if self.vae_runner is None or self.vae_runner.model is not self.vae:
            self.vae_runner = Runner(self.vae)

    @property
    def vae_scale(self) -> int:
        return downscale_factor(self.vae.config)

    @property
    def patch_size(self) -> int:
        return int(self.transformer.config.patch_size)


def install_pixart_offload(components: PixArtComponents) -> ModelOffload:
    """Low-VRAM placement, as models.loading.install_offload for SD1.5: every model on the CPU, each
    moved to the device when it runs. The transformer leaves when the VAE decodes; the guide leaves
    after the last step (pixart_colorize.py); the VAE and the fusion net serve GSRP and leave at the
    end of the page (pipeline). The prompt embeddings (a few MB) stay on the device."""
    from engine.core.offload import ModelOffload

    offload = ModelOffload(components.device)
    offload.add("transformer", components.transformer_runner)
    offload.add("guide", components.guide)
    offload.add("vae", components.vae_runner, after="transformer")
    offload.add("fusion", components.fusion)
    components.offload = offload
    return offload
