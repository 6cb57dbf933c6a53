"""Line-art preprocessing: the official line extractor (keys, strict safe load, eval BN), its padding
and truncation, the Sketch_Shading rule by hand, and sketch / sketch-shading PreparedPages."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from engine.core.errors import ModelError
from engine.core.geometry import WorkSize
from engine.models.sources import ModelPaths
from engine.models.tiny_lines import write_line_extractor
from engine.preprocess.lines import (
    OFFICIAL_PAD_VALUE,
    OURS_PAD_VALUE,
    LineExtractor,
    extract_lines,
    line_extractor_shapes,
    load_line_extractor,
    shading_composite,
)
from engine.preprocess.page import PagePreparer, frame_page, frame_size

MANIFEST = json.loads((Path(__file__).parent / "data" / "line-extractor-manifest.json").read_text())
SIZE = WorkSize(128, 192)  # frame 192x288


@pytest.fixture(scope="module")
def tiny_le(tmp_path_factory) -> Path:
    """A tiny erika.pth written by the real writer at the official relative path."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    write_line_extractor(root / "colorflow" / "LE" / "erika.pth")
    return root


def drawing(size=(150, 220), seed=0) -> Image.Image:
    """Ink on paper with flat gray and black fills: every branch of the shading rule is hit."""
    rng = np.random.default_rng(seed)
    page = Image.new("L", size, 250)
    draw = ImageDraw.Draw(page)
    for fill in (40, 100, 130, 160, 220):
        x, y = (int(v) for v in rng.integers(0, min(size) - 50, 2))
        draw.rectangle((x, y, x + 45, y + 60), outline=0, width=2, fill=fill)
    return page


# --- the network and its file --------------------------------------------------------------

def test_official_widths_have_exactly_the_manifest_keys_and_shapes():
    assert len(MANIFEST["keys"]) == 707  # reference/SKETCH.md: LE/erika.pth holds 707 tensors
    assert line_extractor_shapes() == MANIFEST["keys"]


