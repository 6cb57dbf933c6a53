"""The auto input style: synthetic pages whose kind is known by construction, and statistics by hand."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from engine.preprocess.style_suggest import StyleSuggestion, suggest_style

W, H = 480, 720


def _outlines(draw: ImageDraw.ImageDraw, rng, scale: int, fills=()) -> None:
    """Panels and figures drawn in ink, some shapes filled (fills: gray levels, 0 = solid black)."""
    for x0, y0, x1, y1 in ((10, 10, 470, 350), (10, 360, 235, 710), (245, 360, 470, 710)):
        draw.rectangle([v * scale for v in (x0, y0, x1, y1)], outline=0, width=3 * scale)
    shapes = []
    for _ in range(14):
        x, y = int(rng.integers(30, 400)), int(rng.integers(30, 640))
        w, h = int(rng.integers(25, 70)), int(rng.integers(25, 70))
        shapes.append((x, y, x + w, y + h))
    for i, box in enumerate(shapes):
        fill = fills[i % len(fills)] if fills and i % 2 == 0 else None
        box = [v * scale for v in box]
        if i % 3:
            draw.ellipse(box, outline=0, width=2 * scale, fill=fill)
        else:
            draw.rectangle(box, outline=0, width=2 * scale, fill=fill)
    for _ in range(25):  # hair and folds: strokes
        pts = [(int(v) * scale) for v in rng.integers(20, 460, 2)] + [(int(v) * scale) for v in rng.integers(20, 700, 2)]
        draw.line([(pts[0], pts[2]), (pts[1], pts[3])], fill=0, width=2 * scale)


def line_art(seed: int = 0, fills=()) -> Image.Image:
    """Ink lines on white paper, drawn at 2x and downscaled (anti-aliased edges, as a scan)."""
    rng = np.random.default_rng(seed)
    big = Image.new("L", (2 * W, 2 * H), 255)
    _outlines(ImageDraw.Draw(big), rng, 2, fills)
    return big.resize((W, H), Image.LANCZOS)


def screentoned(seed: int = 0, dark: bool = False) -> Image.Image:
    """The line art with dot screentone (period 6 px) laid into a third of the page: black dots on
    paper, or (dark) paper dots on black."""
    page = np.asarray(line_art(seed)).copy()
    yy, xx = np.mgrid[0:H, 0:W]
    dots = ((yy % 6 - 2.5) ** 2 + (xx % 6 - 2.5) ** 2) <= 2.3 ** 2
    region = np.zeros((H, W), bool)
    region[40:330, 30:450] = True  # the top panel's background
    region[400:690, 260:460] = True
    if dark:
        page[region] = 0
        page[region & ((yy % 6 - 2.5) ** 2 + (xx % 6 - 2.5) ** 2 <= 1.6 ** 2)] = 255
    else:
        page[region & dots] = 0
    return Image.fromarray(page)


def smooth_gray(seed: int = 0) -> Image.Image:
    """A grayscale rendering: gradients and soft shapes, no ink lines, no screentone."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W].astype(float)
    page = 90 + 100 * (yy / H) + 30 * np.sin(xx / 60.0)
    image = Image.fromarray(np.clip(page, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(8):
        x, y = int(rng.integers(0, W - 100)), int(rng.integers(0, H - 100))
        draw.ellipse((x, y, x + 100, y + 120), fill=int(rng.integers(40, 220)))
    return image.filter(ImageFilter.GaussianBlur(6))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("make, style", [
    (lambda s: line_art(s), "sketch"),
    (lambda s: line_art(s, fills=(150, 100, 0)), "sketch-shading"),
    (lambda s: line_art(s, fills=(120,)), "sketch-shading"),
    (screentoned, "screen"),
    (lambda s: screentoned(s, dark=True), "screen"),
    (smooth_gray, "screen"),
], ids=["lines", "lines+gray+black fills", "lines+one gray fill", "screentone", "dark screentone", "smooth gray"])
def test_suggests_the_style_a_page_was_made_as(make, style, seed):
    suggestion = suggest_style(make(seed))
    assert isinstance(suggestion, StyleSuggestion)
    assert suggestion.style == style, suggestion.reason


def test_statistics_by_hand_on_a_block_aligned_page():
    """Left half white paper; right half: flat gray 128 (rows 0-63), a noisy mid-gray band 130..190
    (rows 64-79, continuous tone), paper (rows 80-127), ink at 76, just below the 0.3 x 255 ink line
    (rows 128-255). Shares by hand, out of 256 x 256."""
    page = np.full((256, 256), 255, np.uint8)
    page[:64, 128:] = 128
    page[64:80, 128:] = np.random.default_rng(0).integers(130, 191, (16, 128))
    page[128:, 128:] = 76
    suggestion = suggest_style(Image.fromarray(page))
    n = 256 * 256
    assert suggestion.stats["white"] == pytest.approx((128 * 256 + 48 * 128) / n)
    assert suggestion.stats["black"] == pytest.approx(128 * 128 / n)
    assert suggestion.stats["mid_gray"] == pytest.approx(80 * 128 / n)
    assert suggestion.stats["flat_gray"] == pytest.approx(64 * 128 / n)
    assert suggestion.stats["continuous"] == pytest.approx(16 * 128 / n)
    assert suggestion.stats["solid_black"] == pytest.approx(128 * 128 / n)
    assert suggestion.stats["screentone"] == 0.0
    assert suggestion.style == "sketch-shading"
    assert "flat shading covers 38%" in suggestion.reason, suggestion.reason  # 12.5% + 25%


def test_screentone_share_by_hand_and_the_reason_states_it():
    """A 2x2-dot checker (period 4) over exactly the top 96 of 272 rows, paper elsewhere."""
    page = np.full((272, 256), 255, np.uint8)
    yy, xx = np.mgrid[0:96, 0:256]
    page[:96][((yy // 2) + (xx // 2)) % 2 == 0] = 0
    suggestion = suggest_style(Image.fromarray(page))
    assert suggestion.style == "screen"
    assert suggestion.stats["screentone"] == pytest.approx(96 / 272)  # 0.353 of the page's pixels
    assert "screentone (dot patterns) covers 35%" in suggestion.reason, suggestion.reason


def test_line_art_reason_gives_the_shares_and_color_pages_are_read_as_gray():
    page = line_art(3)
    suggestion = suggest_style(page.convert("RGB"))
    array = np.asarray(page)
    paper_or_ink = ((array >= 200) | (array < 77)).mean()  # the reason's "white or black line pixels"
    assert suggestion.style == "sketch"
    assert f"{paper_or_ink:.0%}" in suggestion.reason and "line art" in suggestion.reason
    assert suggestion.stats == suggest_style(page).stats
    tiny = suggest_style(Image.new("L", (5, 3), 255))  # smaller than a block: still an answer
    assert tiny.style == "sketch"


def test_a_page_of_ink_and_paper_only_reads_0_percent_mid_gray_never_minus_0():
    # 1 - white - black is a float that can land just below 0 (1 - 0.9 - 0.1 < 0): the reason shown to
    # the user must say "0% mid-gray", as a hand count of mid-gray pixels (none) gives
    page = np.full((80, 80), 255, np.uint8)
    page[::10, :] = 0  # eight thin lines: one tenth of the page ink, nine tenths paper
    suggestion = suggest_style(Image.fromarray(page))
    assert suggestion.stats["mid_gray"] == 0.0
    assert ", 0% mid-gray" in suggestion.reason and "-0%" not in suggestion.reason
