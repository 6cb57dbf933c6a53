"""The line-art (PixArt-alpha) family at its official size with random values, for `models make-random --line-art`.

Writes, beside make_random's SD family: DIR/pixart/ (PixArt-XL-2-1024-MS layout: the transformer
~0.6 B parameters, the SD-architecture VAE, T5-XXL ~4.76 B parameters in two safetensors shards +
index, a generated T5 tokenizer, the repo's scheduler config), colorflow/sketch/ and shading/ (the
guide ~0.3 B each with the official after_proj alias, the rank-128 transformer LoRA, the GSRP
network) and colorflow/LE/erika.pth (the line extractor at its official widths, fp32 like the
official file). Networks are built on the meta device and filled from a RandomPool (fp16 on disk),
shard by shard for T5 so memory stays near one shard. For timing and memory only: colors mean nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

T5_SHARDS = 2  # the hub's text_encoder is two safetensors files


def _fp16(pool, module):
    import torch

    pool.fill(module)
    return module.to(torch.float16)


def write_t5_sharded(folder: Path, config_fields: dict[str, Any], pool, shards: int = T5_SHARDS) -> int:
    """folder/{config.json, model-0000N-of-0000M.safetensors, model.safetensors.index.json}: a T5
    encoder of this config with random values, written shard by shard (only one shard's tensors in
    memory at a time), tensors named as save_pretrained names them (tied copies once). Returns the
    parameter count."""
    import torch
    from accelerate import init_empty_weights
    from safetensors.torch import save_file
    from transformers import T5Config, T5EncoderModel

    from engine.io.fileio import atomic_write_json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = T5Config(**config_fields)
    with init_empty_weights():
        model = T5EncoderModel(config)
    # One name per tensor: tied copies (encoder.embed_tokens of shared) are left out, as save_pretrained
    # does; on the meta device the tie is not made, so the copies are named in _tied_weights_keys.
    tied = model._tied_weights_keys if isinstance(model._tied_weights_keys, dict) else {}
    named = [(name, p) for name, p in model.named_parameters() if name not in tied]
    total = sum(p.numel() for _, p in named)
    per_shard, groups, current, size = -(-total // shards), [], [], 0
    for name, parameter in named:
        if current and size + parameter.numel() > per_shard and len(groups) < shards - 1:
            groups.append(current)
            current, size = [], 0
        current.append((name, parameter))
        size += parameter.numel()
    groups.append(current)
    weight_map = {}
    for number, group in enumerate(groups, start=1):
        shard = f"model-{number:05d}-of-{len(groups):05d}.safetensors"
        tensors = {}
        for name, parameter in group:
            shape = tuple(parameter.shape)
            norm = name.endswith("layer_norm.weight")
            tensors[name] = (torch.ones(shape, dtype=torch.float16) if norm
                             else pool.values(shape, (shape[0] / max(1, parameter.numel())) ** 0.5 if len(shape) >= 2
                                              else 0.02).to(torch.float16).contiguous())
            weight_map[name] = shard
        save_file(tensors, str(folder / shard), metadata={"format": "pt"})
        del tensors
    atomic_write_json(folder / "model.safetensors.index.json",
                      {"metadata": {"total_size": 2 * total}, "weight_map": weight_map})
    atomic_write_json(folder / "config.json", {**config.to_dict(), "torch_dtype": "float16"})
    return total


def write_official_pixart_base(pixart_root: Path, pool) -> None:
    """pixart_root/ in the PixArt-XL-2-1024-MS layout at official size, random values, fp16."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, PixArtTransformer2DModel

    from engine.core.resources import model_config
    from engine.icp.pixart_lora import official_transformer_config
    from engine.io.fileio import atomic_write_bytes, atomic_write_json
    from engine.models.tiny_pixart import MODEL_INDEX, pixart_scheduler_config
    from engine.models.tiny_t5 import write_t5_tokenizer

    root = Path(pixart_root)
    vocab = write_t5_tokenizer(root / "tokenizer")  # generated pieces; ids fit T5's 32128 rows
    t5 = model_config("pixart-text-encoder")["config"]
    if vocab > t5["vocab_size"]:
        raise ValueError(f"the generated tokenizer's {vocab} ids exceed T5's {t5['vocab_size']}")
    write_t5_sharded(root / "text_encoder", t5, pool)
    transformer_config = official_transformer_config()
    with init_empty_weights():
        transformer = PixArtTransformer2DModel.from_config(transformer_config)
    _fp16(pool, transformer).save_pretrained(root / "transformer", safe_serialization=True)
    del transformer
    saved = json.loads((root / "transformer" / "config.json").read_text())
    atomic_write_json(root / "transformer" / "config.json", {**saved, **transformer_config})
    with init_empty_weights():
        vae = AutoencoderKL.from_config(model_config("sd15-vae"))
    _fp16(pool, vae).save_pretrained(root / "vae", safe_serialization=True)
    del vae
    (root / "scheduler").mkdir(parents=True, exist_ok=True)
    # The repo's file holds -Infinity (lambda_min_clipped): JSON as Python writes it, as the hub's file.
    atomic_write_bytes(root / "scheduler" / "scheduler_config.json",
                       json.dumps(pixart_scheduler_config(), indent=2, sort_keys=True).encode())
    atomic_write_json(root / "model_index.json", MODEL_INDEX)


