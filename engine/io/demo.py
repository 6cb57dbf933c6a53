"""Generated demo chapters: gray "manga" pages and colored references, deterministic by seed."""

from __future__ import annotations

import random
from pathlib import Path

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


def _scene(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """A colored panel-like picture: a few filled shapes with black outlines."""
    image = Image.new("RGB", size, (250, 248, 240))
    draw = ImageDraw.Draw(image)
    w, h = size
    for _ in range(rng.randint(4, 8)):
        x0, y0 = rng.randint(0, w - 40), rng.randint(0, h - 40)
        x1, y1 = rng.randint(x0 + 30, min(w, x0 + w // 2)), rng.randint(y0 + 30, min(h, y0 + h // 2))
        color = rng.choice(PALETTE)
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=color, outline=(0, 0, 0), width=3)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=color, outline=(0, 0, 0), width=3)
    draw.rectangle((2, 2, w - 3, h - 3), outline=(0, 0, 0), width=4)  # panel border
    return image


def make_demo_chapter(
    folder: Path, pages: int = 4, refs: int = 3, seed: int = 0, size: tuple[int, int] = (360, 512)
) -> tuple[Path, Path]:
    """Write `folder/chapter/NN.png` gray pages and `folder/refs/ref_NN.png` colored pages.

    Each page is the gray version of a reference scene with a small shift, so retrieval has
    something real to find. Returns (chapter folder, references folder).
    """
    rng = random.Random(seed)
    chapter, references = Path(folder) / "chapter", Path(folder) / "refs"
    chapter.mkdir(parents=True, exist_ok=True)
    references.mkdir(parents=True, exist_ok=True)
    scenes = [_scene(rng, size) for _ in range(max(refs, 1))]
    for i, scene in enumerate(scenes[:refs]):
        scene.save(references / f"ref_{i + 1:02d}.png")
    for i in range(pages):
        scene = scenes[i % len(scenes)]
        shifted = Image.new("RGB", size, (250, 248, 240))
        shifted.paste(scene, (rng.randint(-12, 12), rng.randint(-12, 12)))
        shifted.convert("L").save(chapter / f"{i + 1}.png")
    return chapter, references
