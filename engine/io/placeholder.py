"""A labelled gray page that stands in, in an export, for a chapter page that could not be read."""

from __future__ import annotations

import textwrap

from PIL import Image, ImageDraw, ImageFont

from engine.core.errors import printable

PLACEHOLDER_SIZE = (800, 1200)  # when no page of the chapter could be read to take the size from
BACKGROUND, INK = 225, 40  # light gray paper, dark lettering
MAX_NAME_CHARS = 120  # a hostile name longer than this is cut (the notice names the page in full)


def unreadable_reason(name: str, reason: str) -> str:
    """The chapter reader's reason without the page name it starts with ("2.png: image is ...")."""
    return reason.removeprefix(f"{name}: ")


def placeholder_page(name: str, reason: str, size: tuple[int, int] = PLACEHOLDER_SIZE) -> Image.Image:
    """An RGB page of `size`, gray, with the page's name, "could not be read" and the reason,
    centred: readers of the export see which page is missing and why, in its place."""
    width, height = size
    page = Image.new("L", size, BACKGROUND)
    draw = ImageDraw.Draw(page)
    border = max(2, width // 100)
    draw.rectangle((border, border, width - 1 - border, height - 1 - border), outline=INK, width=border)
    large, small = max(10, width // 16), max(8, width // 32)
    shown_name = printable(name)[:MAX_NAME_CHARS]
    blocks = [(shown_name, large), ("could not be read", large), (printable(unreadable_reason(name, reason)), small)]
    lines = []
    for text, font_size in blocks:
        font = ImageFont.load_default(size=font_size)
        columns = max(8, int(width * 0.85 / (font_size * 0.6)))  # about 0.6 em per character
        lines += [(line, font, font_size) for line in textwrap.wrap(text, columns) or [""]]
    gap = large // 2
    total = sum(font_size + gap for _, _, font_size in lines)
    y = max(border * 2, (height - total) // 2)
    for line, font, font_size in lines:
        left, _, right, _ = draw.textbbox((0, 0), line, font=font)
        draw.text(((width - (right - left)) // 2, y), line, fill=INK, font=font)
        y += font_size + gap
    return page.convert("RGB")