def write_official_line_art_folder(folder: Path, pixart_root: Path, pool) -> None:
    """folder/ (sketch/ or shading/) at official size: config.json, diffusion_pytorch_model.bin (with
    the after_proj alias), transformer_lora.bin (rank 128) and MultiResNetModel.bin, fp16."""
    import torch
    from accelerate import init_empty_weights
    from diffusers import PixArtTransformer2DModel
    from diffusers.configuration_utils import FrozenDict

    from engine.icp.pixart_guide import (GUIDE_WEIGHTS, OFFICIAL_CLASS_NAME, ColorGuidePixArt, alias_keys,
                                         official_guide_config)
    from engine.icp.pixart_lora import attach_pixart_lora, official_transformer_config
    from engine.io.fileio import atomic_write_json
    from engine.models.tiny import official_size, write_fusion

    folder, pixart_root = Path(folder), Path(pixart_root)
    folder.mkdir(parents=True, exist_ok=True)
    with init_empty_weights():
        guide = ColorGuidePixArt.from_config(official_guide_config())
    state = _fp16(pool, guide).state_dict()
    for alias, key in alias_keys(guide.config.num_layers).items():
        state[alias] = state[key]
    torch.save(state, folder / f"{GUIDE_WEIGHTS}.bin")
    atomic_write_json(folder / "config.json", {**dict(guide.config), "_class_name": OFFICIAL_CLASS_NAME})
    del guide, state
    with init_empty_weights():
        transformer = PixArtTransformer2DModel.from_config(official_transformer_config())
        attach_pixart_lora(transformer)
    pool.fill(transformer)  # the adapter's tensors too (lora_B random, so the adapter acts)
    lora = {k: v.to(torch.float16).contiguous() for k, v in transformer.state_dict().items() if ".lora_" in k}
    torch.save(lora, folder / "transformer_lora.bin")
    del transformer, lora
    vae_config = FrozenDict(json.loads((pixart_root / "vae" / "config.json").read_text()))
    write_fusion(vae_config, folder / "MultiResNetModel.bin", official_size(), pool)


def write_official_line_art(paths, pool) -> None:
    """The whole line-art family at official size under a ModelPaths with `pixart` set."""
    from engine.core.options import LINE_ART_STYLES
    from engine.models.tiny_lines import write_line_extractor

    write_official_pixart_base(paths.pixart, pool)
    for style in LINE_ART_STYLES:
        write_official_line_art_folder(paths.line_art(style), paths.pixart, pool)
    paths.line_extractor.parent.mkdir(parents=True, exist_ok=True)
    write_line_extractor(paths.line_extractor, "official")
