"""Tiny random-weight PixArt family in the official layout: DIR/pixart/ (the PixArt-alpha base) and colorflow/sketch|shading/ (guide, transformer LoRA, GSRP).

Built with the real classes and saved as the official files are (diffusers folders for the base;
config.json + pickled tensor dicts for the ColorFlow folders), so loading them runs the code that
loads the official checkpoints. Only the tiny size exists: official-size PixArt and T5 are 10+ GB
(`make-random` at official size does not write this family). The colors are meaningless.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# The tiny transformer: PixArt-alpha's architecture, small. sample_size 128 as the real model, so
# use_additional_conditions is on (resolution / aspect-ratio micro-conditions) and the positional
# table has the real base size (64) and interpolation scale (2). The inner width (heads x head dim)
# must be divisible by 3: the micro-condition embedders each take a third of it.
TINY_PIXART: dict[str, Any] = {
    "transformer": dict(
        num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=8, num_layers=4,
        cross_attention_dim=24, caption_channels=32, sample_size=128, patch_size=2,
        activation_fn="gelu-approximate", attention_bias=True, num_embeds_ada_norm=1000,
        norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6, norm_num_groups=32,
        attention_type="default", dropout=0.0, upcast_attention=False,
    ),
    "lora_rank": 4,  # the loader reads the rank from the file (official: 128)
    "guide_adapter_std": 0.05,  # adapters random, not zero, so the guide visibly acts
}
# Keys of the hub's transformer/config.json that PixArtTransformer2DModel does not take (it was
# written for diffusers' generic Transformer2DModel); written too, so the tiny file has the same keys.
LEGACY_TRANSFORMER_KEYS = dict(double_self_attention=False, num_vector_embeds=None, only_cross_attention=False,
                               use_linear_projection=False)
HUB_TRANSFORMER_CLASS = "Transformer2DModel"  # `_class_name` in the hub's transformer config and model_index
MODEL_INDEX = {  # model_index.json of PixArt-alpha/PixArt-XL-2-1024-MS
    "_class_name": "PixArtAlphaPipeline",
    "_diffusers_version": "0.22.0.dev0",
    "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
    "text_encoder": ["transformers", "T5EncoderModel"],
    "tokenizer": ["transformers", "T5Tokenizer"],
    "transformer": ["diffusers", HUB_TRANSFORMER_CLASS],
    "vae": ["diffusers", "AutoencoderKL"],
}


def _tiny_only(size: str) -> None:
    if size != "tiny":
        raise ValueError(f"the PixArt family is written at the tiny size only (got {size!r}): "
                         "official-size PixArt-alpha and T5 are 10+ GB")


def pixart_scheduler_config() -> dict[str, Any]:
    """scheduler/scheduler_config.json as the PixArt-alpha repo ships it (resources/models/pixart-scheduler.json)."""
    from engine.core.resources import model_config

    return model_config("pixart-scheduler")["config"]


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True))


def _write_t5(pixart_root: Path, size: str) -> None:
    """text_encoder/ and tokenizer/ (engine/models/tiny_t5.py); skipped while that module is absent."""
    try:
        from engine.models.tiny_t5 import write_t5
    except ModuleNotFoundError as exc:
        if exc.name != "engine.models.tiny_t5":
            raise
        return
    write_t5(pixart_root, size)


def write_pixart_base(pixart_root: Path, size: str = "tiny") -> None:
    """pixart_root/{model_index.json, transformer/, vae/, scheduler/, text_encoder/, tokenizer/}
    in the diffusers layout of PixArt-alpha/PixArt-XL-2-1024-MS, tiny and random. The transformer's
    caption width follows the tiny T5's d_model."""
    from diffusers import PixArtTransformer2DModel

    from engine.models.tiny import TINY, build_vae

    _tiny_only(size)
    pixart_root = Path(pixart_root)
    pixart_root.mkdir(parents=True, exist_ok=True)
    _write_t5(pixart_root, size)
    config = dict(TINY_PIXART["transformer"])
    t5_config = pixart_root / "text_encoder" / "config.json"
    if t5_config.is_file():
        config["caption_channels"] = json.loads(t5_config.read_text())["d_model"]
    transformer = PixArtTransformer2DModel(**config)
    transformer.save_pretrained(pixart_root / "transformer")
    config_path = pixart_root / "transformer" / "config.json"
    saved = json.loads(config_path.read_text())
    _write_json(config_path, {**saved, **LEGACY_TRANSFORMER_KEYS, "_class_name": HUB_TRANSFORMER_CLASS})
    build_vae(TINY).save_pretrained(pixart_root / "vae")
    _write_json(pixart_root / "scheduler" / "scheduler_config.json", pixart_scheduler_config())
    _write_json(pixart_root / "model_index.json", MODEL_INDEX)


def _guide_config(transformer_config: dict[str, Any]) -> dict[str, Any]:
    """The guide config of a line-art folder: the base transformer's architecture, 13 input channels."""
    import inspect

    from engine.icp.pixart_guide import COND_CHANNELS, ColorGuidePixArt

    names = inspect.signature(ColorGuidePixArt.__init__).parameters
    return {**{k: v for k, v in transformer_config.items() if k in names}, "cond_channels": COND_CHANNELS}


def write_line_art_folder(folder: Path, pixart_root: Path, size: str = "tiny") -> None:
    """folder/{config.json, diffusion_pytorch_model.bin, transformer_lora.bin, MultiResNetModel.bin}
    as the official sketch/ and shading/ folders hold them: the guide config (official class name),
    the guide's tensors with the official after_proj alias of the last adapter, the transformer LoRA
    keyed as the adapted transformer's state dict, and the GSRP network for pixart_root's VAE."""
    import torch
    from diffusers import PixArtTransformer2DModel
    from diffusers.configuration_utils import FrozenDict

    from engine.icp.pixart_guide import GUIDE_WEIGHTS, OFFICIAL_CLASS_NAME, ColorGuidePixArt, alias_keys
    from engine.icp.pixart_lora import attach_pixart_lora
    from engine.models.tiny import TINY, random_lora, write_fusion

    _tiny_only(size)
    folder, pixart_root = Path(folder), Path(pixart_root)
    folder.mkdir(parents=True, exist_ok=True)
    transformer_config = json.loads((pixart_root / "transformer" / "config.json").read_text())

    guide = ColorGuidePixArt(**_guide_config(transformer_config))
    with torch.no_grad():
        for adapter in guide.adapter_linear:
            adapter.weight.normal_(0, TINY_PIXART["guide_adapter_std"])
            adapter.bias.normal_(0, TINY_PIXART["guide_adapter_std"])
    state = guide.state_dict()
    for alias, key in alias_keys(guide.config.num_layers).items():
        state[alias] = state[key]
    torch.save(state, folder / f"{GUIDE_WEIGHTS}.bin")
    _write_json(folder / "config.json", {**dict(guide.config), "_class_name": OFFICIAL_CLASS_NAME,
                                         "_diffusers_version": _diffusers_version()})
    del guide

    transformer = PixArtTransformer2DModel.from_config(transformer_config)
    attach_pixart_lora(transformer, rank=TINY_PIXART["lora_rank"])
    torch.save(random_lora(transformer, TINY), folder / "transformer_lora.bin")
    del transformer

    vae_config = FrozenDict(json.loads((pixart_root / "vae" / "config.json").read_text()))
    write_fusion(vae_config, folder / "MultiResNetModel.bin", TINY)


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__
