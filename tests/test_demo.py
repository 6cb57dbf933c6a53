"""The generated demo chapter: unchanged by default; with tone and line-art inserts it mixes a screentoned
page with an inked page and a flat-shaded one, each of the kind the issue's auto suggestion tells apart."""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

from engine.io.demo import make_demo_chapter

# sha256 over (name, pixels) of the default demo chapter, taken from the code before the line-art pages
# were added: the default chapter (benchmarks, tests, `colorflow demo`) must stay the same pixels.
DEFAULT_DEMO_PIXELS = "8c924834b2f2303a74a1c32ee6c8bd1e10c6339acb07806501ad2264424fdbdd"


def _pixels_hash(*folders) -> str:
    digest = hashlib.sha256()
    for folder in folders:
        for path in sorted(folder.iterdir()):
            digest.update(path.name.encode())
            digest.update(np.asarray(Image.open(path)).tobytes())
    return digest.hexdigest()


def test_the_default_demo_chapter_keeps_its_pixels(tmp_path):
    chapter, refs = make_demo_chapter(tmp_path, pages=4, refs=3)
    assert _pixels_hash(chapter, refs) == DEFAULT_DEMO_PIXELS


def test_a_mixed_demo_chapter_has_toned_pages_and_line_art_inserts(tmp_path):
    from engine.preprocess.style_suggest import suggest_style

    chapter, refs = make_demo_chapter(tmp_path, pages=2, refs=2, tone=True, line_art=2)
    names = sorted(p.name for p in chapter.iterdir())
    assert names == ["1.png", "2.png", "3.png", "4.png"]  # the inserts follow the toned pages
    assert len(list(refs.iterdir())) == 2
    pages = {name: np.asarray(Image.open(chapter / name).convert("L")) for name in names}
    for name in ("1.png", "2.png"):  # screentone: the darker fills are ink dots on paper, no mid-dark gray left
        page = pages[name]
        assert ((page > 60) & (page < 130)).mean() < 0.01
        assert suggest_style(Image.fromarray(page)).style == "screen"
    inked = pages["3.png"]  # ink and paper only: no mid-gray, no tone
    assert set(np.unique(inked)) == {0, 255}
    assert 0.02 < (inked == 0).mean() < 0.3  # lines, not solid black
    assert suggest_style(Image.fromarray(inked)).style == "sketch"
    shaded = pages["4.png"]  # the same kind of lines plus flat gray fills
    levels, counts = np.unique(shaded, return_counts=True)
    assert {0, 255} <= set(levels) and len(levels) <= 4
    mid = [count for level, count in zip(levels, counts) if 0 < level < 255]
    assert mid and sum(mid) / shaded.size > 0.05
    assert suggest_style(Image.fromarray(shaded)).style == "sketch-shading"
    # the inked page draws a reference's scene: its lines lie on that reference's outlines
    outlines = [np.asarray(Image.open(p).convert("L")) < 40 for p in sorted(refs.iterdir())]
    ink = inked == 0
    assert max((ink & o).sum() / ink.sum() for o in outlines) > 0.3
