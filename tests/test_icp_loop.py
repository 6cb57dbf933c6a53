"""ICP loop with stub UNet, guide and VAE that return known tensors and record what they get."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from engine.core.geometry import WorkSize
from engine.rap.canvas import build_mask
from engine.icp.colorize import Colorizer, ColorizeSettings
from engine.icp.guide import GuideFeatures

SIZE = WorkSize(256, 384)
SCALE = 8  # the stub VAE's latent grid, as SD1.5's
SCALING_FACTOR = 0.18215


class StubVAE:
    """Encodes to a known deterministic latent (posterior std ~ 0): per 8x8 cell, the mean of
    R, G, B and minus the mean of R. Decodes by nearest upsampling of the first 3 channels."""

    config = SimpleNamespace(scaling_factor=SCALING_FACTOR, block_out_channels=(1, 1, 1, 1))

    @staticmethod
    def expected_latent(image: Image.Image) -> torch.Tensor:
        x = torch.from_numpy(np.asarray(image.convert("RGB"), np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
        pooled = F.avg_pool2d(x, SCALE)
        return torch.cat([pooled, -pooled[:, :1]], dim=1)

    def encode(self, pixels: torch.Tensor):
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        pooled = F.avg_pool2d(pixels, SCALE)
        mean = torch.cat([pooled, -pooled[:, :1]], dim=1)
        logvar = torch.full_like(mean, -60.0)  # clamped to -30 inside: std 3e-7
        return SimpleNamespace(latent_dist=DiagonalGaussianDistribution(torch.cat([mean, logvar], dim=1)))

    def decode(self, latents: torch.Tensor, return_dict: bool = False):
        return (F.interpolate(latents[:, :3], scale_factor=SCALE, mode="nearest").clamp(-1, 1),)


class StubGuide:
    """Returns tagged features (constant tensors) and records every call."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, sample, timestep, conditioning, conditioning_scale=1.0):
        features = GuideFeatures(
            down=[torch.full((1, 1, 1, 1), 100.0 + i) for i in range(12)],
            mid=torch.full((1, 1, 1, 1), 200.0),
            up=[torch.full((1, 1, 1, 1), 300.0 + i) for i in range(15)],
        )
        self.calls.append(dict(sample=sample.clone(), timestep=int(timestep), conditioning=conditioning.clone(),
                               scale=conditioning_scale, features=features))
        return features


class StubUNet:
    """Predicts known noise: UNCOND for batch rows fed the negative prompt, COND otherwise."""

    def __init__(self, shape) -> None:
        g = torch.Generator().manual_seed(123)
        self.uncond = torch.randn(shape, generator=g)
        self.cond = torch.randn(shape, generator=g)
        self.calls: list[dict] = []

    def __call__(self, unet, sample, timestep, text, features):
        self.calls.append(dict(sample=sample.clone(), timestep=int(timestep), text=text.clone(), features=features))
        if sample.shape[0] == 2:
            return torch.cat([self.uncond, self.cond])
        return self.cond.clone()


