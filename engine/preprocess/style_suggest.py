"""The auto input style: a page's style suggested from simple pixel statistics, with the reason in words.

The page (as gray) is read in 8 x 8 blocks. Paper is >= 200, ink < 77 (the official Sketch_Shading
black threshold, 0.3 x 255), mid-gray between. Screentone is found per 32 x 32 block: several dots
(small ink or paper specks of similar size) in it and in most of its neighbour blocks (lines, even
crossing ones, are large connected strokes, never dots). A flat gray fill is a mid-gray block with
little spread at one of the page's few dominant gray levels; solid black a block of ink only; other
mid-gray blocks are continuous gray tone. Screentone or continuous tone -> screen; flat fills or
solid black with the lines -> sketch-shading; paper and lines only -> sketch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

BLOCK = 8
PAPER, INK = 200, 77  # >= PAPER: paper; < INK: ink (0.3 x 255 rounded up, as Sketch_Shading's black)
TONE_BLOCK = 32  # screentone is judged per 32 x 32 block (several dots at 50-85 lpi, 300-600 dpi)
DOT_AREA = 64  # a dot: an ink (or paper) component of at most this many pixels
TONE_DOTS = 4  # dots in a block for it to be screentone...
DOT_SPREAD = 0.5  # ...of similar sizes (std of their areas at most this share of the mean)
TONE_NEIGHBOURS = 3  # of the 4 neighbour blocks, at least this many are screentone too
FLAT_SPREAD = 4.0  # std of a flat fill's block
LEVEL_WINDOW = 4  # a fill's blocks lie within this many levels of one of the dominant levels
DOMINANT_LEVELS = 3
# Shares of the page that decide
TONE_AT = 0.04
CONTINUOUS_AT = 0.08
SHADING_AT = 0.005


@dataclass(frozen=True)
class StyleSuggestion:
    """A suggested input style for one page and why (never applied without the user seeing it)."""

    style: str
    reason: str
    stats: dict[str, float] = field(default_factory=dict)


def _blocks(array: np.ndarray) -> np.ndarray:
    """(rows, cols, BLOCK * BLOCK) view of the whole blocks of a 2-D array."""
    rows, cols = array.shape[0] // BLOCK, array.shape[1] // BLOCK
    cut = array[: rows * BLOCK, : cols * BLOCK]
    return cut.reshape(rows, BLOCK, cols, BLOCK).swapaxes(1, 2).reshape(rows, cols, BLOCK * BLOCK)


def _screentone(gray: np.ndarray) -> np.ndarray:
    """Per TONE_BLOCK block: at least TONE_DOTS dots (small ink or paper specks of similar size, 4-connected),
    kept where at least TONE_NEIGHBOURS of its 4 neighbour blocks have them too (outside the page counts)."""
    from scipy import ndimage

    rows, cols = gray.shape[0] // TONE_BLOCK, gray.shape[1] // TONE_BLOCK
    count = np.zeros(rows * cols)
    area_sum = np.zeros(rows * cols)
    area_sq = np.zeros(rows * cols)
    if rows == 0 or cols == 0:
        return np.zeros((rows, cols), bool)
    for mask in (gray < 128, gray >= 128):  # dots of ink, and paper dots in dark tones
        labels, n = ndimage.label(mask)
        if n == 0:
            continue
        areas = np.bincount(labels.ravel())[1:]
        small = np.flatnonzero(areas <= DOT_AREA) + 1
        if small.size == 0:
            continue
        centres = np.asarray(ndimage.center_of_mass(mask, labels, small))
        r, c = (centres[:, 0] // TONE_BLOCK).astype(int), (centres[:, 1] // TONE_BLOCK).astype(int)
        inside = (r < rows) & (c < cols)
        index = r[inside] * cols + c[inside]
        a = areas[small - 1][inside].astype(float)
        count += np.bincount(index, minlength=rows * cols)
        area_sum += np.bincount(index, weights=a, minlength=rows * cols)
        area_sq += np.bincount(index, weights=a * a, minlength=rows * cols)
    mean = area_sum / np.maximum(count, 1)
    spread = np.sqrt(np.maximum(area_sq / np.maximum(count, 1) - mean**2, 0))
    dotted = ((count >= TONE_DOTS) & (spread <= DOT_SPREAD * mean)).reshape(rows, cols)
    padded = np.pad(dotted, 1, constant_values=True)
    neighbours = padded[:-2, 1:-1].astype(int) + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]
    return dotted & (neighbours >= TONE_NEIGHBOURS)


def _dominant_levels(means: np.ndarray) -> np.ndarray:
    """Whether each flat block's mean lies near one of the most common flat-block levels."""
    if means.size == 0:
        return np.zeros(0, bool)
    levels = np.rint(means).astype(int)
    counts = np.bincount(levels, minlength=256)
    windowed = np.convolve(counts, np.ones(2 * LEVEL_WINDOW + 1, int), mode="same")
    near = np.zeros(256, bool)
    for _ in range(DOMINANT_LEVELS):
        peak = int(np.argmax(windowed))
        if windowed[peak] == 0:
            break
        span = slice(max(peak - LEVEL_WINDOW, 0), peak + LEVEL_WINDOW + 1)
        near[span] = True
        windowed[max(peak - 2 * LEVEL_WINDOW, 0): peak + 2 * LEVEL_WINDOW + 1] = 0
    return near[levels]


