"""How the loaded diffusion models run: SDPA attention, memory format, opt-in torch.compile (docs/performance.md).

Applied once at load time (models.loading.load_diffusion). The CLIP encoders get SDPA from
io.checkpoints.load_pretrained (transformers' attn_implementation="sdpa"); the diffusers models
(UNet, guide, VAE) get diffusers' AttnProcessor2_0 here, pinned, whatever a config or library
default would pick. The ScreenStyle networks and the GSRP fusion net have no attention.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    import torch
    from torch import nn

    from engine.icp.components import DiffusionComponents

# channels_last on the UNet, guide and VAE, per device type, from `colorflow bench speedups` at official
# size (docs/performance.md). CPU (2 cores, fp32, canvas 512x512): the guided step 1.065x the contiguous
# time (slower), the VAE decode 0.87x; the decode is ~1% of a page and NHWC would end the official
# procedure's bit-for-bit CPU reproduction, so off. CUDA and MPS: off until the GPU check
# (scripts/gpu_check.py runs bench_speedups, channels_last included) shows it pays.
CHANNELS_LAST_BY_DEVICE = {"cpu": False, "cuda": False, "mps": False}
COMPILE_BACKEND = "inductor"  # torch.compile's default; tests set "aot_eager" (no C++ compiler, seconds)


def diffusers_attentions(model: nn.Module) -> list[nn.Module]:
    """Every diffusers Attention module inside `model`."""
    from diffusers.models.attention_processor import Attention

    return [module for module in model.modules() if isinstance(module, Attention)]


def use_sdpa(*models: nn.Module) -> int:
    """Every diffusers Attention of `models` through torch's scaled_dot_product_attention
    (AttnProcessor2_0); returns how many were set."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    attentions = [a for model in models for a in diffusers_attentions(model)]
    for attention in attentions:
        attention.set_processor(AttnProcessor2_0())
    return len(attentions)


def use_math_attention(*models: nn.Module) -> int:
    """The counterfactual for benchmarks: diffusers' AttnProcessor (baddbmm, softmax, bmm)."""
    from diffusers.models.attention_processor import AttnProcessor

    attentions = [a for model in models for a in diffusers_attentions(model)]
    for attention in attentions:
        attention.set_processor(AttnProcessor())
    return len(attentions)


def channels_last_default(device: torch.device | str) -> bool:
    """Whether the UNet, guide and VAE run in channels_last on this device type by default."""
    import torch

    return CHANNELS_LAST_BY_DEVICE.get(torch.device(device).type, False)


def set_channels_last(modules: Iterable[nn.Module], on: bool) -> None:
    """4-D weights of `modules` in channels_last (NHWC) or back to contiguous (NCHW); convolutions
    then produce outputs in the weights' format. Same values, different memory order."""
    import torch

    memory_format = torch.channels_last if on else torch.contiguous_format
    for module in modules:
        module.to(memory_format=memory_format)


def compile_components(components: DiffusionComponents, backend: str | None = None) -> None:
    """torch.compile the guided UNet step and the guide: the UNet runner's forward (the guided
    forward walks the UNet's blocks, so compiling unet.forward would not reach it) and the guide's
    forward. Done before offload hooks are installed, so --low-vram's hooks wrap the compiled
    forwards and move the model outside the compiled code. The VAE stays eager (see
    docs/performance.md: its decode runs once a page)."""
    import torch

    if components.offload is not None:
        raise RuntimeError("compile the models before installing offload hooks")
    backend = backend or COMPILE_BACKEND
    for module in (components.unet_runner, components.guide):
        module.forward = torch.compile(module.forward, backend=backend)


def is_compiled(module: nn.Module) -> bool:
    """True when `module`'s forward is a torch.compile wrapper (possibly under an offload hook)."""
    forward = getattr(module, "_old_forward", module.__dict__.get("forward"))
    return forward is not None and hasattr(forward, "_torchdynamo_orig_callable")
