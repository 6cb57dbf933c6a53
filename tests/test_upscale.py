"""GSRP and the final page: sizes restored, framing kept, keep-ink lightness, BatchNorm modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from engine.core.geometry import WorkSize, fit_page, restore_page
from engine.io.chapter import ImageSource, PageImage
from engine.icp.colorize import ColorizeSettings
from engine.rap.curation import Choices
from engine.gsrp.fusion import vae_feature_channels
from engine.pipelines.settings import PipelineSettings
from engine.gsrp.upscale import Upscaler, UpscaleSettings, encode_with_features, gsrp_size, keep_ink

from keep_ink_by_hand import keep_ink_by_hand

SIZE = WorkSize(256, 384)


def manga_page(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """Gray page with ink lines, text-like marks and a screentone dot pattern."""
    rng = np.random.default_rng(seed)
    page = Image.new("L", size, 245)
    draw = ImageDraw.Draw(page)
    w, h = size
    for _ in range(12):
        x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        draw.rectangle((x0, y0, x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(10, h // 2))),
                       outline=0, width=2, fill=int(rng.integers(80, 230)))
    array = np.asarray(page).copy()
    array[::4, ::4] = np.minimum(array[::4, ::4], 90)  # screentone dots
    return Image.fromarray(array)


@pytest.fixture
def upscaler(tiny_components):
    c = tiny_components
    return Upscaler(c.vae, c.fusion, c.device, c.dtype)


@pytest.mark.parametrize("page_size", [(300, 450), (451, 300), (333, 333), (257, 391), (150, 700)])
def test_output_has_the_page_size_and_covers_the_whole_page(pipeline, tmp_path, page_size):
    gray = manga_page(page_size)
    path = tmp_path / "page.png"
    gray.save(path)
    page = PageImage(ImageSource(path), gray, "0" * 64)
    ref = tmp_path / "ref.png"
    Image.new("RGB", (300, 450), (30, 160, 220)).save(ref)
    settings = PipelineSettings(ColorizeSettings(steps=2, preview_every=0), UpscaleSettings(), keep_ink=True, size=SIZE,
                                input_style="gray")
    prepared = pipeline.prepare(page, settings.inputs)
    retrieval = pipeline.retrieve(page, [ImageSource(ref)], Choices(), prepared)
    final = pipeline.color(page, retrieval, prepared, settings)
    assert final.size == page_size and final.mode == "RGB"
    # Whole page, no crop: the ink of the page's outermost lines is still there, in place.
    ink = np.asarray(gray) < 40
    out = np.asarray(final.convert("L"))
    assert np.mean(out[ink] < 60) > 0.95


def test_keep_ink_lightness_matches_page_within_one_level(tmp_path):
    gray = manga_page((321, 457), seed=3)
    rng = np.random.default_rng(1)
    colored = Image.fromarray(rng.integers(0, 255, (457, 321, 3), np.uint8))
    result = keep_ink(colored, gray)
    from skimage.color import rgb2lab

    l_out = rgb2lab(np.asarray(result) / 255.0)[..., 0]
    l_in = rgb2lab(np.asarray(gray.convert("RGB")) / 255.0)[..., 0]
    assert np.abs(l_out - l_in).mean() * 255 / 100 <= 1.0
    assert np.asarray(result).std(axis=2).mean() > 2  # and it does carry color
    with pytest.raises(ValueError):
        keep_ink(colored.resize((10, 10)), gray)


def test_keep_ink_is_the_pages_lightness_with_the_colors_chroma_faded_in_the_ink():
    """Crafted pixels against the rule computed by hand (tests/keep_ink_by_hand.py): CIELAB L from
    the page, a*/b* from the colored page scaled by clip(L / 15, 0, 1); black ink stays black."""
    page = np.array([[0, 10, 20, 30, 36, 60, 128, 200]], np.uint8)
    colored = np.array([[(150, 110, 100), (150, 110, 100), (100, 120, 150), (150, 110, 100), (110, 140, 100),
                         (180, 110, 100), (150, 100, 90), (90, 120, 160)]], np.uint8)
    expected, in_gamut = keep_ink_by_hand(page, colored)
    assert in_gamut.all()
    unfaded = keep_ink_by_hand(page, colored, fade_below_l=0.0)[0]
    assert (np.abs(unfaded - expected).max(axis=-1)[0, :4] > 2).all()  # the fade shows in the four darkest
    result = np.asarray(keep_ink(Image.fromarray(colored), Image.fromarray(page))).astype(int)
    # exact: the same float64 formulas; each value lies 0.04 or more from where its rounding turns
    assert result.tolist() == expected.tolist()
    assert result[0, 0].tolist() == [0, 0, 0]


def test_gsrp_uses_five_encoder_levels_and_is_deterministic(upscaler, tiny_components):
    vae = tiny_components.vae
    pixels = torch.zeros(1, 3, 64, 96)
    with torch.no_grad():
        moments, features = encode_with_features(vae, pixels)
    assert [f.shape[1] for f in features] == vae_feature_channels(vae.config)
    assert [f.shape[-1] for f in features] == [96, 48, 24, 12, 12]
    colored = Image.new("RGB", (SIZE.width, SIZE.height), (200, 60, 60))
    gray_frame = manga_page(upscaler.frame_size(SIZE))
    stored = {k: v.clone() for k, v in upscaler.fusion.state_dict().items() if "running" in k}
    a = upscaler(colored, gray_frame)
    after = upscaler.fusion.state_dict()
    assert all(torch.equal(after[k], v) for k, v in stored.items())  # batch mode leaves stored stats alone
    b = upscaler(colored, gray_frame)
    assert a.size == gsrp_size(SIZE, 1.5, 8) == (384, 576)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    running = upscaler(colored, gray_frame, UpscaleSettings(batch_norm="running"))
    assert not np.array_equal(np.asarray(a), np.asarray(running))
    with pytest.raises(ValueError):
        UpscaleSettings(batch_norm="frozen")
    with pytest.raises(ValueError, match="multiple of 8"):
        upscaler(colored, manga_page((385, 576)))


def test_letterbox_round_trip_restores_framing():
    gray = manga_page((600, 250))
    frame, fit = fit_page(gray, (384, 576))
    restored = restore_page(frame.convert("RGB"), fit)
    assert restored.size == (600, 250)
    difference = np.abs(np.asarray(restored.convert("L"), int) - np.asarray(gray, int))
    assert np.median(difference) <= 8
