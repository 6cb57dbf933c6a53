"""RAP geometry: working sizes, patch boxes, fitting, canvas placement and mask."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.core.geometry import WorkSize, choose_work_size, fit_page, fit_reference, query_boxes, reference_boxes
from engine.rap.canvas import build_canvas, build_mask


@pytest.mark.parametrize(
    "size, expected",
    [
        ((640, 640), [(0, 0, 480, 480), (160, 0, 640, 480), (0, 160, 480, 640), (160, 160, 640, 640)]),
        ((512, 800), [(0, 0, 384, 600), (128, 0, 512, 600), (0, 200, 384, 800), (128, 200, 512, 800)]),
        ((800, 512), [(0, 0, 600, 384), (200, 0, 800, 384), (0, 128, 600, 512), (200, 128, 800, 512)]),
        ((1024, 768), [(0, 0, 768, 576), (256, 0, 1024, 576), (0, 192, 768, 768), (256, 192, 1024, 768)]),
    ],
)
def test_query_boxes_match_official_geometry(size, expected):
    work = WorkSize(*size)
    assert query_boxes(work) == expected
    assert reference_boxes(work) == [None, *expected]
    assert work.canvas == (2 * size[0], 2 * size[1])


@pytest.mark.parametrize(
    "page, expected",
    [((1000, 1500), (512, 800)), ((1200, 1200), (640, 640)), ((3000, 2000), (800, 512)),
     ((850, 1200), (512, 800)), ((1000, 1100), (640, 640)), ((100, 1000), (512, 800))],
)
def test_work_size_is_nearest_official_aspect(page, expected):
    assert choose_work_size(page) == WorkSize(*expected)
    assert choose_work_size(page, WorkSize(1024, 1024)) == WorkSize(1024, 1024)


def test_user_size_must_be_multiple_of_64_or_official():
    assert WorkSize.parse("512x800") == WorkSize(512, 800)
    assert WorkSize.parse("1024x768") == WorkSize(1024, 768)
    for bad in ("500x800", "512", "axb", "64x64", "4096x512"):
        with pytest.raises(ValueError):
            WorkSize.parse(bad)


def test_fit_page_never_crops_and_records_content_box():
    size = WorkSize(512, 800)
    close = Image.new("L", (1000, 1500), 0)  # aspect within 15%: straight resize like official
    fitted, fit = fit_page(close, size)
    assert fitted.size == (512, 800) and fit.content_box == (0, 0, 512, 800)
    wide = Image.new("L", (1200, 800), 0)  # far aspect: letterboxed on white, nothing cut
    fitted, fit = fit_page(wide, WorkSize(512, 800))
    x0, y0, x1, y1 = fit.content_box
    assert (x0, x1) == (0, 512) and y1 - y0 == round(800 * 512 / 1200)
    pixels = np.asarray(fitted)
    assert pixels[:y0].min() == 255 and pixels[y1:].min() == 255  # padding is paper white
    assert pixels[y0 + 2 : y1 - 2].max() == 0  # the whole page is inside
    assert fit.page_size == (1200, 800)


def test_fit_reference_centre_crops_far_aspects():
    image = Image.new("RGB", (300, 100), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 100, 100))  # left third red: cropped away for a square
    fitted = fit_reference(image, WorkSize(640, 640))
    assert fitted.size == (640, 640)
    assert fitted.getpixel((320, 320)) == (0, 0, 255)
    assert fitted.getpixel((2, 320))[0] < 40


# The official placement, written from docs/reference/geometry.md ("Placement"), not from
# the engine's table: (row, col) of the 4x4 canvas grid for rank 1, 2, 3 of each query patch.
OFFICIAL_PLACEMENT = {
    "TL": [(1, 0), (0, 1), (0, 0)],
    "TR": [(1, 3), (0, 2), (0, 3)],
    "BL": [(2, 0), (3, 1), (3, 0)],
    "BR": [(2, 3), (3, 2), (3, 3)],
}


def _distinct_color(query: int, rank: int) -> tuple[int, int, int]:
    return (20 + 60 * query, 40 + 80 * rank, 250 - 50 * query)


@pytest.mark.parametrize("size", [(512, 800), (640, 640), (800, 512), (256, 384)])
def test_canvas_places_every_query_rank_pair_in_the_official_cell(size):
    size = WorkSize(*size)
    w, h = size.width, size.height
    query = Image.new("RGB", (w, h), (128, 128, 128))
    picks = [[Image.new("RGB", (97, 131), _distinct_color(q, r)) for r in range(3)] for q in range(4)]
    canvas = np.asarray(build_canvas(query, picks, size))
    assert canvas.shape == (2 * h, 2 * w, 3)
    cw, ch = w // 2, h // 2  # docs/reference/geometry.md: cell (r, c) has its top-left at (c*W/2, r*H/2)
    for q, name in enumerate(("TL", "TR", "BL", "BR")):
        for rank, (row, col) in enumerate(OFFICIAL_PLACEMENT[name]):
            x, y = col * cw, row * ch
            # pasted at +1 px, size (W/2 - 2) x (H/2 - 2): every pasted pixel is the pick's color
            inside = canvas[y + 1 : y + ch - 1, x + 1 : x + cw - 1]
            assert (inside == _distinct_color(q, rank)).all(), (name, rank + 1, row, col)
            # the 1-px white frame around it
            frame = np.concatenate([canvas[y, x : x + cw], canvas[y + ch - 1, x : x + cw],
                                    canvas[y : y + ch, x], canvas[y : y + ch, x + cw - 1]])
            assert (frame == 255).all(), (name, rank + 1)
    centre = canvas[h // 2 : h // 2 + h, w // 2 : w // 2 + w]
    assert (centre == 128).all()  # the page fills the central 2x2 cells, no frame


def test_missing_picks_leave_cells_white():
    size = WorkSize(640, 640)
    canvas = build_canvas(Image.new("RGB", (640, 640)), [[], [], [], []], size)
    assert canvas.getpixel((100, 100)) == (255, 255, 255)


def test_mask_marks_the_page_area_with_soft_edges():
    size = WorkSize(512, 800)
    mask = np.asarray(build_mask(size))
    assert mask.shape == (1600, 1024)
    assert mask[800, 512] == 255 and mask[10, 10] == 0
    assert mask[420:1180, 276:748].min() == 255  # inner page area
    edge = mask[800, 250:262]
    assert 0 < edge.mean() < 255  # bicubic resize from the 512 asset leaves soft edges
