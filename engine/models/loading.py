"""Load the diffusion components of one model source (SD1.5 + GraySD) strictly and safely.

Composition above the stages: each stage builds its own network (icp.guide.load_guide,
gsrp.fusion.load_fusion) from the models package's safe, strict readers."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from engine.core.errors import ModelError
from engine.gsrp.fusion import FUSION_WEIGHTS, load_fusion
from engine.icp.components import DiffusionComponents
from engine.icp.guide import load_guide
from engine.models import ModelPaths
from engine.io.checkpoints import find_weights, load_lora, load_pretrained, reading_model
from engine.io.weight_files import REPAIR_HINT, read_config, require_model_file
from engine.core.offload import ModelOffload
from engine.models import kernels

LORA_WEIGHTS = "unet_lora"


def default_dtype(device: str) -> torch.dtype:
    """fp16 on CUDA and Apple MPS (as the official app on CUDA), fp32 on the CPU (fp16 matmuls
    are slow or unsupported there)."""
    return torch.float16 if device in ("cuda", "mps") else torch.float32


def load_diffusion(
    paths: ModelPaths, device: str = "cpu", *, dtype: torch.dtype | None = None, low_vram: bool = False,
    vae_tiling: bool = False, channels_last: bool | None = None, compile: bool = False,
) -> DiffusionComponents:
    """Load SD1.5 (UNet + official LoRA, VAE, text encoder, tokenizer, scheduler config) and
    the GraySD guide and fusion network. With `low_vram`, every model stays on the CPU and
    moves to the device only while it runs (accelerate offload hooks, see offload.py);
    `vae_tiling` encodes/decodes in tiles (less memory, slightly different pixels). Attention
    runs through SDPA; `channels_last` (None: the device's default) and `compile` (torch.compile
    of the guided UNet step and the guide) as engine/models/kernels.py."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.utils import logging as diffusers_logging
    from transformers import CLIPTextModel
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    # ModelMixin.to(dtype) warns about fp32-pinned modules even when a model has none.
    diffusers_logging.set_verbosity_error()
    dtype = dtype or default_dtype(device)
    sd15 = paths.sd15
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        require_model_file(sd15 / sub, f"sd15/{sub}")
    weights = "diffusion_pytorch_model.safetensors"
    unet = load_pretrained(UNet2DConditionModel, sd15 / "unet", "the SD1.5 UNet", weights, use_safetensors=True)
    vae = load_pretrained(AutoencoderKL, sd15 / "vae", "the SD1.5 VAE", weights, use_safetensors=True)
    text_encoder = load_pretrained(CLIPTextModel, sd15 / "text_encoder", "the SD1.5 text encoder", "model.safetensors",
                                   use_safetensors=True)
    tokenizer = load_tokenizer(sd15 / "tokenizer", text_encoder.config, sd15 / "text_encoder" / "config.json")
    scheduler_config = load_scheduler_config(sd15 / "scheduler" / "scheduler_config.json")
    with reading_model(paths.graysd / LORA_WEIGHTS, "the ColorFlow UNet LoRA"):
        load_lora(unet, find_weights(paths.graysd, LORA_WEIGHTS))
    with reading_model(paths.graysd, "the ColorFlow guide (GraySD)"):
        guide = load_guide(paths.graysd)
    with reading_model(paths.graysd / FUSION_WEIGHTS, "the GSRP network"):
        fusion = load_fusion(paths.graysd, vae.config)
    target = torch.device(device)
    ready_for_inference((unet, guide, vae, text_encoder, fusion), dtype, vae, vae_tiling)
    kernels.use_sdpa(unet, guide, vae)
    kernels.set_channels_last((unet, guide, vae), kernels.channels_last_default(target) if channels_last is None
                              else channels_last)
    components = DiffusionComponents(unet, guide, vae, text_encoder, tokenizer, scheduler_config, fusion, target, dtype)
    if compile:  # before the offload hooks, which then wrap the compiled forwards
        kernels.compile_components(components)
    if low_vram and target.type != "cpu":
        install_offload(components)
    else:
        for module in (unet, guide, vae, text_encoder, fusion):
            module.to(target)
    return components