def test_tiny_file_is_a_flat_tensor_dict_that_loads_strictly_in_eval_mode(tiny_le):
    path = tiny_le / "colorflow" / "LE" / "erika.pth"
    state = torch.load(path, weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    net = load_line_extractor(path)
    assert not net.training and not any(m.training for m in net.modules())
    loaded = net.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    # the official key scheme, at tiny widths
    assert all(k.startswith(("block", "conv15.")) for k in state)
    assert any(k.startswith("block9.") for k in state) and "conv15.model.2.weight" in state


def test_a_renamed_or_missing_key_fails_naming_it(tiny_le, tmp_path):
    state = torch.load(tiny_le / "colorflow" / "LE" / "erika.pth", weights_only=True)
    renamed = dict(state)
    renamed["block3.model.0.residual.model.2.weights"] = renamed.pop("block3.model.0.residual.model.2.weight")
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(ModelError, match=r"block3\.model\.0\.residual\.model\.2\.weight"):
        load_line_extractor(tmp_path / "renamed.pth")
    missing = dict(state)
    del missing["conv15.model.0.running_var"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(ModelError, match=r"conv15\.model\.0\.running_var"):
        load_line_extractor(tmp_path / "missing.pth")
    with pytest.raises(ModelError, match=r"nothing\.pth.*colorflow models download"):
        load_line_extractor(tmp_path / "nothing.pth")
    deep = dict(state)  # one key claiming a 100,000-block stage: refused before anything is built
    deep["block4.model.99999.conv1.model.2.bias"] = torch.zeros(1)
    torch.save(deep, tmp_path / "deep.pth")
    with pytest.raises(ModelError, match="deep.pth: not a line extractor"):
        load_line_extractor(tmp_path / "deep.pth")


class Payload:
    def __reduce__(self):
        return (print, ("unpickled code ran",))


def test_a_pickle_that_is_not_plain_tensors_is_refused(tmp_path, capsys):
    torch.save({"conv15.model.2.weight": torch.zeros(1), "x": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(ModelError, match="evil.pth"):
        load_line_extractor(tmp_path / "evil.pth")
    assert "unpickled code ran" not in capsys.readouterr().out


def test_eval_batchnorm_uses_running_stats_and_eps_1e_3(tmp_path):
    """Every conv zero except the last: y = w * lrelu((0 - m) / sqrt(v + 1e-3) * g + b) + c, by hand."""
    net = LineExtractor(widths=(2, 3, 4, 5, 6), depths=(1, 1, 1, 1, 1), up_depths=(1, 1, 1, 1),
                        head_width=2, head_depth=1)
    state = {k: torch.zeros_like(v) if v.is_floating_point() else v for k, v in net.state_dict().items()}
    for k in state:
        if k.endswith("running_var") or (k.endswith(".weight") and state[k].ndim == 1):
            state[k] = torch.ones_like(state[k])
    m, v, g, b, w, c = 0.5, 0.001, 2.0, 0.1, 7.0, 100.25
    state["conv15.model.0.running_mean"] = torch.full((2,), m)
    state["conv15.model.0.running_var"] = torch.full((2,), v)
    state["conv15.model.0.weight"] = torch.full((2,), g)
    state["conv15.model.0.bias"] = torch.full((2,), b)
    state["conv15.model.2.weight"] = torch.full((1, 2, 1, 1), w)
    state["conv15.model.2.bias"] = torch.full((1,), c)
    torch.save(state, tmp_path / "erika.pth")
    loaded = load_line_extractor(tmp_path / "erika.pth")
    assert loaded.state_dict()["block2.model.0.conv1.model.2.weight"].shape == (4, 3, 3, 3)  # widths inferred
    normed = (0 - m) / math.sqrt(v + 1e-3) * g + b  # -22.26...
    expected = int(2 * w * (normed if normed > 0 else 0.2 * normed) + c)  # 2 channels; then truncated
    assert 0 < expected < 255
    lines = extract_lines(Image.new("RGB", (32, 48), (90, 90, 90)), loaded, pad_value=OURS_PAD_VALUE)
    assert lines.mode == "L" and lines.size == (32, 48)
    assert set(np.asarray(lines).ravel().tolist()) == {expected}


def test_skip_paths_by_hand_strided_sampling_nearest_upsampling_and_the_encoder_adds():
    """Branches zero, every projected skip copying channel 0, the output unit passing channel 0 (+0.5):
    the official wiring then gives y[r, c] = sum over i = 0..4 of p[2^i floor(r / 2^i), 2^i floor(c / 2^i)]
    (encoder level i samples every 2^i-th pixel; each decoder level upsamples nearest and adds it)."""
    from engine.models.tiny_lines import TINY_LINE_EXTRACTOR

    net = LineExtractor(**TINY_LINE_EXTRACTOR).eval()
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if tensor.is_floating_point():
                tensor.zero_()
            if name.endswith("running_var"):
                tensor.fill_(1.0 - 1e-3)  # BN of the output unit: x / sqrt(1.0)
            if name.endswith(".weight") and tensor.ndim == 1:
                tensor.fill_(1.0)
            if ".shortcut.model.0.weight" in name or name == "conv15.model.2.weight":
                tensor[:, 0] = 1.0
        net.conv15.model[2].bias.fill_(0.5)
    rng = np.random.default_rng(2)
    page = rng.integers(0, 51, (48, 64), dtype=np.uint8)  # sums stay below 255
    out = np.asarray(extract_lines(Image.fromarray(page).convert("RGB"), net, pad_value=OURS_PAD_VALUE))
    expected = np.zeros((48, 64), dtype=int)
    for r in range(48):
        for c in range(64):
            expected[r, c] = sum(int(page[(r >> i) << i, (c >> i) << i]) for i in range(5))
    assert np.array_equal(out.astype(int), expected)


# --- extract_lines: padding, clipping, truncation --------------------------------------------

class Probe(torch.nn.Module):
    """Records its input; returns 1.7 x - 40.3 (some values above 255, some below 0, fractional)."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return 1.7 * x - 40.3


@pytest.mark.parametrize("pad_value", [OFFICIAL_PAD_VALUE, OURS_PAD_VALUE])
def test_extract_lines_pads_bottom_right_clips_and_truncates_by_hand(pad_value):
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (21, 37), dtype=np.uint8)  # rows 21 -> 32, cols 37 -> 48
    frame = Image.fromarray(gray).convert("RGB")
    probe = Probe()
    out = extract_lines(frame, probe, pad_value=pad_value)
    seen = probe.seen[0]
    assert seen.dtype == torch.float32 and tuple(seen.shape) == (1, 1, 32, 48)
    expected_in = np.full((32, 48), pad_value, dtype=np.float32)
    for r in range(21):
        for col in range(37):
            expected_in[r, col] = float(gray[r, col])  # 0..255, not normalised
    assert np.array_equal(seen[0, 0].numpy(), expected_in)
    expected = np.zeros((21, 37), dtype=np.uint8)
    for r in range(21):
        for col in range(37):
            y = float(np.float32(1.7) * np.float32(gray[r, col]) - np.float32(40.3))
            expected[r, col] = int(min(max(y, 0.0), 255.0))  # clip, then truncate toward zero
    assert out.mode == "L" and out.size == (37, 21)
    assert np.array_equal(np.asarray(out), expected)


def test_no_padding_at_any_working_size_and_the_pad_value_matters_only_where_padded(tiny_le):
    """Working sizes are multiples of 32, so the 1.5x frame is a multiple of 48: never padded in a run.
    On a frame that needs padding, ours (white paper) and the official 1.0 differ."""
    for w in range(32, 2049, 32):
        assert all(v % 16 == 0 for v in frame_size(WorkSize(w, 2080 - w)))
    net = load_line_extractor(tiny_le / "colorflow" / "LE" / "erika.pth")
    page = drawing()
    unpadded = page.resize((96, 144)).convert("RGB")
    assert np.array_equal(np.asarray(extract_lines(unpadded, net, pad_value=OFFICIAL_PAD_VALUE)),
                          np.asarray(extract_lines(unpadded, net, pad_value=OURS_PAD_VALUE)))
    padded = page.resize((90, 140)).convert("RGB")  # -> 96 x 144
    official = np.asarray(extract_lines(padded, net, pad_value=OFFICIAL_PAD_VALUE)).astype(int)
    ours = np.asarray(extract_lines(padded, net, pad_value=OURS_PAD_VALUE)).astype(int)
    differ = official != ours
    assert differ.any()
    # the difference starts at the padded edge: the bottom-right corner differs, and it is largest there
    assert differ[-8:, -8:].mean() >= differ.mean()


# --- the Sketch_Shading rule -------------------------------------------------------------------

def test_shading_composite_is_the_official_rule_pixel_for_pixel():
    """reference/SKETCH.md: lines -> 0 where page < 76.5; lines > 125 -> 125 where 76.5 < page < 145."""
    page = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 256, axis=1)  # row r: page value r
    lines = np.repeat(np.arange(256, dtype=np.uint8)[None, :], 256, axis=0)  # column c: line value c
    out = np.asarray(shading_composite(Image.fromarray(page).convert("RGB"), Image.fromarray(lines)))
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8
    for r in range(256):
        for c in range(256):
            if r <= 76:
                want = 0
            elif 77 <= r <= 144 and c >= 126:
                want = 125
            else:
                want = c
            assert (out[r, c] == want).all(), (r, c, out[r, c], want)


# --- PreparedPage for the line-art styles ---------------------------------------------------------

def test_sketch_and_sketch_shading_pages_and_their_cache(tiny_le, tmp_path):
    from engine.pipelines.page import load_preparer

    paths = ModelPaths(tiny_le / "sd15", tiny_le / "colorflow")
    preparer = load_preparer(paths, "cpu", tmp_path / "cache", "sketch")
    net = preparer.line_extractor
    page = drawing()
    framed, frame_fit, _, query_fit = frame_page(page, SIZE, "letterbox")
    lines = extract_lines(framed.convert("L").convert("RGB"), net, pad_value=OURS_PAD_VALUE)
    fw, fh = frame_size(SIZE)

    sketch = preparer.prepare(page, "a" * 64, SIZE, "sketch", "letterbox", 0)
    assert sketch.frame.mode == "RGB" and sketch.frame.size == (fw, fh)
    assert np.array_equal(np.asarray(sketch.frame), np.asarray(lines.convert("RGB")))  # GSRP's guide
    assert np.array_equal(np.asarray(sketch.query),
                          np.asarray(lines.convert("RGB").resize((SIZE.width, SIZE.height), Image.BICUBIC)))
    assert sketch.frame_fit == frame_fit and sketch.query_fit == query_fit
    assert preparer.passes_run == 1

    shading = preparer.prepare(page, "a" * 64, SIZE, "sketch-shading", "letterbox", 0)
    composite = shading_composite(framed.convert("L").convert("RGB"), lines)
    assert np.array_equal(np.asarray(shading.frame), np.asarray(sketch.frame))  # the lines, also here
    assert np.array_equal(np.asarray(shading.query),
                          np.asarray(composite.resize((SIZE.width, SIZE.height), Image.BICUBIC)))
    assert not np.array_equal(np.asarray(shading.query), np.asarray(sketch.query))
    assert shading.key != sketch.key
    assert preparer.passes_run == 1  # one extraction serves both styles

    again = load_preparer(paths, "cpu", tmp_path / "cache", "sketch-shading")  # a new process: disk cache
    cached = again.prepare(page, "a" * 64, SIZE, "sketch-shading", "letterbox", 0)
    assert again.passes_run == 0 and cached.key == shading.key
    assert np.array_equal(np.asarray(cached.query), np.asarray(shading.query))
    # the official procedure's pad value is part of the key (a different frame if a size ever needs padding)
    official = again.prepare(page, "a" * 64, SIZE, "sketch", "letterbox", 0, pad_value=OFFICIAL_PAD_VALUE)
    assert official.key != sketch.key and again.passes_run == 1


def test_official_crop_fit_and_query_downscaled_from_the_frame(tiny_le, tmp_path):
    """colorize_image: query = process_image(input_context at 1.5x, W, H), a bicubic resize of it."""
    net = load_line_extractor(tiny_le / "colorflow" / "LE" / "erika.pth")
    preparer = PagePreparer(None, None, line_extractor=net)
    page = drawing(size=(300, 220))  # landscape into a portrait size: the crop fit cuts it
    prepared = preparer.prepare(page, "b" * 64, SIZE, "sketch", "crop", 0, pad_value=OFFICIAL_PAD_VALUE)
    framed = frame_page(page, SIZE, "crop")[0]
    lines = extract_lines(framed.convert("L").convert("RGB"), net, pad_value=OFFICIAL_PAD_VALUE)
    assert np.array_equal(np.asarray(prepared.frame), np.asarray(lines.convert("RGB")))
    assert np.array_equal(np.asarray(prepared.query),
                          np.asarray(prepared.frame.resize((SIZE.width, SIZE.height), Image.BICUBIC)))


def test_line_art_styles_need_the_line_extractor(tmp_path):
    from engine.pipelines.page import load_preparer

    with pytest.raises(ModelError, match=r"LE[/\\]erika\.pth.*colorflow models download"):
        load_preparer(ModelPaths(tmp_path / "sd15", tmp_path / "colorflow"), "cpu", tmp_path, "sketch")
    with pytest.raises(ModelError, match="line extractor"):
        PagePreparer().prepare(drawing(), "c" * 64, SIZE, "sketch-shading")
    assert load_preparer(ModelPaths(tmp_path / "sd15", tmp_path / "colorflow"), "cpu", tmp_path, "gray").line_extractor is None
