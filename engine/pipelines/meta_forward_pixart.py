"""The line-art family's stages (PixArt-α) run on the meta device at a working size: weight bytes per model, peak live activation bytes per stage and ICP phase.

The counterpart of meta_forward.py for the sketch and sketch-shading styles, on networks built on the
meta device at their real architecture: the PixArt-XL-2-1024-MS transformer with the official rank-128
LoRA, the ColorFlow guide (its official config), the SD-architecture VAE of the PixArt repo, the GSRP
fusion net, the official line extractor and the CLIP image encoder. Each stage runs the function a real
page goes through (extract_lines, PixArtColorizer at our CFG batch 2 with the guide at batch 1, Upscaler).
T5 is not resident: the prompt embeddings (2 x 120 x 4096, a few MB) are computed once and cached.
"""

from __future__ import annotations

import inspect
import warnings
from types import SimpleNamespace

import torch
from PIL import Image

from engine.core.geometry import WorkSize
from engine.core.live_bytes import LiveBytes
from engine.pipelines.meta_forward import _rap_peak, _until_copied_out, gsrp_peak, icp_phases, module_bytes

PIXART_MODELS = ("transformer", "guide", "vae", "fusion")  # in the run's dtype; the line extractor stays fp32
PIXART_PHASES = ("encode", "guide", "transformer", "decode")
TEXT_LENGTH, TEXT_WIDTH = 120, 4096  # the official max_sequence_length and T5-XXL's width


def pixart_meta_networks(architecture: str = "official") -> SimpleNamespace:
    """The line-art family's networks on the meta device: "official" sizes, or "tiny" (tiny_pixart's)."""
    from diffusers import PixArtTransformer2DModel

    from engine.gsrp.fusion import FusionNet, vae_feature_channels
    from engine.icp.pixart_guide import COND_CHANNELS, ColorGuidePixArt, official_guide_config
    from engine.icp.pixart_lora import PIXART_LORA_RANK, attach_pixart_lora, official_transformer_config
    from engine.models.meta_networks import meta_networks
    from engine.models.tiny import build_vae, random_size
    from engine.models.tiny_lines import TINY_LINE_EXTRACTOR
    from engine.models.tiny_pixart import TINY_PIXART
    from engine.preprocess.lines import LineExtractor

    size = random_size(architecture)
    official = architecture == "official"
    config = official_transformer_config() if official else dict(TINY_PIXART["transformer"])
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    takes = inspect.signature(ColorGuidePixArt.__init__).parameters  # (tiny: as tiny_pixart writes it)
    guide_config = official_guide_config() if official else {
        **{k: v for k, v in config.items() if k in takes}, "cond_channels": COND_CHANNELS}
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformer = PixArtTransformer2DModel.from_config(config)
        attach_pixart_lora(transformer, rank=PIXART_LORA_RANK if official else TINY_PIXART["lora_rank"])
        guide = ColorGuidePixArt(**guide_config)
        vae = build_vae(size)
        line_extractor = LineExtractor() if official else LineExtractor(**TINY_LINE_EXTRACTOR)
    sd = meta_networks(size)  # the CLIP image encoder (retrieval), as the SD family's estimate builds it
    networks = SimpleNamespace(transformer=transformer, guide=guide, vae=vae,
                               fusion=FusionNet(vae_feature_channels(vae.config)).to("meta"),
                               image_encoder=sd.image_encoder, line_extractor=line_extractor)
    for module in vars(networks).values():
        module.requires_grad_(False)
        module.eval()
    return networks


def _lines_peak(line_extractor, size: WorkSize) -> int:
    from engine.preprocess.lines import extract_lines
    from engine.preprocess.page import frame_size

    frame = Image.new("L", frame_size(size), 255)
    with LiveBytes() as live:
        _until_copied_out(lambda: extract_lines(frame, line_extractor, pad_value=255.0), "extract_lines")
    return live.peak


def _icp_and_gsrp_peaks(networks, size: WorkSize, dtype: torch.dtype, *, vae_tiling: bool,
                        decode: str) -> dict[str, int]:
    from engine.gsrp.upscale import UpscaleSettings
    from engine.icp.colorize import ColorizeSettings
    from engine.icp.pixart_colorize import PixArtColorizer
    from engine.icp.pixart_components import PixArtComponents
    from engine.icp.text_embeddings import TextEmbeddings
    from engine.models.tiny_pixart import pixart_scheduler_config
    from engine.rap.canvas import build_mask

    width = networks.transformer.config.caption_channels
    text = TextEmbeddings(torch.empty(2, TEXT_LENGTH, width, device="meta", dtype=dtype),
                          torch.ones(2, TEXT_LENGTH, device="meta", dtype=torch.long))
    components = PixArtComponents(networks.transformer, networks.guide, networks.vae, text, pixart_scheduler_config(),
                                  networks.fusion, torch.device("meta"), dtype)
    if vae_tiling:
        networks.vae.enable_tiling()
    canvas = Image.new("RGB", size.canvas, (128, 128, 128))
    settings = ColorizeSettings(steps=1, guidance_scale=4.5, decode=decode, prompt=components.prompts[0],
                                negative_prompt=components.prompts[1], preview_every=0)
    modules = {"guide": components.guide, "transformer": components.transformer_runner, "vae": components.vae_runner}
    with LiveBytes() as live, icp_phases(live, modules, "transformer"):
        _until_copied_out(lambda: PixArtColorizer(components)(canvas, build_mask(size), size, settings), "to_image")
    peaks = {phase: live.phase_peaks.get(phase, 0) for phase in PIXART_PHASES}
    peaks["GSRP"] = gsrp_peak(components.vae_runner, networks.fusion, size, dtype, UpscaleSettings())
    return peaks


def measure_pixart(architecture: str, size: WorkSize, dtype: str, *, vae_tiling: bool = False,
                   decode: str = "canvas") -> dict[str, dict[str, int]]:
    """{"weights": bytes per model, "activations": peak live bytes per stage ("Lines", "RAP", "GSRP") and
    ICP phase} of the line-art family of `architecture` at `size`, the diffusion models in `dtype`."""
    networks = pixart_meta_networks(architecture)
    torch_dtype = getattr(torch, dtype)
    for name in PIXART_MODELS:
        getattr(networks, name).to(dtype=torch_dtype)
    weights = {name: module_bytes(module) for name, module in vars(networks).items()}
    activations = {"Lines": _lines_peak(networks.line_extractor, size), "RAP": _rap_peak(networks.image_encoder)}
    activations.update(_icp_and_gsrp_peaks(networks, size, torch_dtype, vae_tiling=vae_tiling, decode=decode))
    return {"weights": weights, "activations": activations}
