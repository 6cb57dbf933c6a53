"""Low-VRAM model placement with accelerate's offload hooks, as diffusers' enable_model_cpu_offload.

A hook moves a model to the accelerator when its forward runs (and may send the previous model
back to the CPU). Hooks fire only on `forward`, so code that walks a model's submodules (the
guided UNet, the VAE encoder/decoder with GSRP features) goes through a `Runner`, whose forward
calls a function on the wrapped model: every use of a model is then a forward, and no code
moves modules by hand.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn


class Runner(nn.Module):
    """`runner(fn, *args)` = `fn(model, *args)` through this module's forward (see module doc)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @property
    def config(self):
        return self.model.config

    def forward(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(self.model, *args, **kwargs)


class ModelOffload:
    """Model-level CPU offload: each registered model lives on the CPU and moves to `device`
    when it runs; `after` names a model to send back to the CPU at that moment."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.hooks: dict[str, Any] = {}

    def add(self, name: str, module: nn.Module, after: str | None = None) -> nn.Module:
        from accelerate import cpu_offload_with_hook

        module, hook = cpu_offload_with_hook(module, self.device, prev_module_hook=self.hooks.get(after))
        self.hooks[name] = hook
        return module

    def offload(self, *names: str) -> None:
        """Send these models (all when none are named) back to the CPU now."""
        for name in names or tuple(self.hooks):
            self.hooks[name].offload()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def place_models(components: Any, device: torch.device | str) -> bool:
    """Move the models of a loaded model set (the nn.Module fields of its components: a family
    left idle waits on the CPU, and comes back before it runs). With model offload installed
    (low VRAM) the hooks place them: moving to the CPU is the offload, moving back waits for
    their next forward. A set on the CPU stays (a no-op). Returns whether anything moved."""
    if components.device.type == "cpu":
        return False
    target = torch.device(device)
    offload = getattr(components, "offload", None)
    if offload is not None:
        if target.type == "cpu":
            offload.offload()
        return target.type == "cpu"
    seen: set[int] = set()
    for value in vars(components).values():
        if isinstance(value, nn.Module) and id(value) not in seen:
            seen.add(id(value))
            value.to(target)
    if target.type == "cpu" and components.device.type == "cuda":
        torch.cuda.empty_cache()
    return True


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA, MPS or host memory ran out (torch raises several types for this)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_memory() -> None:
    """Give back what a failed page held: Python garbage, then the CUDA allocator's cache."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
