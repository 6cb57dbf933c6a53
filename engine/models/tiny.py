"""Random-weight models in the official file layout, built with the real classes by ONE builder
whose size is a parameter (RandomSize): TINY exercises every loading and inference path offline
in seconds; official_size() builds every network at its official size (fp16 on disk, seconds to a
minute: built on the meta device and filled from a pool of random values), for timing and memory
only. Their colors mean nothing either way.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator


@dataclass(frozen=True)
class RandomSize:
    """The size of random-weight models: the architecture configs and how the values are made."""

    kind: str  # "tiny" or "official-size" (models.sources.random_weights_kind)
    unet: dict[str, Any]  # UNet2DConditionModel config; the guide, LoRA and GSRP net follow from it and the VAE
    vae: dict[str, Any]  # AutoencoderKL config
    text_encoder: dict[str, Any]  # CLIPTextConfig fields; vocabulary size and special tokens come from the tokenizer
    image_encoder: dict[str, Any]  # CLIPVisionConfig fields
    lora_rank: int
    vocab_size: int | None = None  # None: a character vocabulary; else a generated BPE vocabulary of that size
    dtype: str | None = None  # written in this dtype ("float16"); None: as built (float32)
    empty_init: bool = False  # built on the meta device, then filled with random values (fast at any size)


TINY = RandomSize(
    "tiny",
    unet=dict(sample_size=32, block_out_channels=(32, 32, 64), layers_per_block=2,
              down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
              up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
              cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32),
    vae=dict(block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
             up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, latent_channels=4, norm_num_groups=8,
             sample_size=64, mid_block_add_attention=False),
    text_encoder=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      max_position_embeddings=77, projection_dim=32),
    image_encoder=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       image_size=224, patch_size=32, projection_dim=32),
    lora_rank=4,
)
OFFICIAL_VOCAB_SIZE = 49408  # the CLIP BPE vocabulary of SD1.5's tokenizer


def official_size() -> RandomSize:
    """Every network at the size of the official checkpoints (configs: resources/models/)."""
    from engine.core.resources import model_config
    from engine.io.checkpoints import LORA_RANK

    return RandomSize(
        "official-size", unet=model_config("sd15-unet"), vae=model_config("sd15-vae"),
        text_encoder=model_config("sd15-text-encoder"), image_encoder=model_config("colorflow-image-encoder"),
        lora_rank=LORA_RANK, vocab_size=OFFICIAL_VOCAB_SIZE, dtype="float16", empty_init=True,
    )


def random_size(kind: str) -> RandomSize:
    """TINY or official_size() by kind ("tiny", "official-size"/"official")."""
    if kind == "tiny":
        return TINY
    if kind in ("official", "official-size"):
        return official_size()
    raise ValueError(f"unknown random-weights size {kind!r} (tiny or official)")


@contextlib.contextmanager
def _building(size: RandomSize) -> Iterator[None]:
    """Where a network is built: on the meta device (no values, no time) for an empty-init size."""
    if not size.empty_init:
        yield
        return
    from accelerate import init_empty_weights

    with init_empty_weights(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # copying real tensors into meta ones is a no-op (ColorGuiderSDModel.from_unet)
        yield


class RandomPool:
    """Values for the parameters of a network built on the meta device, fast at any size: one pool
    of standard normals (in the disk dtype) sliced at random offsets and scaled (1/sqrt(fan-in)
    for weights, 0.02 for vectors; norms get 1 and 0). Slices repeat across tensors: fine for
    timing and memory, and random weights mean nothing anyway."""

    SIZE = 1 << 22

    def __init__(self, seed: int, dtype: str) -> None:
        import torch

        self.generator = torch.Generator().manual_seed(seed)
        self.dtype = getattr(torch, dtype)
        base = torch.randn(self.SIZE, generator=self.generator).to(self.dtype)
        self.pool = torch.cat([base, base])  # any window of SIZE values is one contiguous slice

    def values(self, shape, std: float):
        import torch

        count = 1
        for dim in shape:
            count *= int(dim)
        parts = [self.pool[:0]]  # an empty tensor stays empty
        while count > 0:
            take = min(count, self.SIZE)
            start = int(torch.randint(self.SIZE, (1,), generator=self.generator))
            parts.append(self.pool[start:start + take] * std)
            count -= take
        return (parts[-1] if len(parts) <= 2 else torch.cat(parts[1:])).view(tuple(shape))

    def fill(self, module) -> None:
        """Give every parameter still on the meta device values (buffers are built real)."""
        import torch
        from torch import nn

        norms = (nn.GroupNorm, nn.LayerNorm, nn.modules.batchnorm._BatchNorm)
        for submodule in module.modules():
            for name, parameter in list(submodule._parameters.items()):
                if parameter is None or not parameter.is_meta:
                    continue
                shape = tuple(parameter.shape)
                if isinstance(submodule, norms):
                    value = (torch.ones if name == "weight" else torch.zeros)(shape, dtype=self.dtype)
                elif len(shape) >= 2:
                    value = self.values(shape, (shape[0] / max(1, parameter.numel())) ** 0.5)
                else:
                    value = self.values(shape, 0.02)
                submodule._parameters[name] = nn.Parameter(value, requires_grad=False)


def _finish(module, size: RandomSize, pool: RandomPool | None):
    """The built network with values (empty-init sizes) in the disk dtype."""
    if pool is not None:
        pool.fill(module)
    if size.dtype:
        import torch

        module.to(getattr(torch, size.dtype))
    return module

SD15_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins of the bytes that byte-level BPE tokenizers (GPT-2, CLIP) use,
    lower-case letters and digits first."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    symbols = [chr(b if b in printable else next(extra)) for b in range(256)]
    first = [c for c in symbols if c.isascii() and (c.islower() or c.isdigit())]
    return first + [c for c in symbols if c not in first]


def _bpe_vocabulary(size: int) -> tuple[dict[str, int], list[str]]:
    """A generated byte-level BPE vocabulary of exactly `size` tokens laid out like CLIP's (the
    256 byte symbols, the same with "</w>", merged pairs, then the two special tokens last) and its
    merges. Not the real CLIP vocabulary (which cannot be fetched here): same size and files."""
    symbols = _byte_symbols()
    vocab = {symbol: index for index, symbol in enumerate([*symbols, *(s + "</w>" for s in symbols)])}
    merges: list[str] = []
    wanted = size - len(vocab) - 2
    for left in symbols:
        for right in [*symbols, *(s + "</w>" for s in symbols)]:
            if len(merges) == wanted:
                break
            merges.append(f"{left} {right}")
            vocab[left + right] = len(vocab)
    return vocab, merges


def _write_tokenizer(folder: Path, vocab_size: int | None = None) -> int:
    """A CLIP BPE tokenizer with the files the official SD1.5 tokenizer folder has (vocab.json,
    merges.txt, tokenizer_config.json, special_tokens_map.json): character-level without merges,
    or a generated byte-level vocabulary of `vocab_size` tokens; returns the vocabulary size."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    merges: list[str] = []
    if vocab_size:
        vocab, merges = _bpe_vocabulary(vocab_size)
    else:
        symbols = CHAR_SYMBOLS
        vocab = {}
        for symbol in symbols:
            vocab.setdefault(symbol, len(vocab))
        for symbol in symbols:
            vocab.setdefault(symbol + "</w>", len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("\n".join(["#version: 0.2", *merges]) + "\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    tokenizer.save_pretrained(folder)
    special = folder / "special_tokens_map.json"
    if not special.exists():
        special.write_text(json.dumps({
            "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        }))
    return len(vocab)


def _arguments(config: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments of a diffusers config (its "_class_name"-style keys dropped)."""
    return {key: value for key, value in config.items() if not key.startswith("_")}


CHAR_SYMBOLS = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789,.!?'-")  # tiny tokenizer


def vocabulary_size(size: RandomSize) -> int:
    """The tokenizer's vocabulary size _write_tokenizer gives `size`: its generated BPE vocabulary,
    or the characters with and without "</w>" plus the two special tokens."""
    return size.vocab_size or 2 * len(CHAR_SYMBOLS) + 2


def text_encoder_config(size: RandomSize, vocab_size: int) -> dict[str, Any]:
    """CLIPTextConfig fields of `size` for a tokenizer of `vocab_size` tokens (special tokens last)."""
    return {**size.text_encoder, "vocab_size": vocab_size, "bos_token_id": vocab_size - 2,
            "eos_token_id": vocab_size - 1, "pad_token_id": vocab_size - 1}


def write_sd15(root: Path, size: RandomSize = TINY, pool: RandomPool | None = None):
    """root/{unet,vae,text_encoder,tokenizer,scheduler,model_index.json} in diffusers layout;
    returns the UNet and the VAE's config, from which the GraySD networks are built."""
    root.mkdir(parents=True, exist_ok=True)
    with _building(size):
        unet = build_unet(size)
    _finish(unet, size, pool).save_pretrained(root / "unet")
    with _building(size):
        vae = build_vae(size)
    _finish(vae, size, pool).save_pretrained(root / "vae")
    vocab_size = _write_tokenizer(root / "tokenizer", size.vocab_size)
    with _building(size):
        text_encoder = build_text_encoder(size, vocab_size)
    _finish(text_encoder, size, pool).save_pretrained(root / "text_encoder", safe_serialization=True)
    del text_encoder
    (root / "scheduler").mkdir(exist_ok=True)
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER, indent=2))
    (root / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "StableDiffusionPipeline",
                "feature_extractor": [None, None],
                "requires_safety_checker": False,
                "safety_checker": [None, None],
                "scheduler": ["diffusers", "PNDMScheduler"],
                "text_encoder": ["transformers", "CLIPTextModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
            },
            indent=2,
        )
    )
    return unet, vae.config


def write_graysd(unet, vae_config, graysd: Path, size: RandomSize = TINY, pool: RandomPool | None = None) -> None:
    """GraySD/{config.json, diffusion_pytorch_model.bin, unet_lora.bin, MultiResNetModel.bin}
    as pickled tensor dicts, like the official files; `unet` (just written) gets the LoRA."""
    import torch

    from engine.io.checkpoints import attach_lora
    from engine.icp.guide import ColorGuiderSDModel

    graysd.mkdir(parents=True, exist_ok=True)
    with _building(size):
        guide = ColorGuiderSDModel.from_unet(unet)
    _finish(guide, size, pool)
    with torch.no_grad():  # random, not zero, so the guide visibly changes the output
        for conv in [*guide.brushnet_down_blocks, guide.brushnet_mid_block, *guide.brushnet_up_blocks]:
            conv.weight.normal_(0, 0.05)
        guide.conv_in_condition.weight.normal_(0, 0.05)
    guide.save_pretrained(graysd, safe_serialization=False)
    del guide

    attach_lora(unet, rank=size.lora_rank, alpha=size.lora_rank)
    torch.save(random_lora(unet, size), graysd / "unet_lora.bin")
    write_fusion(vae_config, graysd / "MultiResNetModel.bin", size, pool)


def random_lora(model, size: RandomSize = TINY) -> dict:
    """The adapter tensors of a model with a LoRA attached, given random values (lora_B too, so
    the adapter visibly acts), in the size's disk dtype: the state dict of an official LoRA file."""
    import torch

    with torch.no_grad():
        lora = {k: v.normal_(0, 0.02).clone() for k, v in model.state_dict().items() if ".lora_" in k}
    return {k: v.to(getattr(torch, size.dtype)) for k, v in lora.items()} if size.dtype else lora


def write_fusion(vae_config, path: Path, size: RandomSize = TINY, pool: RandomPool | None = None) -> None:
    """The GSRP network (MultiResNetModel.bin, a pickled tensor dict) for a VAE of this config."""
    import torch

    from engine.gsrp.fusion import FusionNet, vae_feature_channels

    with _building(size):
        fusion = FusionNet(vae_feature_channels(vae_config))
    torch.save(_finish(fusion, size, pool).state_dict(), path)


def write_image_encoder(folder: Path, size: RandomSize = TINY, pool: RandomPool | None = None) -> None:
    with _building(size):
        encoder = build_image_encoder(size)
    _finish(encoder, size, pool).save_pretrained(folder, safe_serialization=True)


write_tiny_image_encoder = write_image_encoder  # the name tests/test_evaluation.py builds a tiny encoder with


def write_screenstyle(colorflow: Path, size: RandomSize = TINY) -> None:
    """The two ScreenStyle networks at their official size at every size (26 M values in all;
    small enough to build as they are), random weights, saved as pickled tensor dicts at the
    official paths."""
    import torch

    from engine.preprocess.screenstyle import RGB_TO_SCREEN_FILE, SCREEN_DECODER_FILE, RGBToScreen, ScreenDecoder

    for network, relative in ((RGBToScreen(), RGB_TO_SCREEN_FILE), (ScreenDecoder(), SCREEN_DECODER_FILE)):
        with torch.no_grad():  # noise weights random, not zero, so the noise visibly acts
            for name, parameter in network.named_parameters():
                if "noiseblock.weight" in name:
                    parameter.normal_(0, 0.2)
        path = colorflow / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(_finish(network, size, None).state_dict(), path)


# The networks of a size, built with the real classes: by the writers above, and without values by
# engine/models/meta_networks.py (the memory estimate, scripts/estimate_memory.py).

def build_unet(size: RandomSize):
    from diffusers import UNet2DConditionModel
    return UNet2DConditionModel(**_arguments(size.unet))


def build_vae(size: RandomSize):
    from diffusers import AutoencoderKL
    return AutoencoderKL(**_arguments(size.vae))


def build_text_encoder(size: RandomSize, vocab_size: int):
    from transformers import CLIPTextConfig, CLIPTextModel
    return CLIPTextModel(CLIPTextConfig(**text_encoder_config(size, vocab_size)))


def build_image_encoder(size: RandomSize):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    return CLIPVisionModelWithProjection(CLIPVisionConfig(**size.image_encoder))