def page_statistics(page: Image.Image) -> dict[str, float]:
    """Shares of the page (0..1): pixels white / black / mid_gray; blocks screentone / flat_gray /
    solid_black / continuous."""
    gray = np.asarray(page.convert("L"))
    stats = {"white": float((gray >= PAPER).mean()), "black": float((gray < INK).mean())}
    stats["mid_gray"] = float(((gray >= INK) & (gray < PAPER)).mean())  # counted: 1 - white - black can be -0.0
    blocks = _blocks(gray)
    total = blocks.shape[0] * blocks.shape[1]
    if total == 0:
        return {**stats, "screentone": 0.0, "flat_gray": 0.0, "solid_black": 0.0, "continuous": 0.0}
    low, high = blocks.min(-1), blocks.max(-1)
    tone = _screentone(gray)
    scale = TONE_BLOCK // BLOCK  # the screentone blocks on the 8 x 8 grid (the last partial ones: none)
    toned = np.zeros(low.shape, bool)
    spread = np.repeat(np.repeat(tone, scale, 0), scale, 1)
    toned[: spread.shape[0], : spread.shape[1]] = spread
    mid = (low >= INK) & (high < PAPER) & ~toned
    flat = mid & (blocks.std(-1) <= FLAT_SPREAD)
    fill = np.zeros(flat.shape, bool)
    fill[flat] = _dominant_levels(blocks[flat].mean(-1))
    stats["screentone"] = float(tone.sum() * TONE_BLOCK**2 / gray.size)
    stats["flat_gray"] = float(fill.sum() / total)
    stats["solid_black"] = float(((high < INK) & ~toned).sum() / total)
    stats["continuous"] = float((mid & ~fill).sum() / total)
    return stats


def suggest_style(page: Image.Image) -> StyleSuggestion:
    """screen, sketch or sketch-shading for a page, from page_statistics, with the reason."""
    s = page_statistics(page)
    lines = s["white"] + s["black"]
    if s["screentone"] >= TONE_AT:
        return StyleSuggestion("screen", f"screentone (dot patterns) covers {s['screentone']:.0%} of the page: "
                                         "a toned page", s)
    if s["continuous"] >= CONTINUOUS_AT:
        return StyleSuggestion("screen", f"{s['continuous']:.0%} of the page is continuous gray tone "
                                         f"({s['mid_gray']:.0%} of pixels mid-gray): a gray page", s)
    shading = s["flat_gray"] + s["solid_black"]
    if shading >= SHADING_AT:
        return StyleSuggestion(
            "sketch-shading", f"{lines:.0%} of pixels are white or black line pixels; flat shading covers "
            f"{shading:.0%} of the page ({s['flat_gray']:.0%} flat gray fills, {s['solid_black']:.0%} solid black): "
            "line art with shading", s)
    return StyleSuggestion("sketch", f"{lines:.0%} of pixels are white or black line pixels, "
                                     f"{s['mid_gray']:.0%} mid-gray: line art", s)
