"""The stages' own code run on the meta device at a working size: weight bytes per model and peak live activation bytes per stage and ICP phase.

Each stage runs through the function a real page goes through (screen_style, the CLIP forward of
ClipEmbedder.embed, Colorizer, Upscaler) on networks built on the meta device at their real
architecture (engine/models/meta_networks.py), inside core.live_bytes.LiveBytes. Meta tensors cannot
be copied out, so each run ends where its result would become an image, after every network ran:
that is checked (the error must come from that function), so an operator missing on the meta device
never passes for a small peak. ICP's phases (the VAE encode of the conditioning, the text encoder, the
guide, the UNet, the canvas decode) are told apart by forward hooks, for the low-VRAM placement.
"""

from __future__ import annotations

import contextlib
import traceback
from types import SimpleNamespace
from typing import Callable

import torch
from PIL import Image

from engine.core.geometry import WorkSize
from engine.core.live_bytes import LiveBytes

SCREENSTYLE_MODELS = ("rgb_to_screen", "screen_decoder")  # fp32 at every dtype, as loaded
DIFFUSION_MODELS = ("text_encoder", "unet", "guide", "vae", "fusion")  # in the run's dtype
ICP_PHASES = ("encode", "text", "guide", "unet", "decode")


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers as they are (dtype included)."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def _until_copied_out(run: Callable[[], object], function: str) -> None:
    """Run `run`; it must stop where a meta result is copied out to an image inside `function`."""
    try:
        run()
    except NotImplementedError as error:
        frames = traceback.extract_tb(error.__traceback__)
        if "meta" in str(error) and any(frame.name == function for frame in frames):
            return
        raise
    raise RuntimeError(f"the meta-device run did not stop in {function}: the memory estimate would be wrong")


class _PromptTokens:
    """Stands in for the CLIP tokenizer: `model_max_length` token ids per prompt (the ids do not
    change the memory; only their count does)."""

    def __init__(self, length: int) -> None:
        self.model_max_length = length

    def __call__(self, texts, **_):
        return SimpleNamespace(input_ids=torch.zeros(len(texts), self.model_max_length, dtype=torch.long))


def _screenstyle_peak(networks, size: WorkSize) -> int:
    from engine.preprocess.page import frame_size
    from engine.preprocess.screenstyle import ScreenStyleNetworks, screen_style

    nets = ScreenStyleNetworks(networks.rgb_to_screen, networks.screen_decoder, torch.device("meta"))
    frame = Image.new("RGB", frame_size(size), (255, 255, 255))
    with LiveBytes() as live:
        _until_copied_out(lambda: screen_style(frame, nets, 0), "screen_style")
    return live.peak


def _rap_peak(image_encoder) -> int:
    """One full batch of ClipEmbedder.embed: image embeddings, normalised."""
    from engine.rap.embedding import EMBED_BATCH

    side = image_encoder.config.vision_config.image_size if hasattr(image_encoder.config, "vision_config") \
        else image_encoder.config.image_size
    with LiveBytes() as live, torch.inference_mode():
        pixels = torch.empty(EMBED_BATCH, 3, side, side, device="meta")
        output = image_encoder(pixel_values=pixels)
        torch.nn.functional.normalize(output.image_embeds.float(), dim=-1)
        del pixels, output
    return live.peak


