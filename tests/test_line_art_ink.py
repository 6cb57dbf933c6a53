"""Keep-ink on line-art pages: the page's ink multiplied over the colors, checked by hand."""

from __future__ import annotations

import numpy as np
from PIL import Image

from engine.core.geometry import PageFit


def test_multiply_ink_is_color_times_page_over_255_by_hand():
    from engine.gsrp.upscale import multiply_ink

    colored = Image.new("RGB", (3, 1), (200, 50, 51))
    page = Image.fromarray(np.array([[0, 255, 128]], dtype=np.uint8), "L")
    out = np.asarray(multiply_ink(colored, page))
    # by hand: black line -> black; white paper -> the color; 128 gray -> round(c * 128 / 255)
    assert out[0, 0].tolist() == [0, 0, 0]
    assert out[0, 1].tolist() == [200, 50, 51]
    assert out[0, 2].tolist() == [100, 25, 26]  # 100.39, 25.10, 25.60


def test_a_line_art_page_keeps_the_model_color_on_its_paper_and_its_lines_black():
    """Lightness from the page (the screen/gray keep-ink) leaves white paper white, so a line-art
    page would come out without color; on line-art pages finish_page multiplies the ink instead."""
    from engine.core.options import OutputSize
    from engine.pipelines.page import finish_page

    page = np.full((8, 8), 255, dtype=np.uint8)
    page[:, 3] = 0  # one inked line
    page_image = Image.fromarray(page, "L")
    frame = Image.new("RGB", (8, 8), (230, 120, 90))  # the model's color everywhere
    fit = PageFit((8, 8), (0, 0, 8, 8))
    line_art = np.asarray(finish_page(frame, page_image, fit, output_size=OutputSize.PAGE, keep_ink=True,
                                      line_art=True))
    assert line_art[:, 3].max() == 0  # the line stays black
    assert (line_art[:, 0] == [230, 120, 90]).all()  # the paper takes the color
    toned = np.asarray(finish_page(frame, page_image, fit, output_size=OutputSize.PAGE, keep_ink=True))
    assert (toned[:, 0] == 255).all()  # the screen/gray keep-ink: white paper stays white (why line art differs)