def ready_for_inference(modules, dtype: torch.dtype, vae, vae_tiling: bool) -> None:
    """Loaded networks made ready to run: no gradients, eval mode, `dtype`; the VAE tiled if asked."""
    for module in modules:
        module.requires_grad_(False)
        module.eval()
        module.to(dtype=dtype)
    if vae_tiling:
        vae.enable_tiling()


TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json", "tokenizer.json", "vocab.json",
                   "added_tokens.json", "merges.txt")


def load_tokenizer(folder: Path, text_config, text_config_path: Path):
    """The CLIP tokenizer of SD1.5, checked to fit its text encoder: every JSON file valid,
    at most as many tokens as the encoder has embeddings and a prompt length it has
    positions for (a tokenizer that loads but does not fit would only fail mid-chapter)."""
    from transformers import CLIPTokenizer

    needed = ["tokenizer_config.json"] + ([] if (folder / "tokenizer.json").is_file() else ["vocab.json", "merges.txt"])
    for name in needed:  # without tokenizer.json (the official layout) vocab + merges make the tokenizer
        require_model_file(folder / name, f"the tokenizer file {name}")
    present = [name for name in TOKENIZER_FILES if (folder / name).is_file()]
    for name in present:
        if name.endswith(".json"):
            data = read_config(folder / name, "a tokenizer file")
            if name == "vocab.json":
                wrong = next((k for k, v in data.items() if not isinstance(v, int) or isinstance(v, bool) or v < 0), None)
                if wrong is not None:
                    raise ModelError(f"{folder / name}: token {wrong!r} has the id {json.dumps(data[wrong])[:20]}, "
                                     f"not a number; {REPAIR_HINT}")
    files = f"{folder} ({', '.join(present) or 'no tokenizer files'})"
    with reading_model(files, "the SD1.5 tokenizer"):
        tokenizer = CLIPTokenizer.from_pretrained(folder)
        length = tokenizer.model_max_length
        positions = text_config.max_position_embeddings
        if not isinstance(length, int) or isinstance(length, bool) or not 2 <= length <= positions:
            where = folder / "tokenizer_config.json"
            raise ModelError(
                f"{where}: model_max_length is {length!r} (missing or wrong), but the text encoder "
                f"({text_config_path}) has {positions} positions; {REPAIR_HINT}"
            )
        ids = tokenizer(["a colored manga page", ""], padding="max_length", max_length=length, truncation=True).input_ids
        largest = max(len(tokenizer), *(max(row) + 1 for row in ids))
        if largest > text_config.vocab_size:
            raise ModelError(
                f"{files}: the tokenizer has {largest} tokens but the text encoder ({text_config_path}) "
                f"only {text_config.vocab_size}; {REPAIR_HINT}"
            )
    return tokenizer


def load_scheduler_config(path: Path, scheduler_class: type | None = None) -> dict:
    """The scheduler config, checked by building the sampler from it once (a value of the
    wrong type would otherwise fail on the first page). `scheduler_class`: the sampler the loop
    builds from it (default: UniPC, the SD path's)."""
    from diffusers import UniPCMultistepScheduler

    from engine.io.checkpoints import check_config_types

    scheduler_class = scheduler_class or UniPCMultistepScheduler
    config = read_config(path, "the scheduler config")
    check_config_types(config, scheduler_class, path, "the scheduler")
    with reading_model(path, "the scheduler config"):
        scheduler_class.from_config(config).set_timesteps(4, device="cpu")
    return config


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


def use_lowest_memory(components) -> list[str]:
    """Switch loaded models to the lowest-memory mode this device allows: the VAE works in
    tiles and, on an accelerator, every model waits on the CPU until it runs (as --low-vram), for
    either family's components. Returns what changed (empty when already there)."""
    from engine.icp.pixart_components import PixArtComponents, install_pixart_offload

    changed = []
    if not getattr(components.vae, "use_tiling", False):
        components.vae.enable_tiling()
        changed.append("tiled VAE")
    if components.device.type != "cpu" and components.offload is None:
        install = install_pixart_offload if isinstance(components, PixArtComponents) else install_offload
        for module in vars(components).values():
            if isinstance(module, torch.nn.Module):
                module.to("cpu")
        install(components)
        changed.append("models offloaded to the CPU between uses")
    return changed
