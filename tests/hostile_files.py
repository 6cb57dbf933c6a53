"""A generator of hostile image files: formats that hand work to other programs, bombs, damaged and disguised files.

Each file carries an image extension, as a file sent by someone else would. The PostScript ones hold
a payload that writes `marker` if any program (Ghostscript) ever runs them. Future formats and
readers must pass tests/test_hostile_inputs.py over every file made here: add a format as one
`HostileFile` line in `HOSTILE_FILES`.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image


@dataclass(frozen=True)
class HostileFile:
    """One hostile file: how to make it, and the words a refusal of it must contain."""

    key: str  # test id
    filename: str  # always an image extension
    make: Callable[[Path], bytes]  # marker path -> file bytes
    expect: tuple[str, ...] | None  # words of the one-line refusal (its real format); None: decodes as an image
    pillow_format: str | None = None  # the Pillow plugin that would take this file if nothing stopped it


def _postscript_path(path: Path) -> str:
    return "(" + str(path).replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"


def postscript_payload(marker: Path) -> bytes:
    """PostScript that creates `marker` when run (Ghostscript's -dSAFER still lets it write under /tmp)."""
    return f"{_postscript_path(marker)} (w) file dup (a program ran) writestring closefile\n".encode()


def eps(marker: Path) -> bytes:
    return (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 96\n" + postscript_payload(marker)
            + b"0 0 moveto 64 96 lineto stroke\nshowpage\n%%EOF\n")


def plain_postscript(marker: Path) -> bytes:
    """A PostScript document (not EPSF), as a printer driver writes it."""
    return b"%!PS-Adobe-3.0\n%%BoundingBox: 0 0 64 96\n" + postscript_payload(marker) + b"showpage\n"


def dos_eps(marker: Path) -> bytes:
    """Binary EPS with the DOS header (C5 D0 D3 C6, then the PostScript section's offset and length)."""
    body = eps(marker)
    header_size = 30
    return struct.pack("<4sIIIIIIH", b"\xc5\xd0\xd3\xc6", header_size, len(body), 0, 0, 0, 0, 0xFFFF) + body


def pdf(marker: Path) -> bytes:
    return (b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
            b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")


def svg(marker: Path) -> bytes:
    return (b'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="96">'
            b'<rect width="64" height="96" fill="red"/></svg>\n')


def psd(marker: Path) -> bytes:
    """A complete 8x8 RGB Photoshop file (raw channel data), one Pillow's PSD plugin would decode."""
    width = height = 8
    header = struct.pack(">4sH6xHIIHH", b"8BPS", 1, 3, height, width, 8, 3)
    sections = struct.pack(">III", 0, 0, 0)  # color mode data, image resources, layers: all empty
    return header + sections + struct.pack(">H", 0) + bytes([200]) * (3 * width * height)


def ico(marker: Path) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 20, 20)).save(buffer, format="ICO", sizes=[(32, 32)])
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(marker: Path) -> bytes:
    """Only a header: IHDR says 13000x13000 (169 million pixels), the pixel data is a few bytes."""
    ihdr = struct.pack(">IIBBBBB", 13000, 13000, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _png_chunk(b"IEND", b""))


def _noise_page(fmt: str) -> bytes:
    """A 64x96 page of incompressible noise, so that cutting the file cuts its pixel data."""
    noise = Image.frombytes("L", (64, 96), bytes((i * 7919 + (i >> 3) * 104729) % 251 for i in range(64 * 96)))
    buffer = io.BytesIO()
    noise.save(buffer, format=fmt)
    return buffer.getvalue()


def truncated_png(marker: Path) -> bytes:
    data = _noise_page("PNG")
    return data[: len(data) // 2]


def truncated_jpeg(marker: Path) -> bytes:
    data = _noise_page("JPEG")
    return data[: len(data) // 2]


def postscript_then_png(marker: Path) -> bytes:
    """A polyglot: a PostScript program whose tail is a whole PNG (a viewer scanning for PNG shows a page)."""
    return eps(marker) + _noise_page("PNG")


def png_with_postscript_tail(marker: Path) -> bytes:
    """A real PNG followed by an EPS payload: it is a PNG, and must only ever be decoded as one."""
    return _noise_page("PNG") + eps(marker)


HOSTILE_FILES = [
    HostileFile("eps", "1.png", eps, ("PostScript",), "EPS"),
    HostileFile("dos-binary-eps", "2.jpg", dos_eps, ("EPS",), "EPS"),
    HostileFile("plain-postscript", "3.webp", plain_postscript, ("PostScript",), "EPS"),
    HostileFile("pdf", "4.tif", pdf, ("PDF",)),
    HostileFile("svg", "5.png", svg, ("SVG",)),
    HostileFile("psd", "6.png", psd, ("Photoshop",), "PSD"),
    HostileFile("ico", "7.png", ico, ("ICO",), "ICO"),
    HostileFile("pixel-bomb-header", "8.png", png_bomb, ("13000x13000", "80,000,000")),
    HostileFile("truncated-png", "9.png", truncated_png, ("PNG", "truncated")),
    HostileFile("truncated-jpeg", "10.jpg", truncated_jpeg, ("JPEG", "truncated")),
    HostileFile("polyglot-postscript-then-png", "11.png", postscript_then_png, ("PostScript",), "EPS"),
    HostileFile("png-with-postscript-tail", "12.png", png_with_postscript_tail, None),
    HostileFile("zero-bytes", "13.png", lambda marker: b"", ("empty",)),
    HostileFile("text", "14.gif", lambda marker: b"just some notes, not a page\n", ("not a readable image",)),
]