@contextlib.contextmanager
def icp_phases(live: LiveBytes, modules: dict, denoiser: str):
    """Forward pre-hooks naming ICP's phases after `modules` (name -> module); the VAE's first use is
    the encode, any later one after the `denoiser` (the UNet, or the PixArt transformer) ran is the decode."""
    seen: set[str] = set()

    def enter(name: str):
        def hook(module, args):
            phase = ("decode" if denoiser in seen else "encode") if name == "vae" else name
            seen.add(phase)
            live.enter_phase(phase)
        return hook

    handles = [module.register_forward_pre_hook(enter(name)) for name, module in modules.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _icp_and_gsrp_peaks(networks, size: WorkSize, dtype: torch.dtype, *, vae_tiling: bool, decode: str,
                        procedure: str) -> dict[str, int]:
    from engine.gsrp.upscale import UpscaleSettings
    from engine.icp.colorize import Colorizer, ColorizeSettings
    from engine.icp.components import DiffusionComponents
    from engine.models.tiny import SD15_SCHEDULER
    from engine.rap.canvas import build_mask

    tokens = _PromptTokens(networks.text_encoder.config.max_position_embeddings)
    components = DiffusionComponents(networks.unet, networks.guide, networks.vae, networks.text_encoder, tokens,
                                     dict(SD15_SCHEDULER), networks.fusion, torch.device("meta"), dtype)
    if vae_tiling:
        networks.vae.enable_tiling()
    canvas = Image.new("RGB", size.canvas, (128, 128, 128))
    settings = ColorizeSettings(steps=1, decode=decode, procedure=procedure, preview_every=0)
    modules = {"text": components.text_encoder, "guide": components.guide, "unet": components.unet_runner,
               "vae": components.vae_runner}
    with LiveBytes() as live, icp_phases(live, modules, "unet"):
        _until_copied_out(lambda: Colorizer(components)(canvas, build_mask(size), size, settings), "to_image")
    peaks = {phase: live.phase_peaks.get(phase, 0) for phase in ICP_PHASES}
    peaks["GSRP"] = gsrp_peak(components.vae_runner, networks.fusion, size, dtype, UpscaleSettings(procedure=procedure))
    return peaks


def gsrp_peak(vae_runner, fusion, size: WorkSize, dtype, settings) -> int:
    """GSRP's peak live bytes on the meta device: one page of this working size upscaled (both model families)."""
    from engine.gsrp.upscale import Upscaler

    upscaler = Upscaler(vae_runner, fusion, torch.device("meta"), dtype)
    colored = Image.new("RGB", (size.width, size.height), (128, 128, 128))
    gray = Image.new("RGB", upscaler.frame_size(size), (128, 128, 128))
    with LiveBytes() as live:
        _until_copied_out(lambda: upscaler(colored, gray, settings), "_to_image_truncated")
    return live.peak


def _networks(architecture: str, dtype: str):
    """The networks on the meta device, the diffusion models in `dtype`."""
    from engine.models.meta_networks import meta_networks
    from engine.models.tiny import random_size

    networks = meta_networks(random_size(architecture))
    for name in DIFFUSION_MODELS:
        getattr(networks, name).to(dtype=getattr(torch, dtype))
    return networks


def model_weights(architecture: str, dtype: str) -> dict[str, int]:
    """Bytes per model of `architecture` as loaded for `dtype` (module_bytes; no forward)."""
    return {name: module_bytes(module) for name, module in vars(_networks(architecture, dtype)).items()}


def measure(architecture: str, size: WorkSize, dtype: str, *, vae_tiling: bool = False, decode: str = "canvas",
            procedure: str = "ours") -> dict[str, dict[str, int]]:
    """{"weights": bytes per model, "activations": peak live bytes per stage and ICP phase} of the
    models of `architecture` ("official" or "tiny") at `size`, the diffusion models in `dtype`
    ("float16", "bfloat16", "float32"; ScreenStyle and the CLIP image encoder stay fp32, as loaded)."""
    networks = _networks(architecture, dtype)
    weights = {name: module_bytes(module) for name, module in vars(networks).items()}
    torch_dtype = getattr(torch, dtype)
    activations = {"ScreenStyle": _screenstyle_peak(networks, size), "RAP": _rap_peak(networks.image_encoder)}
    activations.update(_icp_and_gsrp_peaks(networks, size, torch_dtype, vae_tiling=vae_tiling, decode=decode,
                                           procedure=procedure))
    return {"weights": weights, "activations": activations}
