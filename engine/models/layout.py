"""Key -> shape listings of the networks at official size (the three GraySD networks on the meta
device, no weights allocated; the two small ScreenStyle networks; the line-art PixArt guide, PixArt
LoRA and line extractor), for diffing against the official checkpoints; the same listing read from
the files of a model source (folder_layout)."""

from __future__ import annotations

from typing import Any


def official_layout() -> dict[str, dict[str, list[int]]]:
    """{"guider": {...}, "unet_lora": {...}, "multires": {...}, <ScreenStyle hub path>: {...}, ...,
    "line_extractor", "pixart_guider", "pixart_lora"} with every key and shape; the ScreenStyle
    networks are named by their hub file paths. The line-art styles' GSRP network (sketch/ and
    shading/ MultiResNetModel.bin) has the shapes of "multires"."""
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
        **line_art_layout(),
    }


def line_art_layout() -> dict[str, dict[str, list[int]]]:
    """The line-art networks at official size, by the names their modules give (meta device)."""
    from engine.icp.pixart_guide import guide_shapes
    from engine.icp.pixart_lora import pixart_lora_shapes
    from engine.preprocess.lines import line_extractor_shapes

    return {"line_extractor": line_extractor_shapes(), "pixart_guider": guide_shapes(),
            "pixart_lora": pixart_lora_shapes()}


def folder_layout(paths) -> dict[str, dict[str, list[int]]]:
    """The same listing as official_layout, read from the files of a model source (`paths`:
    models.ModelPaths): safetensors headers, pickles memory-mapped (torch.load weights_only), no
    network built, so it takes seconds at any size. The optional line-art files are listed where
    present: "line_extractor" (LE/erika.pth) and per style folder "<folder>/pixart_guider",
    "<folder>/pixart_lora", "<folder>/multires" (folder sketch or shading)."""
    from engine.gsrp.fusion import FUSION_WEIGHTS
    from engine.icp.guide import GUIDE_WEIGHTS
    from engine.io.checkpoints import find_weights
    from engine.io.weight_files import require_model_file
    from engine.models.loading import LORA_WEIGHTS
    from engine.preprocess.screenstyle import SCREENSTYLE_FILES

    files = {"guider": find_weights(paths.graysd, GUIDE_WEIGHTS), "unet_lora": find_weights(paths.graysd, LORA_WEIGHTS),
             "multires": find_weights(paths.graysd, FUSION_WEIGHTS),
             **{relative: require_model_file(paths.colorflow / relative, relative) for relative in SCREENSTYLE_FILES}}
    files.update(_line_art_files(paths))
    return {network: _file_shapes(path) for network, path in files.items()}


def _line_art_files(paths) -> dict:
    """The line-art weight files a model source holds, by their folder_layout names."""
    from engine.gsrp.fusion import FUSION_WEIGHTS
    from engine.icp.pixart_guide import GUIDE_WEIGHTS
    from engine.io.checkpoints import find_weights
    from engine.models.sources import LINE_ART_SUBDIRS

    files = {"line_extractor": paths.line_extractor} if paths.line_extractor.is_file() else {}
    for style, folder_name in LINE_ART_SUBDIRS.items():
        folder = paths.line_art(style)
        if folder.is_dir():
            files.update({f"{folder_name}/pixart_guider": find_weights(folder, GUIDE_WEIGHTS),
                          f"{folder_name}/pixart_lora": find_weights(folder, "transformer_lora"),
                          f"{folder_name}/multires": find_weights(folder, FUSION_WEIGHTS)})
    return files


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
