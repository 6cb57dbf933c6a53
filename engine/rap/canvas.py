"""RAP canvas: the page in the centre and the picked reference patches around it, and the mask
(docs/reference/geometry.md, official GrayImage mode)."""

from __future__ import annotations

from typing import Sequence

from PIL import Image

from engine.core.geometry import QUERY_PATCHES, Box, WorkSize

# (row, col) of the canvas cell for rank 1, 2, 3 of each query patch.
PLACEMENT = {
    "TL": ((1, 0), (0, 1), (0, 0)),
    "TR": ((1, 3), (0, 2), (0, 3)),
    "BL": ((2, 0), (3, 1), (3, 0)),
    "BR": ((2, 3), (3, 2), (3, 3)),
}
TOP_K = 3


def cell_box(size: WorkSize, row: int, col: int) -> Box:
    """The pasted area of a reference cell: the cell minus its 1-px white frame."""
    cw, ch = size.width // 2, size.height // 2
    x, y = col * cw + 1, row * ch + 1
    return x, y, x + cw - 2, y + ch - 2


def build_canvas(
    query: Image.Image, picks: Sequence[Sequence[Image.Image]], size: WorkSize
) -> Image.Image:
    """Stitch the page (centre 2x2 cells) and up to 3 reference patches per query patch.

    `picks[i]` are the chosen patches for query patch i (TL, TR, BL, BR) in rank order; a
    missing pick leaves its cell white.
    """
    if query.size != (size.width, size.height):
        raise ValueError(f"query must be {size}, got {query.size[0]}x{query.size[1]}")
    if len(picks) != 4:
        raise ValueError(f"need picks for 4 query patches, got {len(picks)}")
    canvas = Image.new("RGB", size.canvas, (255, 255, 255))
    canvas.paste(query.convert("RGB"), size.query_box_in_canvas[:2])
    for name, patches in zip(QUERY_PATCHES, picks):
        for (row, col), patch in zip(PLACEMENT[name], patches[:TOP_K]):
            x0, y0, x1, y1 = cell_box(size, row, col)
            canvas.paste(patch.convert("RGB").resize((x1 - x0, y1 - y0), Image.BICUBIC), (x0, y0))
    return canvas


def build_mask(size: WorkSize) -> Image.Image:
    """The official mask (white = page area to color), with its soft bicubic edges.

    Rebuilt from the official 512x512 asset's definition: black, white square [128, 384).
    """
    base = Image.new("RGB", (512, 512), (0, 0, 0))
    base.paste((255, 255, 255), (128, 128, 384, 384))
    return base.resize(size.canvas, Image.BICUBIC).convert("L")
