"""Tiny random-weight models in the official file layout, built with the real classes.

They exercise every loading and inference path offline in seconds; their colors mean nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

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


def _write_tokenizer(folder: Path) -> int:
    """A character-level CLIP BPE tokenizer (no merges) with the files the official SD1.5
    tokenizer folder has (vocab.json, merges.txt, tokenizer_config.json,
    special_tokens_map.json); returns the vocabulary size."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    symbols = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789,.!?'-")
    vocab: dict[str, int] = {}
    for symbol in symbols:
        vocab.setdefault(symbol, len(vocab))
    for symbol in symbols:
        vocab.setdefault(symbol + "</w>", len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    tokenizer.save_pretrained(folder)
    special = folder / "special_tokens_map.json"
    if not special.exists():
        special.write_text(json.dumps({
            "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        }))
    return len(vocab)


def write_tiny_sd15(root: Path) -> None:
    """root/{unet,vae,text_encoder,tokenizer,scheduler,model_index.json} in diffusers layout."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    root.mkdir(parents=True, exist_ok=True)
    unet = UNet2DConditionModel(
        sample_size=32,
        block_out_channels=(32, 32, 64),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    unet.save_pretrained(root / "unet")
    vae = AutoencoderKL(
        block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
        mid_block_add_attention=False,
    )
    vae.save_pretrained(root / "vae")
    vocab_size = _write_tokenizer(root / "tokenizer")
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            vocab_size=vocab_size,
            max_position_embeddings=77,
            projection_dim=32,
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1,
        )
    )
    text_encoder.save_pretrained(root / "text_encoder", safe_serialization=True)
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


def write_tiny_graysd(sd15: Path, graysd: Path) -> None:
    """GraySD/{config.json, diffusion_pytorch_model.bin, unet_lora.bin, MultiResNetModel.bin}
    as pickled tensor dicts, like the official files."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from engine.io.checkpoints import attach_lora
    from engine.gsrp.fusion import FusionNet, vae_feature_channels
    from engine.icp.guide import ColorGuiderSDModel

    graysd.mkdir(parents=True, exist_ok=True)
    unet = UNet2DConditionModel.from_pretrained(sd15 / "unet")
    guide = ColorGuiderSDModel.from_unet(unet)
    with torch.no_grad():  # random, not zero, so the tiny guide visibly changes the output
        for conv in [*guide.brushnet_down_blocks, guide.brushnet_mid_block, *guide.brushnet_up_blocks]:
            conv.weight.normal_(0, 0.05)
        guide.conv_in_condition.weight.normal_(0, 0.05)
    guide.save_pretrained(graysd, safe_serialization=False)

    attach_lora(unet, rank=4, alpha=4)
    with torch.no_grad():
        lora = {k: v.normal_(0, 0.02).clone() for k, v in unet.state_dict().items() if ".lora_" in k}
    torch.save(lora, graysd / "unet_lora.bin")

    vae = AutoencoderKL.from_pretrained(sd15 / "vae")
    fusion = FusionNet(vae_feature_channels(vae.config))
    torch.save(fusion.state_dict(), graysd / "MultiResNetModel.bin")


def write_tiny_image_encoder(folder: Path) -> None:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=224,
            patch_size=32,
            projection_dim=32,
        )
    )
    encoder.save_pretrained(folder, safe_serialization=True)


def write_tiny_screenstyle(colorflow: Path) -> None:
    """The two ScreenStyle networks at their official size (26 M values in all; small enough),
    random weights, saved as pickled tensor dicts at the official paths."""
    import torch

    from engine.preprocess.screenstyle import RGB_TO_SCREEN_FILE, SCREEN_DECODER_FILE, RGBToScreen, ScreenDecoder

    for network, relative in ((RGBToScreen(), RGB_TO_SCREEN_FILE), (ScreenDecoder(), SCREEN_DECODER_FILE)):
        with torch.no_grad():  # noise weights random, not zero, so the noise visibly acts
            for name, parameter in network.named_parameters():
                if "noiseblock.weight" in name:
                    parameter.normal_(0, 0.2)
        path = colorflow / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(network.state_dict(), path)
