"""Training samples from colored chapters: screenstyle augmentation, retrieval picks, canvases, patch-wise crops.

`prepare_dataset` runs the expensive parts once (the ScreenStyle pass of every page and RAP
retrieval against the other pages of its chapter) and writes DATASET/index.json plus the screened
pages; `TrainingSet` then builds each sample from them in milliseconds: the black-and-white input
(a random interpolation between the page's grayscale and its ScreenStyle output, paper 3.3), the
gray and colored canvases with the stored picks, the mask, and a random patch-wise crop (paper 3.2).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from PIL import Image

from engine.core.errors import InputError
from engine.core.events import Event, Progress, ignore
from engine.io.chapter import ImageSource, PageImage, list_images, load_image
from engine.io.fileio import atomic_save_image, atomic_write_json
from engine.core.geometry import Box, WorkSize, crop_patch, fit_page, fit_reference
from engine.rap.canvas import build_canvas, build_mask

INDEX_FILE = "index.json"
INDEX_VERSION = 1
SCREENS_DIR = "screens"


def screen_mix(gray: Image.Image, blended: Image.Image, ratio: float) -> Image.Image:
    """The augmented black-and-white page: gray + ratio * (S - gray), S the raw ScreenVAE output.

    `blended` is what the ScreenStyle pass returns, G = (S + gray) / 2, so S - gray = 2 (G - gray):
    ratio 0 is the grayscale page, 0.5 is G (as inference sees it), 1 is the ScreenVAE output."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    import numpy as np

    g = np.asarray(gray.convert("L"), dtype=np.float32)
    b = np.asarray(blended.convert("L"), dtype=np.float32)
    mixed = np.clip(np.rint(g + 2.0 * ratio * (b - g)), 0, 255).astype(np.uint8)
    return Image.fromarray(mixed, "L").convert("RGB")


