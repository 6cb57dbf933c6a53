"""Load the diffusion components of one model source (SD1.5 + GraySD) strictly and safely."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoints import find_weights, load_lora, load_strict, read_state_dict, reading_model
from .errors import ModelError
from .models import ModelPaths

GUIDE_WEIGHTS = "diffusion_pytorch_model"
LORA_WEIGHTS = "unet_lora"
FUSION_WEIGHTS = "MultiResNetModel"


def default_dtype(device: str) -> torch.dtype:
    """fp16 on CUDA and Apple MPS (as the official app on CUDA), fp32 on the CPU (fp16 matmuls
    are slow or unsupported there)."""
    return torch.float16 if device in ("cuda", "mps") else torch.float32


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise ModelError(f"{path}: {what} is missing from the model directory")
    return path


def load_guide(graysd: Path) -> torch.nn.Module:
    """The Colorization Guide from GraySD/config.json + weights, every key checked."""
    from accelerate import init_empty_weights

    from .guide import ColorGuiderSDModel

    config = json.loads(_require(graysd / "config.json", "GraySD/config.json").read_text())
    with init_empty_weights():
        guide = ColorGuiderSDModel.from_config(config)
    state = read_state_dict(find_weights(graysd, GUIDE_WEIGHTS))
    load_strict(guide, state, f"guide checkpoint {graysd.name}/{GUIDE_WEIGHTS}")
    return guide


def load_fusion(graysd: Path, vae_config: Any) -> torch.nn.Module:
    """The GSRP fusion network sized for the VAE, every key checked."""
    from .fusion import FusionNet, vae_feature_channels

    fusion = FusionNet(vae_feature_channels(vae_config))
    state = read_state_dict(find_weights(graysd, FUSION_WEIGHTS))
    load_strict(fusion, state, f"GSRP checkpoint {graysd.name}/{FUSION_WEIGHTS}")
    return fusion


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
        from .offload import Runner

        if self.unet_runner is None or self.unet_runner.model is not self.unet:
            self.unet_runner = Runner(self.unet)
        if self.vae_runner is None or self.vae_runner.model is not self.vae:
            self.vae_runner = Runner(self.vae)

    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def load_diffusion(
    paths: ModelPaths, device: str = "cpu", dtype: torch.dtype | None = None, low_vram: bool = False,
    vae_tiling: bool = False,
) -> DiffusionComponents:
    """Load SD1.5 (UNet + official LoRA, VAE, text encoder, tokenizer, scheduler config) and
    the GraySD guide and fusion network. With `low_vram`, every model stays on the CPU and
    moves to the device only while it runs (accelerate offload hooks, see offload.py);
    `vae_tiling` encodes/decodes in tiles (less memory, slightly different pixels)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.utils import logging as diffusers_logging
    from transformers import CLIPTextModel, CLIPTokenizer
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    # ModelMixin.to(dtype) warns about fp32-pinned modules even when a model has none.
    diffusers_logging.set_verbosity_error()
    dtype = dtype or default_dtype(device)
    sd15 = paths.sd15
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        _require(sd15 / sub, f"sd15/{sub}")
    with reading_model(sd15 / "unet", "the SD1.5 UNet"):
        unet = UNet2DConditionModel.from_pretrained(sd15 / "unet", use_safetensors=True)
    with reading_model(sd15 / "vae", "the SD1.5 VAE"):
        vae = AutoencoderKL.from_pretrained(sd15 / "vae", use_safetensors=True)
    with reading_model(sd15 / "text_encoder", "the SD1.5 text encoder"):
        text_encoder = CLIPTextModel.from_pretrained(sd15 / "text_encoder", use_safetensors=True)
    with reading_model(sd15 / "tokenizer", "the SD1.5 tokenizer"):
        tokenizer = CLIPTokenizer.from_pretrained(sd15 / "tokenizer")
    scheduler_file = _require(sd15 / "scheduler" / "scheduler_config.json", "sd15/scheduler/scheduler_config.json")
    with reading_model(scheduler_file, "the scheduler config"):
        scheduler_config = json.loads(scheduler_file.read_text())
        if not isinstance(scheduler_config, dict):
            raise ValueError("not a JSON object")
    with reading_model(paths.graysd / LORA_WEIGHTS, "the ColorFlow UNet LoRA"):
        load_lora(unet, find_weights(paths.graysd, LORA_WEIGHTS))
    with reading_model(paths.graysd, "the ColorFlow guide (GraySD)"):
        guide = load_guide(paths.graysd)
    with reading_model(paths.graysd / FUSION_WEIGHTS, "the GSRP network"):
        fusion = load_fusion(paths.graysd, vae.config)
    target = torch.device(device)
    for module in (unet, guide, vae, text_encoder, fusion):
        module.requires_grad_(False)
        module.eval()
        module.to(dtype=dtype)
    if vae_tiling:
        vae.enable_tiling()
    components = DiffusionComponents(unet, guide, vae, text_encoder, tokenizer, scheduler_config, fusion, target, dtype)
    if low_vram and target.type != "cpu":
        install_offload(components)
    else:
        for module in (unet, guide, vae, text_encoder, fusion):
            module.to(target)
    return components


def install_offload(components: DiffusionComponents) -> ModelOffload:
    """Low-VRAM placement: all models on the CPU, each moved to the device when it runs.

    The text encoder leaves when the UNet starts; the UNet leaves when the VAE decodes; the
    guide leaves after the last step (colorize.py); the VAE and the fusion net serve GSRP
    together and leave at the end of the page (pipeline)."""
    from .offload import ModelOffload

    offload = ModelOffload(components.device)
    offload.add("text_encoder", components.text_encoder)
    offload.add("unet", components.unet_runner, after="text_encoder")
    offload.add("guide", components.guide)
    offload.add("vae", components.vae_runner, after="unet")
    offload.add("fusion", components.fusion)
    components.offload = offload
    return offload
