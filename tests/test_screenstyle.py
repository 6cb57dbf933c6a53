"""The ScreenStyle pass: official networks load strictly, G's properties, the documented RNG draws."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from engine.core.errors import ModelError
from engine.preprocess.screenstyle import (
    RGB_TO_SCREEN_FILE,
    SCREEN_DECODER_FILE,
    RGBToScreen,
    ScreenDecoder,
    ScreenStyleNetworks,
    _pad_to_multiple,
    load_screenstyle,
    screen_style,
)

MANIFEST = json.loads((Path(__file__).parent / "data" / "screenstyle-manifest.json").read_text())


def manga_page(size=(384, 576), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    page = Image.new("L", size, 240)
    draw = ImageDraw.Draw(page)
    for _ in range(10):
        x, y = (int(v) for v in rng.integers(0, min(size) - 40, 2))
        draw.rectangle((x, y, x + 40, y + 60), outline=0, width=3, fill=int(rng.integers(60, 220)))
    return page


@pytest.mark.parametrize("module, relative", [(RGBToScreen, RGB_TO_SCREEN_FILE), (ScreenDecoder, SCREEN_DECODER_FILE)])
def test_networks_have_the_official_keys_and_shapes(module, relative):
    ours = {k: list(v.shape) for k, v in module().state_dict().items()}
    assert ours == MANIFEST[relative]


def test_official_files_load_strictly_and_a_renamed_key_is_named(models_copy, tiny_models_dir):
    loaded = load_screenstyle(Path(tiny_models_dir) / "colorflow")
    state = torch.load(Path(tiny_models_dir) / "colorflow" / SCREEN_DECODER_FILE, weights_only=True)
    assert all(torch.equal(loaded.decoder.state_dict()[k], v) for k, v in state.items())
    path = models_copy / "colorflow" / RGB_TO_SCREEN_FILE
    original = torch.load(path, weights_only=True)
    state = dict(original)
    state["model.model.1.weights_orig"] = state.pop("model.model.1.weight_orig")
    torch.save(state, path)
    with pytest.raises(ModelError, match=r"missing key\(s\): model\.model\.1\.weight_orig"):
        load_screenstyle(models_copy / "colorflow")
    torch.save(original, path)
    (models_copy / "colorflow" / SCREEN_DECODER_FILE).unlink()
    with pytest.raises(ModelError, match="latest_net_dec.pth"):
        load_screenstyle(models_copy / "colorflow")


def test_rgb_input_is_padded_red_and_gray_input_white():
    rgb = Image.new("RGB", (300, 200), (10, 20, 30))
    padded = _pad_to_multiple(rgb, 256)
    assert padded.size == (512, 256)
    assert padded.getpixel((400, 100)) == (255, 0, 0)  # docs/reference/screenstyle.md: ImageOps.expand(fill=255) on RGB
    assert padded.getpixel((100, 100)) == (10, 20, 30)
    gray = _pad_to_multiple(rgb.convert("L"), 256)
    assert gray.getpixel((400, 100)) == 255
    assert _pad_to_multiple(Image.new("L", (256, 512)), 256).size == (256, 512)  # already a multiple


def test_g_is_gray_same_size_deterministic_and_not_the_plain_grayscale(tiny_screenstyle):
    page = manga_page()
    g = screen_style(page, tiny_screenstyle, seed=3)
    assert g.size == page.size and g.mode == "RGB"
    array = np.asarray(g).astype(int)
    assert (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all()
    again = np.asarray(screen_style(page, tiny_screenstyle, seed=3)).astype(int)
    other = np.asarray(screen_style(page, tiny_screenstyle, seed=4)).astype(int)
    assert np.array_equal(array, again)
    assert np.abs(array - other).mean() > 0.5  # dropout and noise are live: the seed matters
    plain = np.asarray(page.convert("RGB")).astype(int)
    assert np.abs(array - plain).mean() > 2
    # G is the floor of the mean of the screened page and the gray page (PIL blend at 0.5):
    # G <= gray where the screentone is darker than the page, never above (255 + gray) / 2.
    assert (array[..., 0] <= (255 + plain[..., 0]) // 2 + 1).all()


def test_g_is_the_floor_of_the_mean_of_the_truncated_screening_and_the_gray_page():
    """docs/reference/screenstyle.md, computed by hand: with the networks replaced by stand-ins of
    known output (a zero screen code; a decoder giving the tone r of each column), the screening is
    S = trunc(255 * ((t + 1) / 2 * (g + 1) / 2)), t = clamp((r + 1) * (g + 1) / 2 - 1, -1, 1), g the
    page in [-1, 1]; and G = floor((S + page) / 2), the same in all three channels."""
    page = np.array([[0, 37, 90, 128, 171, 200, 230, 255]] * 2, np.uint8)
    tones = np.array([-0.8, -0.35, 0.0, 0.3, 0.55, 0.9, 1.0, -0.1])

    class ZeroCode(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], 4, *x.shape[2:])

    class ColumnTones(torch.nn.Module):
        def forward(self, code):
            out = torch.zeros(code.shape[0], 1, *code.shape[2:])
            out[..., : len(tones)] = torch.tensor(tones, dtype=torch.float32)
            return out

    g = page / 127.5 - 1
    tone = np.clip((tones + 1) * (g + 1) / 2 - 1, -1, 1)
    screened = 255 * ((tone + 1) / 2 * (g + 1) / 2)
    assert np.all(np.abs(screened - np.rint(screened))[screened > 0] > 0.01)  # no float32 doubt at a boundary
    expected = (np.floor(screened) + page) // 2
    assert not np.array_equal(expected, (np.rint(screened) + page) // 2)  # truncating S shows...
    assert not np.array_equal(expected, np.rint((np.floor(screened) + page) / 2))  # ...and so does the blend's
    stand_ins = ScreenStyleNetworks(ZeroCode(), ColumnTones(), torch.device("cpu"))
    g_image = np.asarray(screen_style(Image.fromarray(page, "L"), stand_ins, seed=0)).astype(int)
    assert g_image.shape == (2, 8, 3)
    assert [g_image[..., c].tolist() for c in range(3)] == [expected.tolist()] * 3


def test_the_pass_leaves_the_global_rng_as_it_was(tiny_screenstyle):
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    screen_style(manga_page((96, 96)), tiny_screenstyle, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_rng_draws_are_the_documented_five_in_order(tiny_screenstyle):
    """docs/reference/screenstyle.md (verified by running the official code): for a 96x96 page the global RNG
    is drawn for the decoder's dropout masks (1,384,12,12), (1,384,24,24), then the noise
    (1,192,48,48), (1,96,96,96), (1,48,192,192) — nothing else."""
    from torch.utils._python_dispatch import TorchDispatchMode

    draws = []

    class RandomOps(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if any(word in name for word in ("bernoulli", "normal", "randn", "rand", "dropout")):
                draws.append((name, tuple(args[0].shape) if args and hasattr(args[0], "shape") else None))
            return func(*args, **(kwargs or {}))

    with RandomOps():
        screen_style(manga_page((96, 96)), tiny_screenstyle, seed=0)
    shapes = [shape for _, shape in draws]
    assert shapes == [(1, 384, 12, 12), (1, 384, 24, 24), (1, 192, 48, 48), (1, 96, 96, 96), (1, 48, 192, 192)], draws


def test_models_layout_lists_the_screenstyle_networks_as_the_manifest(capsys):
    from engine.cli.main import main

    assert main(["models", "layout", "--json"]) == 0
    layout = json.loads(capsys.readouterr().out)
    for relative in (RGB_TO_SCREEN_FILE, SCREEN_DECODER_FILE):
        assert layout[relative] == MANIFEST[relative]
