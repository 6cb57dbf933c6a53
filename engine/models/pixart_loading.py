"""Load the line-art styles' diffusion components (PixArt-α base + a ColorFlow sketch/ or shading/ folder) strictly and safely.

The counterpart of models/loading.load_diffusion for the PixArt family: the base's transformer,
VAE and scheduler config from DIR/pixart/, the style folder's transformer LoRA, guide and GSRP
network, and the T5 prompt embeddings computed once and cached (T5 is never kept loaded).
"""

from __future__ import annotations

from pathlib import Path

import torch

from engine.core.errors import ModelError
from engine.core.events import EventSink, ignore
from engine.core.options import LINE_ART_STYLES
from engine.icp.pixart_components import PixArtComponents, install_pixart_offload
from engine.io.checkpoints import load_pretrained, reading_model
from engine.io.weight_files import REPAIR_HINT, require_model_file
from engine.models import kernels
from engine.models.loading import default_dtype, load_scheduler_config, ready_for_inference
from engine.models.sources import ModelPaths

BASE_WEIGHTS = "diffusion_pytorch_model.safetensors"  # transformer/ and vae/ of the PixArt-alpha repo
TRANSFORMER_LORA = "transformer_lora.bin"
PROMPT, NEGATIVE_PROMPT = "manga", ""  # the official pipeline's fixed prompt and its default negative


def check_line_art_models(paths: ModelPaths, style: str, cache_dir: Path | None = None) -> None:
    """Before anything loads: a ModelError naming the files `style` lacks, their size and the command
    that fetches them (engine/models/line_art.py), and the folders the loader reads."""
    from engine.models.line_art import require_line_art

    if str(style) not in LINE_ART_STYLES:
        raise ModelError(f"{style!r} is not a line-art style ({', '.join(LINE_ART_STYLES)})")
    require_line_art(paths, str(style), cache_dir)
    if paths.pixart is None:  # a source the preset check cannot see (no pixart/ at all)
        raise ModelError(f"{paths.colorflow.parent}: no PixArt-alpha base (pixart/) for the {style} style; "
                         f"fetch it with `colorflow models download --line-art`")
    for sub in ("transformer", "vae", "scheduler"):
        require_model_file(paths.pixart / sub, f"pixart/{sub}")
    require_model_file(paths.line_art(style), f"colorflow/{paths.line_art(style).name} (the {style} style)")


def _check_guide_fits(guide, transformer, folder: Path, base: Path) -> None:
    """The guide's outputs join the transformer's first blocks: same width, at most as many."""
    width = guide.config.num_attention_heads * guide.config.attention_head_dim
    inner = transformer.config.num_attention_heads * transformer.config.attention_head_dim
    blocks, outputs = transformer.config.num_layers, guide.config.num_layers // 2
    if width != inner or outputs > blocks:
        raise ModelError(f"{folder / 'config.json'}: the guide ({outputs} outputs of width {width}) does not fit the "
                         f"transformer of {base / 'config.json'} ({blocks} blocks of width {inner}); {REPAIR_HINT}")


def load_pixart_diffusion(
    paths: ModelPaths, style: str, device: str = "cpu", *, dtype: torch.dtype | None = None, low_vram: bool = False,
    vae_tiling: bool = False, cache_dir: Path | None = None, emit: EventSink = ignore,
) -> PixArtComponents:
    """Load the PixArt-alpha transformer (with the style's official LoRA), VAE and DPM-Solver++
    scheduler config, the style's guide and GSRP network, and the official prompt's T5 embeddings
    (from the cache folder `cache_dir`, None: the user's; else computed once). `low_vram`: every model on the CPU until it
    runs (accelerate hooks); `vae_tiling`: the VAE in tiles. Attention through SDPA, as load_diffusion."""
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, PixArtTransformer2DModel
    from diffusers.utils import logging as diffusers_logging

    from engine.gsrp.fusion import FUSION_WEIGHTS, load_fusion
    from engine.icp.pixart_guide import load_pixart_guide
    from engine.icp.pixart_lora import load_pixart_lora
    from engine.icp.text_embeddings import prompt_embeddings

    check_line_art_models(paths, style, cache_dir)
    diffusers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()  # ModelMixin.to(dtype) warns about fp32-pinned modules even when none exist
    dtype = dtype or default_dtype(device)
    base, folder = Path(paths.pixart), paths.line_art(style)
    transformer = load_pretrained(PixArtTransformer2DModel, base / "transformer", "the PixArt-alpha transformer",
                                  BASE_WEIGHTS, use_safetensors=True)
    vae = load_pretrained(AutoencoderKL, base / "vae", "the PixArt-alpha VAE", BASE_WEIGHTS, use_safetensors=True)
    # The repo's DPM-Solver++ config, used as shipped (the official pipeline does not swap it).
    scheduler_config = load_scheduler_config(base / "scheduler" / "scheduler_config.json", DPMSolverMultistepScheduler)
    with reading_model(folder / TRANSFORMER_LORA, f"the ColorFlow {style} transformer LoRA"):
        load_pixart_lora(transformer, folder / TRANSFORMER_LORA)
    with reading_model(folder, f"the ColorFlow {style} guide"):
        guide = load_pixart_guide(folder)
    _check_guide_fits(guide, transformer, folder, base / "transformer")
    with reading_model(folder / FUSION_WEIGHTS, f"the {style} GSRP network"):
        fusion = load_fusion(folder, vae.config)
    text = prompt_embeddings(base, PROMPT, NEGATIVE_PROMPT, cache_dir=cache_dir, device=device, emit=emit,
                             dtype=dtype)
    target = torch.device(device)
    ready_for_inference((transformer, guide, vae, fusion), dtype, vae, vae_tiling)
    kernels.use_sdpa(transformer, guide, vae)
    kernels.set_channels_last((vae,), kernels.channels_last_default(target))
    components = PixArtComponents(transformer, guide, vae, text, scheduler_config, fusion, target, dtype,
                                  prompts=(PROMPT, NEGATIVE_PROMPT))
    if low_vram and target.type != "cpu":
        install_pixart_offload(components)
    else:
        for module in (transformer, guide, vae, fusion):
            module.to(target)
    return components

