"""Key -> shape listings of the networks at official size (the three GraySD networks on the meta
device, no weights allocated; the two small ScreenStyle networks), for diffing against the
official checkpoints; the same listing read from the files of a model source (folder_layout)."""

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


def folder_layout(paths) -> dict[str, dict[str, list[int]]]:
    """The same listing as official_layout, read from the files of a model source (`paths`:
    models.ModelPaths): safetensors headers, pickles memory-mapped (torch.load weights_only), no
    network built, so it takes seconds at any size."""
    from engine.gsrp.fusion import FUSION_WEIGHTS
    from engine.icp.guide import GUIDE_WEIGHTS
    from engine.io.checkpoints import find_weights
    from engine.io.weight_files import require_model_file
    from engine.models.loading import LORA_WEIGHTS
    from engine.preprocess.screenstyle import SCREENSTYLE_FILES

    files = {"guider": find_weights(paths.graysd, GUIDE_WEIGHTS), "unet_lora": find_weights(paths.graysd, LORA_WEIGHTS),
             "multires": find_weights(paths.graysd, FUSION_WEIGHTS),
             **{relative: require_model_file(paths.colorflow / relative, relative) for relative in SCREENSTYLE_FILES}}
    return {network: _file_shapes(path) for network, path in files.items()}


def _file_shapes(path) -> dict[str, list[int]]:
    import json

    import torch

    from engine.core.errors import ModelError
    from engine.io.checkpoints import reading_model
    from engine.io.weight_files import check_safetensors

    if path.suffix == ".safetensors":
        check_safetensors(path)
        with path.open("rb") as handle:
            header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
        return {key: list(entry["shape"]) for key, entry in header.items() if key != "__metadata__"}
    with reading_model(path, "a checkpoint"):
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):  # as weight_files.read_state_dict
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path}: does not hold a flat dictionary of tensors")
    return {key: list(value.shape) for key, value in state.items()}
