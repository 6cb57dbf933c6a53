"""Key -> shape listings of the three GraySD networks at official size, built on the meta
device (no weights allocated), for diffing against the official checkpoints."""

from __future__ import annotations

from typing import Any


def official_layout() -> dict[str, dict[str, list[int]]]:
    """{"guider": {...}, "unet_lora": {...}, "multires": {...}} with every key and shape."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel
    from diffusers.utils import logging as diffusers_logging

    from .checkpoints import attach_lora
    from .fusion import FusionNet
    from .guide import ColorGuiderSDModel
    from .resources import model_config

    diffusers_logging.set_verbosity_error()
    with init_empty_weights():
        guide = ColorGuiderSDModel()
        unet = UNet2DConditionModel.from_config(model_config("sd15-unet"))
        attach_lora(unet)
    fusion = FusionNet().to("meta")

    def shapes(state: dict[str, Any]) -> dict[str, list[int]]:
        return {k: list(v.shape) for k, v in state.items()}

    return {
        "guider": shapes(guide.state_dict()),
        "unet_lora": shapes({k: v for k, v in unet.state_dict().items() if ".lora_" in k}),
        "multires": shapes(fusion.state_dict()),
    }
