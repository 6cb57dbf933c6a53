"""Key -> shape listings of the networks at official size (the three GraySD networks on the meta
device, no weights allocated; the two small ScreenStyle networks), for diffing against the
official checkpoints."""

from __future__ import annotations

from typing import Any


def official_layout() -> dict[str, dict[str, list[int]]]:
    """{"guider": {...}, "unet_lora": {...}, "multires": {...}, <ScreenStyle hub path>: {...}, ...}
    with every key and shape; the ScreenStyle networks are named by their hub file paths."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel
    from diffusers.utils import logging as diffusers_logging

    from engine.io.checkpoints import attach_lora
    from engine.gsrp.fusion import FusionNet
    from engine.icp.guide import ColorGuiderSDModel
    from engine.preprocess.screenstyle import RGB_TO_SCREEN_FILE, SCREEN_DECODER_FILE, RGBToScreen, ScreenDecoder
    from engine.core.resources import model_config

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
        RGB_TO_SCREEN_FILE: shapes(RGBToScreen().state_dict()),
        SCREEN_DECODER_FILE: shapes(ScreenDecoder().state_dict()),
    }
