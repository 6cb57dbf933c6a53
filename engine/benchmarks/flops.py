"""FLOP count per page of our ICP pipeline vs the official procedure, on the meta device.

Counts with torch.utils.flop_counter at official model size (no weights, runs on the CPU in
seconds). Both procedures run the ScreenStyle pass once per page and decode the whole 2W x 2H
canvas. The official procedure: UNet and guide at CFG batch 2, the two conditioning images
VAE-encoded once per CFG copy, every reference re-embedded with CLIP for every page. Ours:
guide at batch 1, conditioning encoded once, reference embeddings cached per chapter
(amortised over `pages`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

TERA = 1e12


@dataclass
class FlopModels:
    unet: object
    guide: object
    vae: object
    text_encoder: object
    image_encoder: object


def build_meta_models() -> FlopModels:
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.utils import logging as diffusers_logging
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    from engine.io.checkpoints import attach_lora
    from engine.icp.guide import ColorGuiderSDModel
    from engine.core.resources import model_config

    diffusers_logging.set_verbosity_error()
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(model_config("sd15-unet"))
        attach_lora(unet)
        guide = ColorGuiderSDModel()
        vae = AutoencoderKL.from_config(model_config("sd15-vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig(**model_config("sd15-text-encoder")))
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**model_config("colorflow-image-encoder")))
    return FlopModels(unet, guide, vae, text_encoder, image_encoder)


def count_flops(fn: Callable[[], object]) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def measure_parts(width: int, height: int, margin: int = 64) -> dict[str, float]:
    """FLOPs of each building block at working size W x H (canvas 2W x 2H)."""
    import torch

    from engine.icp.guide import guided_unet_forward

    models = build_meta_models()
    meta = dict(device="meta")
    lat_h, lat_w = 2 * height // 8, 2 * width // 8
    t = torch.tensor(999, **meta)

    def latents(batch: int):
        return torch.empty(batch, 4, lat_h, lat_w, **meta)

    text = torch.empty(2, 77, 768, **meta)
    features_1 = models.guide(latents(1), t, torch.empty(1, 9, lat_h, lat_w, **meta))
    parts = {
        "unet_cfg_step": count_flops(lambda: guided_unet_forward(models.unet, latents(2), t, text, features_1)),
        "guide_batch1": count_flops(lambda: models.guide(latents(1), t, torch.empty(1, 9, lat_h, lat_w, **meta))),
        "guide_batch2": count_flops(lambda: models.guide(latents(2), t, torch.empty(2, 9, lat_h, lat_w, **meta))),
        "vae_encode_canvas": count_flops(
            lambda: models.vae.quant_conv(models.vae.encoder(torch.empty(1, 3, 2 * height, 2 * width, **meta)))
        ),
        "vae_decode_canvas": count_flops(
            lambda: models.vae.decoder(models.vae.post_quant_conv(latents(1)))
        ),
        "vae_decode_page": count_flops(
            lambda: models.vae.decoder(
                models.vae.post_quant_conv(
                    torch.empty(1, 4, (height + 2 * margin) // 8, (width + 2 * margin) // 8, **meta)
                )
            )
        ),
        "text_encode_pair": count_flops(
            lambda: models.text_encoder(torch.zeros(2, 77, dtype=torch.long, **meta))
        ),
        "clip_crop": count_flops(lambda: models.image_encoder(pixel_values=torch.empty(1, 3, 224, 224, **meta))),
        "screenstyle": screenstyle_flops(width, height),
    }
    return parts


def screenstyle_flops(width: int, height: int) -> float:
    """The ScreenStyle pass on the 1.5W x 1.5H page: padded to multiples of 256 for the
    RGB-to-screen network, then 128 more for the ScreenVAE decoder (docs/reference/screenstyle.md)."""
    import torch

    from engine.preprocess.screenstyle import RGBToScreen, ScreenDecoder

    fw, fh = int(1.5 * width), int(1.5 * height)
    pw, ph = -(-fw // 256) * 256, -(-fh // 256) * 256
    rgb_to_screen, decoder = RGBToScreen().to("meta").eval(), ScreenDecoder().to("meta")
    return count_flops(lambda: rgb_to_screen(torch.empty(1, 4, ph, pw, device="meta"))) + count_flops(
        lambda: decoder(torch.empty(1, 4, ph + 128, pw + 128, device="meta"))
    )


def compare(width: int = 512, height: int = 800, steps: int = 10, refs: int = 40, pages: int = 20) -> dict:
    """Per-page FLOPs of both procedures and their ratio (ours / official)."""
    p = measure_parts(width, height)
    query_crops, ref_crops = 4, 5 * refs
    official = {
        "clip": (query_crops + ref_crops) * p["clip_crop"],
        "text": p["text_encode_pair"],
        "vae_encode": 4 * p["vae_encode_canvas"],  # 2 images x 2 CFG copies
        "guide": steps * p["guide_batch2"],
        "unet": steps * p["unet_cfg_step"],
        "vae_decode": p["vae_decode_canvas"],
        "screenstyle": p["screenstyle"],
    }
    ours = {
        "clip": (query_crops + ref_crops / pages) * p["clip_crop"],  # references cached per chapter
        "text": p["text_encode_pair"] / pages,  # prompt embeddings cached
        "vae_encode": 2 * p["vae_encode_canvas"],
        "guide": steps * p["guide_batch1"],
        "unet": steps * p["unet_cfg_step"],
        "vae_decode": p["vae_decode_canvas"],  # the whole canvas, as the official
        "screenstyle": p["screenstyle"],
    }
    return per_page_table(official, ours, size=f"{width}x{height}", steps=steps, references=refs,
                          pages_per_chapter=pages, parts_tflop={k: round(v / TERA, 3) for k, v in p.items()})


def per_page_table(official: dict[str, float], ours: dict[str, float], **facts) -> dict:
    """`facts`, then both procedures' FLOPs per part (TFLOP), their totals and the ratio ours/official,
    also without the retrieval savings (which depend on chapter length: diffusion alone)."""
    total_official, total_ours = sum(official.values()), sum(ours.values())
    return {
        **facts,
        "official_tflop": {k: round(v / TERA, 2) for k, v in official.items()},
        "ours_tflop": {k: round(v / TERA, 2) for k, v in ours.items()},
        "official_total_tflop": round(total_official / TERA, 1),
        "ours_total_tflop": round(total_ours / TERA, 1),
        "ratio": round(total_ours / total_official, 3),
        "ratio_without_retrieval": round((total_ours - ours["clip"]) / (total_official - official["clip"]), 3),
    }
