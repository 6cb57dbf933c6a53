"""Every network of a model size (tiny.RandomSize) on the meta device: exact parameter and buffer counts, nothing allocated.

The memory estimate (engine/pipelines/meta_forward.py) and the training memory script
(scripts/estimate_memory.py) build the official architectures here, with tiny.py's constructors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.models.tiny import (RandomSize, build_image_encoder, build_text_encoder, build_unet, build_vae,
                                official_size, vocabulary_size)


@dataclass
class Networks:
    """Every network of one model size. The UNet carries the LoRA adapter, as loaded for inference."""

    unet: Any
    guide: Any
    vae: Any
    text_encoder: Any
    image_encoder: Any
    fusion: Any
    rgb_to_screen: Any
    screen_decoder: Any


def meta_networks(size: RandomSize | None = None) -> Networks:
    """The networks of `size` (default: the official sizes) on the meta device, buffers included."""
    import warnings

    import torch

    from engine.gsrp.fusion import FusionNet, vae_feature_channels
    from engine.icp.guide import ColorGuiderSDModel
    from engine.io.checkpoints import attach_lora
    from engine.preprocess.screenstyle import RGBToScreen, ScreenDecoder

    size = size or official_size()
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # copying into meta tensors is a no-op (ColorGuiderSDModel.from_unet)
        unet = build_unet(size)
        guide = ColorGuiderSDModel.from_unet(unet)
        attach_lora(unet, rank=size.lora_rank, alpha=size.lora_rank)
        vae = build_vae(size)
        networks = Networks(unet, guide, vae, build_text_encoder(size, vocabulary_size(size)),
                            build_image_encoder(size), FusionNet(vae_feature_channels(vae.config)),
                            RGBToScreen(), ScreenDecoder())
    for module in vars(networks).values():
        module.requires_grad_(False)
        module.eval()
    networks.screen_decoder.train()  # as loaded: its dropouts stay live (engine/preprocess/screenstyle.py)
    return networks