def _canvas() -> Image.Image:
    """A canvas whose references area and page area have very different colors."""
    canvas = Image.new("RGB", SIZE.canvas, (230, 40, 40))
    rng = np.random.default_rng(0)
    page = rng.integers(0, 255, (SIZE.height, SIZE.width), np.uint8)
    canvas.paste(Image.fromarray(page).convert("RGB"), (SIZE.width // 2, SIZE.height // 2))
    return canvas


@pytest.fixture
def stubbed(tiny_components, monkeypatch):
    """The real Colorizer on stub guide/UNet/VAE (real tokenizer, text encoder, scheduler config)."""
    from diffusers import UniPCMultistepScheduler

    components = dataclasses.replace(tiny_components, guide=StubGuide(), vae=StubVAE(), vae_runner=None)
    latent_shape = (1, 4, SIZE.canvas[1] // SCALE, SIZE.canvas[0] // SCALE)
    unet = StubUNet(latent_shape)
    steps: list[tuple[int, torch.Tensor]] = []
    original_step = UniPCMultistepScheduler.step

    def recording_step(self, model_output, timestep, sample, *args, **kwargs):
        steps.append((int(timestep), model_output.clone()))
        return original_step(self, model_output, timestep, sample, *args, **kwargs)

    monkeypatch.setattr(UniPCMultistepScheduler, "step", recording_step)
    return Colorizer(components, unet_forward=unet), components, unet, steps


def _text_embeddings(components, prompt: str) -> torch.Tensor:
    tokenizer = components.tokenizer
    ids = tokenizer([prompt], padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    with torch.no_grad():
        return components.text_encoder(ids)[0][0]


def test_cfg_combines_uncond_and_cond_exactly_and_uniPC_gets_it(stubbed):
    colorizer, components, unet, steps = stubbed
    settings = ColorizeSettings(steps=10, guidance_scale=7.5, preview_every=0)
    colorizer(_canvas(), build_mask(SIZE), SIZE, settings)
    expected_noise = unet.uncond + 7.5 * (unet.cond - unet.uncond)
    # The official schedule (docs/reference/geometry.md): UniPC, 10 steps -> 999, 899, ..., 100.
    assert [t for t, _ in steps] == [999, 899, 799, 699, 599, 500, 400, 300, 200, 100]
    for _, noise in steps:
        torch.testing.assert_close(noise, expected_noise, rtol=0, atol=1e-6)
    # Uncond first: row 0 is the empty negative prompt, row 1 is "manga".
    text = unet.calls[0]["text"]
    torch.testing.assert_close(text[0], _text_embeddings(components, ""))
    torch.testing.assert_close(text[1], _text_embeddings(components, "manga"))
    assert not torch.allclose(text[0], text[1])


def test_guidance_one_runs_the_conditional_prediction_alone(stubbed):
    colorizer, components, unet, steps = stubbed
    colorizer(_canvas(), build_mask(SIZE), SIZE, ColorizeSettings(steps=3, guidance_scale=1.0, preview_every=0))
    assert all(call["sample"].shape[0] == 1 for call in unet.calls)
    torch.testing.assert_close(unet.calls[0]["text"][0], _text_embeddings(components, "manga"))
    for _, noise in steps:
        torch.testing.assert_close(noise, unet.cond, rtol=0, atol=0)


def test_guide_gets_references_latent_mask_page_latent_in_that_order(stubbed):
    colorizer, components, unet, steps = stubbed
    canvas, mask = _canvas(), build_mask(SIZE)
    colorizer(canvas, mask, SIZE, ColorizeSettings(steps=2, preview_every=0))
    guide = components.guide
    assert len(guide.calls) == 2
    # Expected images built here from docs/reference/geometry.md, not with the engine's helper.
    w, h = SIZE.width, SIZE.height
    centre = (w // 2, h // 2, w // 2 + w, h // 2 + h)
    references_only = canvas.copy()
    references_only.paste((0, 0, 0), centre)
    page_only = Image.new("RGB", canvas.size, (0, 0, 0))
    page_only.paste(canvas.crop(centre), centre[:2])
    red = np.asarray(mask.convert("RGB"), np.float32)[..., 0]
    mask_latent = F.interpolate(torch.from_numpy(1.0 - red / 255.0)[None, None], size=(h * 2 // SCALE, w * 2 // SCALE),
                                mode="bilinear", align_corners=False)
    for call in guide.calls:
        conditioning = call["conditioning"]
        assert conditioning.shape == (1, 9, h * 2 // SCALE, w * 2 // SCALE)  # batch 1: one guide pass per step
        torch.testing.assert_close(conditioning[:, 0:4], StubVAE.expected_latent(references_only) * SCALING_FACTOR,
                                   rtol=0, atol=1e-5)
        torch.testing.assert_close(conditioning[:, 4:5], mask_latent, rtol=0, atol=1e-6)
        torch.testing.assert_close(conditioning[:, 5:9], StubVAE.expected_latent(page_only) * SCALING_FACTOR,
                                   rtol=0, atol=1e-5)
        assert call["sample"].shape[0] == 1 and call["scale"] == 1.0
    # The two latents are far apart, so an exchange could not pass the checks above.
    assert (StubVAE.expected_latent(references_only) - StubVAE.expected_latent(page_only)).abs().mean() > 0.3


def test_unet_gets_the_guides_features_and_the_same_sample_for_both_cfg_halves(stubbed):
    colorizer, components, unet, steps = stubbed
    colorizer(_canvas(), build_mask(SIZE), SIZE, ColorizeSettings(steps=3, preview_every=0))
    guide = components.guide
    assert len(unet.calls) == len(guide.calls) == 3
    for guide_call, unet_call in zip(guide.calls, unet.calls):
        assert unet_call["features"] is guide_call["features"]
        assert unet_call["timestep"] == guide_call["timestep"]
        uncond_half, cond_half = unet_call["sample"].chunk(2)
        torch.testing.assert_close(uncond_half, guide_call["sample"], rtol=0, atol=0)
        torch.testing.assert_close(cond_half, guide_call["sample"], rtol=0, atol=0)
