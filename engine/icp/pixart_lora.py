"""The official rank-128 LoRA of the PixArt transformer (sketch/ and shading/ transformer_lora.bin), attached with peft and loaded strictly.

The official target list is kept as published. On diffusers' PixArtTransformer2DModel its names
hit (SKETCH.md): attn1/attn2 to_q/k/v/out.0 and ff.net.0.proj/ff.net.2 in every block;
"proj" also pos_embed.proj (a Conv2d: peft gives it a conv LoRA); "linear" adaln_single.linear;
"linear_1"/"linear_2" the timestep, resolution and aspect-ratio embedders and the caption
projection; "proj_out" the final projection; "proj_in" nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.io.checkpoints import load_lora

PIXART_LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                       "proj", "linear", "linear_1", "linear_2"]
PIXART_LORA_RANK = 128  # alpha = rank in the official config


def pixart_lora_config(rank: int = PIXART_LORA_RANK):
    """The official transformer LoRA configuration (peft): rank = alpha, gaussian init (lora_B zero)."""
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=PIXART_LORA_TARGETS)


def attach_pixart_lora(transformer, rank: int = PIXART_LORA_RANK, adapter: str = "default") -> None:
    """Add the official adapter to a PixArt transformer (weights at peft's init: the output
    unchanged until loaded). diffusers' PixArtTransformer2DModel has no add_adapter; peft's
    inject_adapter_in_model is what add_adapter calls."""
    from peft import inject_adapter_in_model

    inject_adapter_in_model(pixart_lora_config(rank), transformer, adapter_name=adapter)


def load_pixart_lora(transformer, path: Path) -> int:
    """Attach the adapter (rank read from the file) and load transformer_lora.bin; every adapter
    tensor must be matched, or a ModelError names the missing, unexpected and mis-shaped keys.
    Returns the number of tensors loaded (582 for the official file)."""
    return load_lora(transformer, Path(path), attach=attach_pixart_lora, what="the PixArt transformer")


def official_transformer_config() -> dict[str, Any]:
    """The PixArt-XL-2-1024-MS transformer config (resources/models/pixart-transformer.json)."""
    from engine.core.resources import model_config

    return model_config("pixart-transformer")


def pixart_lora_shapes(transformer_config: dict | None = None) -> dict[str, list[int]]:
    """Key -> shape of every adapter tensor of the official LoRA on a transformer of this config
    (default: PixArt-XL-2-1024-MS), keys spelt as the adapted model's state dict
    (`<module>.lora_A.default.weight`); built on the meta device."""
    from accelerate import init_empty_weights
    from diffusers import PixArtTransformer2DModel

    config = official_transformer_config() if transformer_config is None else transformer_config
    with init_empty_weights():
        transformer = PixArtTransformer2DModel.from_config(config)
        attach_pixart_lora(transformer)
    return {key: list(value.shape) for key, value in transformer.state_dict().items() if ".lora_" in key}
