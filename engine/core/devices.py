"""Device choice (auto|cuda|mps|cpu) and the dtype that suits it."""

from __future__ import annotations

from engine.core.options import Device
from engine.core.errors import InputError

DEVICE_CHOICES = tuple(Device)  # as declared in engine/core/options.py


def precheck_device(choice: str) -> None:
    """The device checks that need no torch import (fast errors before any heavy work): a CPU-only
    torch build or no NVIDIA driver for cuda, not Apple silicon for mps. pick_device decides."""
    import importlib.metadata
    import platform
    import sys
    from pathlib import Path

    if choice not in DEVICE_CHOICES:
        raise InputError(f"device must be one of {', '.join(DEVICE_CHOICES)}, got {choice!r}")
    if choice == "cuda":
        try:
            build = importlib.metadata.version("torch")
        except importlib.metadata.PackageNotFoundError:
            build = ""
        if "+cpu" in build:
            raise InputError(
                f"--device cuda: this torch build ({build}) has no CUDA support; use --device cpu, "
                "or install a CUDA build of torch (README: Install with a GPU)"
            )
        if sys.platform.startswith("linux") and not Path("/proc/driver/nvidia/version").exists():
            raise InputError("--device cuda: no NVIDIA driver is loaded on this machine; use --device cpu")
    if choice == "mps" and not (sys.platform == "darwin" and platform.machine() == "arm64"):
        raise InputError("--device mps: Apple Metal needs a Mac with Apple silicon; use --device cpu")


def pick_device(choice: str = "auto") -> str:
    """Resolve a device name; asking for an absent accelerator is a clear error."""
    import torch

    if choice not in DEVICE_CHOICES:
        raise InputError(f"device must be one of {', '.join(DEVICE_CHOICES)}, got {choice!r}")
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA GPU is visible to this torch build")
    if choice == "mps" and not has_mps:
        raise InputError("--device mps: Apple Metal is not available")
    return choice


NO_GPU = "no GPU: official models run on the CPU at several minutes per page"


def describe_device(device: str) -> str:
    """A resolved device in words: "cuda:0 (NVIDIA ..., 79.2 GiB)", "mps (Apple Metal)", "cpu"."""
    import torch

    if device.startswith("cuda"):
        index = torch.device(device).index
        index = torch.cuda.current_device() if index is None else index
        properties = torch.cuda.get_device_properties(index)
        return f"cuda:{index} ({properties.name}, {properties.total_memory / 2**30:.1f} GiB)"
    if device == "mps":
        return "mps (Apple Metal)"
    return device


def gpu_ruled_out() -> bool:
    """True when no GPU can be usable, decided without importing torch: a CPU-only torch build,
    or Linux without an NVIDIA driver (and no ROCm build), or macOS on Intel. Otherwise only
    torch can tell (pick_device)."""
    import importlib.metadata
    import platform
    import sys
    from pathlib import Path

    try:
        build = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        build = ""
    if "+cpu" in build:
        return True
    if sys.platform.startswith("linux"):
        return "+rocm" not in build and not Path("/proc/driver/nvidia/version").exists()
    if sys.platform == "darwin":
        return platform.machine() != "arm64"
    return False


def dtype_name(device: str) -> str:
    """The dtype loading.default_dtype picks for a resolved device, without torch."""
    return "float16" if device in ("cuda", "mps") else "float32"


def resolve_auto() -> str:
    """`auto` resolved: "cpu" without importing torch when no GPU can be usable, else pick_device."""
    return "cpu" if gpu_ruled_out() else pick_device("auto")


def describe_gpu() -> str:
    """The GPU `--device auto` uses, or that there is none and what that costs."""
    device = resolve_auto()
    return NO_GPU if device == "cpu" else describe_device(device)