def sample_rng(seed: int, *parts: object) -> random.Random:
    """An independent, reproducible random stream for (seed, parts...)."""
    text = "|".join(str(p) for p in (seed, *parts))
    return random.Random(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big"))


# --- patch-wise crops (paper 3.2) ----------------------------------------------------------


def crop_sizes(canvas: tuple[int, int], page_box: Box, multiple: int) -> tuple[list[int], list[int]]:
    """Allowed crop widths and heights: multiples of `multiple` that hold the page and fit the canvas."""
    page_w, page_h = page_box[2] - page_box[0], page_box[3] - page_box[1]
    widths = list(range(math.ceil(page_w / multiple) * multiple, canvas[0] + 1, multiple))
    heights = list(range(math.ceil(page_h / multiple) * multiple, canvas[1] + 1, multiple))
    if not widths or not heights:
        raise ValueError(f"no crop of a multiple of {multiple} holds the page {page_box} in {canvas}")
    return widths, heights


def draw_crop_size(rng: random.Random, canvas: tuple[int, int], page_box: Box, multiple: int,
                   full: bool = False) -> tuple[int, int]:
    """A crop size drawn uniformly among the allowed ones (the whole canvas with `full`)."""
    widths, heights = crop_sizes(canvas, page_box, multiple)
    if full:
        return widths[-1], heights[-1]
    return rng.choice(widths), rng.choice(heights)


def random_crop_box(rng: random.Random, canvas: tuple[int, int], page_box: Box, crop: tuple[int, int]) -> Box:
    """A crop of size `crop` inside the canvas that contains the whole page box."""
    cw, ch = crop
    x0, y0, x1, y1 = page_box
    lo_x, hi_x = max(0, x1 - cw), min(x0, canvas[0] - cw)
    lo_y, hi_y = max(0, y1 - ch), min(y0, canvas[1] - ch)
    if lo_x > hi_x or lo_y > hi_y:
        raise ValueError(f"crop {cw}x{ch} cannot hold the page {page_box} inside {canvas}")
    left, top = rng.randint(lo_x, hi_x), rng.randint(lo_y, hi_y)
    return left, top, left + cw, top + ch


def scaled_size(crop: tuple[int, int], downsample: float, multiple: int) -> tuple[int, int]:
    """The crop's size after downsampling by `downsample` (<= 1), kept a multiple of `multiple`."""
    return tuple(max(multiple, round(v * downsample / multiple) * multiple) for v in crop)  # type: ignore[return-value]


@dataclass
class Sample:
    """One training example: the (cropped) gray and colored canvases, the mask and the page box."""

    gray: Image.Image  # RGB, the black-and-white page in the centre
    color: Image.Image  # RGB, the same canvas with the colored page
    mask: Image.Image  # L, white on the page area (as build_mask)
    page_box: Box  # where the page sits in these images
    ratio: float  # screenstyle interpolation ratio used for `gray`


def crop_sample(sample: Sample, box: Box, out_size: tuple[int, int] | None = None) -> Sample:
    """Crop all images of a sample alike (and resize them to `out_size`)."""
    crop = [im.crop(box) for im in (sample.gray, sample.color, sample.mask)]
    x0, y0, x1, y1 = sample.page_box
    page = (x0 - box[0], y0 - box[1], x1 - box[0], y1 - box[1])
    size = (box[2] - box[0], box[3] - box[1])
    if out_size is not None and out_size != size:
        sx, sy = out_size[0] / size[0], out_size[1] / size[1]
        crop = [im.resize(out_size, Image.BICUBIC) for im in crop]
        page = (round(page[0] * sx), round(page[1] * sy), round(page[2] * sx), round(page[3] * sy))
    return Sample(crop[0], crop[1], crop[2], page, sample.ratio)


# --- preparation ---------------------------------------------------------------------------


def prepare_dataset(
    chapters: Sequence[str | Path],
    out: Path,
    retriever,
    screen_networks,
    size: WorkSize,
    seed: int = 0,
    emit: Callable[[Event], None] = ignore,
) -> dict:
    """Write DATASET/index.json and DATASET/screens/*.png for colored chapter folders/archives.

    Each page gets the ScreenStyle pass (seeded with seed + its number) and RAP retrieval over the
    other pages of its chapter, with G (the 50/50 blend, as inference sees it) as the query."""
    from engine.preprocess.page import PreparedPage
    from engine.preprocess.screenstyle import screen_style

    out = Path(out)
    groups = []
    for chapter in chapters:
        sources = list_images([chapter])
        if len(sources) < 2:
            raise InputError(f"{chapter}: a chapter needs at least 2 colored pages (the others are its references)")
        groups.append((Path(chapter).name, sources))
    total = sum(len(s) for _, s in groups)
    samples, number = [], 0
    emit(Progress("prepare", 0, total))
    for name, sources in groups:
        for i, source in enumerate(sources):
            colored = load_image(source, "RGB")
            working, fit = fit_page(colored.image, size)
            blended = screen_style(working, screen_networks, seed + number)
            screen_file = f"{SCREENS_DIR}/{number:06d}.png"
            atomic_save_image(blended.convert("L"), out / screen_file)
            key = hashlib.sha256(f"{colored.sha256}|{size}|train|{seed + number}".encode()).hexdigest()[:24]
            prepared = PreparedPage(size, blended, fit, blended, fit, "screen", key)
            references = [s for j, s in enumerate(sources) if j != i]
            result = retriever.retrieve(PageImage(source, colored.image, colored.sha256), references, size=size,
                                        prepared=prepared)
            samples.append({
                "chapter": name,
                "page": source.ref,
                "sha256": colored.sha256,
                "screen": screen_file,
                "picks": [[p.to_json() for p in row] for row in result.picks],
            })
            number += 1
            emit(Progress("prepare", number, total, page=source.name))
    index = {"version": INDEX_VERSION, "work_size": [size.width, size.height], "seed": seed, "samples": samples}
    atomic_write_json(out / INDEX_FILE, index)
    return index


def read_index(dataset: Path) -> dict:
    """DATASET/index.json, checked."""
    import json

    path = Path(dataset) / INDEX_FILE
    if not path.is_file():
        raise InputError(f"{dataset}: no {INDEX_FILE} (write it with `colorflow train prepare`)")
    index = json.loads(path.read_text())
    if index.get("version") != INDEX_VERSION or not index.get("samples"):
        raise InputError(f"{path}: not a version-{INDEX_VERSION} dataset index with samples")
    return index


class TrainingSet:
    """Samples of a prepared dataset; every random choice comes from (seed, epoch, index)."""

    def __init__(self, dataset: Path, seed: int = 0, fitted_items: int = 64) -> None:
        self.root = Path(dataset)
        self.index = read_index(self.root)
        self.size = WorkSize(*self.index["work_size"])
        self.seed = seed
        self._fitted: OrderedDict[str, Image.Image] = OrderedDict()
        self._fitted_items = fitted_items

    def __len__(self) -> int:
        return len(self.index["samples"])

    def _reference(self, ref: str) -> Image.Image:
        if ref in self._fitted:
            self._fitted.move_to_end(ref)
            return self._fitted[ref]
        fitted = fit_reference(load_image(ImageSource.parse(ref), "RGB").image, self.size)
        self._fitted[ref] = fitted
        while len(self._fitted) > self._fitted_items:
            self._fitted.popitem(last=False)
        return fitted

    def full_sample(self, index: int, epoch: int = 0, ratio: float | None = None) -> Sample:
        """The whole canvases of sample `index` with this epoch's screenstyle ratio (or `ratio`)."""
        entry = self.index["samples"][index]
        colored, _ = fit_page(load_image(ImageSource.parse(entry["page"]), "RGB").image, self.size)
        blended = load_image(ImageSource(self.root / entry["screen"]), "L").image
        if ratio is None:
            ratio = sample_rng(self.seed, "ratio", epoch, index).random()
        gray = screen_mix(colored.convert("L"), blended, ratio)
        picks = [[crop_patch(self._reference(p["ref"]), tuple(p["box"]) if p["box"] else None) for p in row]
                 for row in entry["picks"]]
        return Sample(
            build_canvas(gray, picks, self.size),
            build_canvas(colored, picks, self.size),
            build_mask(self.size),
            self.size.query_box_in_canvas,
            ratio,
        )

    def sample(self, index: int, epoch: int, crop: tuple[int, int] | None, downsample: float = 1.0,
               multiple: int = 64) -> Sample:
        """Sample `index`, cropped to `crop` (None: whole canvas) around its page, then downsampled."""
        full = self.full_sample(index, epoch)
        crop = crop or full.gray.size
        box = random_crop_box(sample_rng(self.seed, "crop", epoch, index), full.gray.size, full.page_box, crop)
        out_size = scaled_size(crop, downsample, multiple) if downsample != 1.0 else None
        return crop_sample(full, box, out_size)
