"""Load the diffusion components of one model source (SD1.5 + GraySD) strictly and safely.

Composition above the stages: each stage builds its own network (icp.guide.load_guide,
gsrp.fusion.load_fusion) from the models package's safe, strict readers."""

from __future__ import annotations

import json

import torch

from engine.gsrp.fusion import FUSION_WEIGHTS, load_fusion
from engine.icp.components import DiffusionComponents
from engine.icp.guide import load_guide
from engine.models import ModelPaths
from engine.models.checkpoints import find_weights, load_lora, reading_model, require_model_file
from engine.offload import ModelOffload

LORA_WEIGHTS = "unet_lora"


def default_dtype(device: str) -> torch.dtype:
    """fp16 on CUDA and Apple MPS (as the official app on CUDA), fp32 on the CPU (fp16 matmuls
    are slow or unsupported there)."""
    return torch.float16 if device in ("cuda", "mps") else torch.float32


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
        require_model_file(sd15 / sub, f"sd15/{sub}")
    with reading_model(sd15 / "unet", "the SD1.5 UNet"):
        unet = UNet2DConditionModel.from_pretrained(sd15 / "unet", use_safetensors=True)
    with reading_model(sd15 / "vae", "the SD1.5 VAE"):
        vae = AutoencoderKL.from_pretrained(sd15 / "vae", use_safetensors=True)
    with reading_model(sd15 / "text_encoder", "the SD1.5 text encoder"):
        text_encoder = CLIPTextModel.from_pretrained(sd15 / "text_encoder", use_safetensors=True)
    with reading_model(sd15 / "tokenizer", "the SD1.5 tokenizer"):
        tokenizer = CLIPTokenizer.from_pretrained(sd15 / "tokenizer")
    scheduler_file = require_model_file(sd15 / "scheduler" / "scheduler_config.json", "sd15/scheduler/scheduler_config.json")
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

    offload = ModelOffload(components.device)
    offload.add("text_encoder", components.text_encoder)
    offload.add("unet", components.unet_runner, after="text_encoder")
    offload.add("guide", components.guide)
    offload.add("vae", components.vae_runner, after="unet")
    offload.add("fusion", components.fusion)
    components.offload = offload
    return offload


def use_lowest_memory(components: DiffusionComponents) -> list[str]:
    """Switch loaded models to the lowest-memory mode this device allows: the VAE works in
    tiles and, on an accelerator, every model waits on the CPU until it runs (as --low-vram).
    Returns what changed (empty when already there)."""
    changed = []
    if not getattr(components.vae, "use_tiling", False):
        components.vae.enable_tiling()
        changed.append("tiled VAE")
    if components.device.type != "cpu" and components.offload is None:
        for module in (components.unet, components.guide, components.vae, components.text_encoder, components.fusion):
            module.to("cpu")
        install_offload(components)
        changed.append("models offloaded to the CPU between uses")
    return changed
