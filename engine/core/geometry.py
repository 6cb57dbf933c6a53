"""Geometry every stage shares: working sizes, the page's four query patches and a reference's five,
fitting a page or reference to the working size and restoring it (docs/reference/geometry.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

OFFICIAL_SIZES: tuple[tuple[int, int], ...] = ((640, 640), (512, 800), (800, 512))
QUERY_PATCHES = ("TL", "TR", "BL", "BR")
REFERENCE_PATCHES = ("full",) + QUERY_PATCHES
# Official rule: below this relative aspect difference an image is resized straight (distorted).
ASPECT_TOLERANCE = 0.15
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class WorkSize:
    """The working (generation) size W x H of a page; the canvas is 2W x 2H."""

    width: int
    height: int

    def __post_init__(self) -> None:
        # The 2W x 2H canvas latent must divide by 8 for the UNet: W, H multiples of 32.
        if self.width % 32 or self.height % 32 or self.width <= 0 or self.height <= 0:
            raise ValueError(f"working size must be positive multiples of 32, got {self}")

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def canvas(self) -> tuple[int, int]:
        return 2 * self.width, 2 * self.height

    @property
    def query_box_in_canvas(self) -> Box:
        """Where the page sits in the canvas: the central 2x2 cells."""
        w, h = self.width, self.height
        return w // 2, h // 2, w // 2 + w, h // 2 + h

    @classmethod
    def parse(cls, text: str) -> "WorkSize":
        """A user-given size: one of the official sizes or multiples of 64, 256 to 2048."""
        try:
            w, h = (int(v) for v in text.lower().split("x"))
        except ValueError:
            raise ValueError(f"size must look like 512x800, got {text!r}") from None
        if (w, h) not in OFFICIAL_SIZES and (
            w % 64 or h % 64 or not (256 <= w <= 2048 and 256 <= h <= 2048)
        ):
            raise ValueError(
                f"size {w}x{h}: use 640x640, 512x800, 800x512 or multiples of 64 from 256 to 2048"
            )
        return cls(w, h)


def choose_work_size(page_size: tuple[int, int], override: WorkSize | None = None) -> WorkSize:
    """The official size nearest in aspect to the page (log-ratio distance), or the override."""
    if override is not None:
        return override
    aspect = page_size[0] / page_size[1]
    best = min(OFFICIAL_SIZES, key=lambda s: abs(math.log(aspect * s[1] / s[0])))
    return WorkSize(*best)


def query_boxes(size: WorkSize) -> list[Box]:
    """The 4 overlapping query patches (TL, TR, BL, BR), each 3/4 of the width and height."""
    w, h = size.width, size.height
    pw, ph = w // 4 * 3, h // 4 * 3
    offsets = ((0, 0), (w // 4, 0), (0, h // 4), (w // 4, h // 4))
    return [(x, y, x + pw, y + ph) for x, y in offsets]


def reference_boxes(size: WorkSize) -> list[Box | None]:
    """The 5 reference patches: the whole image (None) then TL, TR, BL, BR."""
    return [None, *query_boxes(size)]


def fit_reference(image: Image.Image, size: WorkSize | tuple[int, int]) -> Image.Image:
    """Official aspect-aware fit: resize straight when aspects are close, else centre-crop first."""
    w, h = (size.width, size.height) if isinstance(size, WorkSize) else size
    iw, ih = image.size
    target = w / h
    if abs(iw / ih - target) / target >= ASPECT_TOLERANCE:
        if iw / ih > target:
            cut = int(ih * w / h)
            left = int((iw - cut) / 2)
            image = image.crop((left, 0, left + cut, ih))
        else:
            cut = int(iw * h / w)
            top = int((ih - cut) / 2)
            image = image.crop((0, top, iw, top + cut))
    return image.convert("RGB").resize((w, h), Image.BICUBIC)


@dataclass(frozen=True)
class PageFit:
    """How a page maps into its working size: the page's content box inside W x H."""

    page_size: tuple[int, int]
    content_box: Box  # where the page's pixels sit in the working image (rest is white padding)


def fit_page(image: Image.Image, size: WorkSize | tuple[int, int]) -> tuple[Image.Image, PageFit]:
    """Fit a page to the working size (or any W x H frame) without cropping anything.

    Close aspects are resized straight like the official code (invertible by resizing back);
    otherwise the page is letterboxed on white paper, so no ink is ever cut off. The returned
    PageFit lets later stages restore the page's own size and framing.
    """
    w, h = (size.width, size.height) if isinstance(size, WorkSize) else size
    iw, ih = image.size
    target = w / h
    if abs(iw / ih - target) / target < ASPECT_TOLERANCE:
        return image.resize((w, h), Image.BICUBIC), PageFit((iw, ih), (0, 0, w, h))
    scale = min(w / iw, h / ih)
    cw, ch = max(1, round(iw * scale)), max(1, round(ih * scale))
    left, top = (w - cw) // 2, (h - ch) // 2
    fill = 255 if image.mode == "L" else (255,) * len(image.getbands())
    letterboxed = Image.new(image.mode, (w, h), fill)
    letterboxed.paste(image.resize((cw, ch), Image.BICUBIC), (left, top))
    return letterboxed, PageFit((iw, ih), (left, top, left + cw, top + ch))


def restore_page(image: Image.Image, fit: PageFit) -> Image.Image:
    """Undo `fit_page`: cut the content box out of a working-size result and resize it back
    to the page's own size (bicubic)."""
    return image.crop(fit.content_box).resize(fit.page_size, Image.BICUBIC)


def crop_patch(image: Image.Image, box: Box | None) -> Image.Image:
    """A patch of a working-size image; None means the whole image."""
    return image if box is None else image.crop(box)


def box_on_page(box: Box, content_box: Box, size: tuple[int, int]) -> Box | None:
    """A box of the working frame on the page restored from it at `size` pixels (as `restore_page`
    maps it: the part inside the content box, scaled); None when it misses the page's content."""
    cx0, cy0, cx1, cy1 = content_box
    x0, y0, x1, y1 = max(box[0], cx0), max(box[1], cy0), min(box[2], cx1), min(box[3], cy1)
    if x0 >= x1 or y0 >= y1:
        return None
    sx, sy = size[0] / (cx1 - cx0), size[1] / (cy1 - cy0)
    return (round((x0 - cx0) * sx), round((y0 - cy0) * sy), round((x1 - cx0) * sx), round((y1 - cy0) * sy))
