"""Device choice (auto|cuda|mps|cpu) and the dtype that suits it."""

from __future__ import annotations

from engine.errors import InputError

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


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
