"""Generated demo chapters: gray or screentoned "manga" pages, line-art inserts and colored references, by seed."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

PALETTE = [(220, 70, 60), (60, 120, 210), (240, 200, 80), (90, 170, 100), (170, 90, 180), (240, 150, 170)]
# The demo's colorize settings: a small working size near the pages' aspect and a few steps, so
# the tiny models color the demo chapter in well under a minute of CPU (the official defaults,
# the nearest official size and 10 steps, take minutes of CPU even with the tiny models).
DEMO_WORK_SIZE = "256x384"
DEMO_STEPS = 4


def try_command(folder: str) -> str:
    """The colorize command `colorflow demo` and the README suggest for a demo folder."""
    return (f"colorflow colorize {folder}/chapter --refs {folder}/refs --out {folder}/out --models tiny "
            f"--size {DEMO_WORK_SIZE} --steps {DEMO_STEPS} --format cbz")


def _shapes(rng: random.Random, size: tuple[int, int]) -> list[tuple[str, tuple[int, int, int, int], tuple]]:
    """A few (kind, box, color) shapes of a panel-like picture, drawn from `rng`."""
    w, h = size
    shapes = []
    for _ in range(rng.randint(4, 8)):
        x0, y0 = rng.randint(0, w - 40), rng.randint(0, h - 40)
        x1, y1 = rng.randint(x0 + 30, min(w, x0 + w // 2)), rng.randint(y0 + 30, min(h, y0 + h // 2))
        color = rng.choice(PALETTE)
        shapes.append(("ellipse" if rng.random() < 0.5 else "rectangle", (x0, y0, x1, y1), color))
    return shapes


def _draw(shapes, size: tuple[int, int], mode: str, paper, fills) -> Image.Image:
    """The shapes with 3-pixel black outlines and a panel border on `paper`; `fills(i, color)` gives
    shape i's fill."""
    image = Image.new(mode, size, paper)
    draw = ImageDraw.Draw(image)
    w, h = size
    for i, (kind, box, color) in enumerate(shapes):
        getattr(draw, kind)(box, fill=fills(i, color), outline=0 if mode == "L" else (0, 0, 0), width=3)
    draw.rectangle((2, 2, w - 3, h - 3), outline=0 if mode == "L" else (0, 0, 0), width=4)  # panel border
    return image


def _scene(rng: random.Random, size: tuple[int, int]) -> tuple[Image.Image, list]:
    """A colored panel-like picture (a few filled shapes with black outlines) and its shapes."""
    shapes = _shapes(rng, size)
    return _draw(shapes, size, "RGB", (250, 248, 240), lambda _i, color: color), shapes


TONE_PERIOD = 6  # pixels between screentone dots (a 60 lpi tone on a 360-pixel-wide page)
TONE_BELOW = 130  # fills darker than this are printed as screentone; lighter ones stay flat gray
SHADES = (120, 170)  # the flat gray fills of a shaded line-art page


def _screentone(page: Image.Image) -> Image.Image:
    """A gray page as printed manga: each darker fill becomes a grid of black dots on white paper, a dot's
    area the fill's darkness times the grid cell's (halftone); light fills stay flat gray (as digital
    tone), ink stays, paper becomes white."""
    gray = np.asarray(page.convert("L")).astype(float)
    yy, xx = np.mgrid[: gray.shape[0], : gray.shape[1]]
    centre = (TONE_PERIOD - 1) / 2
    distance = np.hypot(yy % TONE_PERIOD - centre, xx % TONE_PERIOD - centre)
    radius = TONE_PERIOD * np.sqrt((1 - gray / 255) / np.pi)
    tone = (gray > 60) & (gray < TONE_BELOW)
    out = np.where(gray >= 230, 255, gray)
    out[tone] = np.where(distance[tone] < radius[tone], 0, 255)
    return Image.fromarray(out.astype(np.uint8), "L")


def _line_art(shapes, size: tuple[int, int], shaded: bool) -> Image.Image:
    """An inked page of a scene's shapes: outlines, hatching and speed lines in pure black on white
    (no tone, no anti-aliasing); `shaded` fills the shapes with flat grays and one in solid black."""
    def fills(i: int, _color):
        if not shaded:
            return 255
        return 0 if i == len(shapes) - 1 else SHADES[i % len(SHADES)]

    image = _draw(shapes, size, "L", 255, fills)
    draw = ImageDraw.Draw(image)
    w, h = size
    _kind, (x0, y0, x1, y1), _ = shapes[0]
    dx, dy = (x1 - x0) // 4, (y1 - y0) // 4
    for k in range(1, 6):  # hatching inside the first shape (the middle of its box)
        x = x0 + dx + 2 * dx * k // 6
        draw.line((x, y0 + dy, x + dx // 3, y1 - dy), fill=0, width=2)
    for k in range(9):  # speed lines around the top-left corner, apart from each other
        c, s_ = math.cos(math.radians(8 + 9 * k)), math.sin(math.radians(8 + 9 * k))
        r0, r1 = 0.12 * w, 0.35 * w
        draw.line((10 + r0 * c, 10 + r0 * s_, 10 + r1 * c, 10 + r1 * s_), fill=0, width=2)
    wave = [(x, h - 40 + 10 * math.sin(x / 18)) for x in range(6, w - 6, 3)]  # a wavy ground line
    draw.line(wave, fill=0, width=2)
    return image


def make_demo_chapter(
    folder: Path, pages: int = 4, refs: int = 3, seed: int = 0, size: tuple[int, int] = (360, 512),
    tone: bool = False, line_art: int = 0,
) -> tuple[Path, Path]:
    """Write `folder/chapter/NN.png` gray pages and `folder/refs/ref_NN.png` colored pages.

    Each page is the gray version of a reference scene with a small shift, so retrieval has
    something real to find; `tone` prints the gray fills as screentone dots. `line_art` inserts
    follow: inked pages of the next scenes, alternately lines only (a sketch page) and lines with
    flat shading (a sketch-shading page). Returns (chapter folder, references folder).
    """
    rng = random.Random(seed)
    chapter, references = Path(folder) / "chapter", Path(folder) / "refs"
    chapter.mkdir(parents=True, exist_ok=True)
    references.mkdir(parents=True, exist_ok=True)
    scenes = [_scene(rng, size) for _ in range(max(refs, 1))]
    for i, (scene, _shapes_) in enumerate(scenes[:refs]):
        scene.save(references / f"ref_{i + 1:02d}.png")
    for i in range(pages):
        scene = scenes[i % len(scenes)][0]
        shifted = Image.new("RGB", size, (250, 248, 240))
        shifted.paste(scene, (rng.randint(-12, 12), rng.randint(-12, 12)))
        (_screentone(shifted) if tone else shifted.convert("L")).save(chapter / f"{i + 1}.png")
    for k in range(line_art):
        shapes = scenes[(pages + k) % len(scenes)][1]
        _line_art(shapes, size, shaded=k % 2 == 1).save(chapter / f"{pages + k + 1}.png")
    return chapter, references
