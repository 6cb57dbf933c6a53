"""The trained ICP module (guide + LoRA'd UNet as one nn.Module) and its trainable-only checkpoint state.

One module, so accelerate wraps it once: DDP/FSDP/DeepSpeed then see every trainable parameter
(the whole guide and the UNet's LoRA) in one forward, and gradients are reduced together. The
resume state keeps only what training changes: the frozen SD1.5 UNet base (859 M parameters,
3.4 GB in fp32) is reloaded from --models, never copied into DIR/state/.
"""

from __future__ import annotations

from pathlib import Path

import torch

from engine.core.errors import InputError
from engine.icp.guide import guided_unet_forward


class GuidedDenoiser(torch.nn.Module):
    """Noise prediction of the guided, LoRA'd UNet: guide features added into the UNet's path."""

    def __init__(self, guide: torch.nn.Module, unet: torch.nn.Module) -> None:
        super().__init__()
        self.guide = guide
        self.unet = unet

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, conditioning: torch.Tensor,
                text: torch.Tensor) -> torch.Tensor:
        features = self.guide(noisy, timesteps, conditioning)
        return guided_unet_forward(self.unet, noisy, timesteps, text, features)


def frozen_keys(model: torch.nn.Module) -> set[str]:
    """state_dict keys of the parameters that do not train (the UNet base weights)."""
    return {name for name, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}


def trainable_keys(model: torch.nn.Module) -> set[str]:
    """state_dict keys kept in the resume state: trainable parameters and any buffers."""
    return set(model.state_dict()) - frozen_keys(model)


def model_file(folder: Path, index: int) -> Path:
    """accelerate's name for the weights of its index-th prepared model."""
    return Path(folder) / (f"model_{index}.safetensors" if index else "model.safetensors")


def keep_trainable(models: list, weights: list, folder: str) -> None:
    """accelerate save hook: drop the frozen weights from each model's state before it is written."""
    if len(weights) != len(models):  # FSDP / DeepSpeed write their own (sharded) files
        return
    for i, model in enumerate(models):
        keep = trainable_keys(model)
        weights[i] = {k: v for k, v in weights[i].items() if k in keep}


def load_trainable(models: list, folder: str) -> None:
    """accelerate load hook: load each model's trainable-only file ourselves, every key checked,
    and take the model out of accelerate's own (strict, whole-model) loading."""
    from safetensors.torch import load_file

    for i in reversed(range(len(models))):
        model = models.pop(i)
        path = model_file(Path(folder), i)
        if not path.is_file():
            raise InputError(f"{folder}: the resume state has no {path.name}")
        state = load_file(str(path))
        expected = trainable_keys(model)
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise InputError(f"{path}: does not fit the model being trained (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}); was it saved with other options or models?")
        result = model.load_state_dict(state, strict=False)
        assert not result.unexpected_keys  # checked above; the frozen keys are the missing ones
