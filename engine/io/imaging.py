"""Safe image decoding: a format allowlist told by first bytes, size limits, every PIL mode to gray or RGB.

Only ALLOWED_FORMATS are decoded: PNG, JPEG, WebP, BMP, TIFF and GIF (the first frame of an
animation, the first page of a TIFF), each by Pillow's in-process decoder for the format that the
file's own first bytes name, never by Pillow's guessing. Everything else is refused with its real
format named, from those bytes alone: EPS/PostScript (Pillow would run Ghostscript on it), PDF,
SVG, PSD, ICO and any format we do not know. Every image the engine and the GUI open comes here.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from engine.core.errors import PageDecodeError

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".jfif"}
)
# Pillow's format name -> the name users know. Each is decoded in-process by Pillow's own code.
ALLOWED_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WebP", "BMP": "BMP", "TIFF": "TIFF", "GIF": "GIF"}
_ALLOWED_LIST = ", ".join(list(ALLOWED_FORMATS.values())[:-1]) + " or " + list(ALLOWED_FORMATS.values())[-1]
# A 600 dpi double-page spread is ~ 10k x 7k; 80 MP leaves room and stops decompression bombs.
MAX_IMAGE_PIXELS = 80_000_000
# Our check in `open_image` refuses anything above the limit from the header, with our message;
# Pillow's own guard would pre-empt it above 2x its limit with a "decompression bomb" text.
# Every image file ColorFlow opens goes through `open_image` (tests/test_hostile_inputs.py scans
# the source for other openers), so no decoder runs without our check.
Image.MAX_IMAGE_PIXELS = None

# (first bytes, format): allowed formats by their Pillow name, the rest by the name users know.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
    (b"%!PS-Adobe", "PostScript (EPS)"),
    (b"%!", "PostScript"),
    (b"\xc5\xd0\xd3\xc6", "EPS (DOS binary PostScript)"),
    (b"%PDF", "PDF"),
    (b"8BPS", "Photoshop PSD"),
    (b"\x00\x00\x01\x00", "ICO icon"),
    (b"\x00\x00\x02\x00", "CUR cursor"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"\xff\x0a", "JPEG XL"),
    (b"gimp xcf", "GIMP XCF"),
    (b"DDS ", "DDS texture"),
    (b"qoif", "QOI"),
    (b"icns", "Apple ICNS"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "OLE compound (FlashPix or Office)"),
    (b"\xd7\xcd\xc6\x9a", "WMF metafile"),
    (b"\x59\xa6\x6a\x95", "Sun raster"),
    (b"v/1\x01", "OpenEXR"),
    (b"#?RADIANCE", "Radiance HDR"),
    (b"SIMPLE  =", "FITS"),
    (b"\x89HDF", "HDF5"),
    (b"PK\x03\x04", "ZIP archive"),
    (b"Rar!", "RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "7-Zip archive"),
    (b"\x1f\x8b", "gzip"),
    (b"\x7fELF", "ELF program"),
    (b"MZ", "Windows program"),
    (b"#!", "script"),
)
_ISO_MEDIA_BRANDS = {b"avif": "AVIF", b"avis": "AVIF", b"heic": "HEIC", b"heix": "HEIC", b"mif1": "HEIF"}


def sniff_format(data: bytes) -> str | None:
    """The format the first bytes name: a key of ALLOWED_FORMATS, another format's name, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for signature, fmt in _SIGNATURES:
        if data.startswith(signature):
            return fmt
    if data[4:8] == b"ftyp":
        return _ISO_MEDIA_BRANDS.get(data[8:12], "ISO media (MP4/MOV)")
    if data[:4] == b"RIFF":
        return "RIFF (AVI/WAV)"
    text = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return "SVG"
    if text.startswith((b"<?xml", b"<!doctype", b"<html")):
        return "XML/HTML"
    return None


@dataclass(frozen=True)
class DecodeLimits:
    """Caps applied before pixel data is decoded."""

    max_pixels: int = MAX_IMAGE_PIXELS


def open_image(data: bytes, name: str, limits: DecodeLimits = DecodeLimits()) -> Image.Image:
    """Bytes opened (header read, pixels not yet decoded) as an allowed format with its size checked.

    PageDecodeError naming `name` and, for a format we do not decode, that format.
    """
    if not data:
        raise PageDecodeError(f"{name}: the file is empty (0 bytes)")
    fmt = sniff_format(data)
    if fmt is None:
        raise PageDecodeError(f"{name}: not a readable image file (ColorFlow opens {_ALLOWED_LIST})")
    if fmt not in ALLOWED_FORMATS:
        raise PageDecodeError(f"{name}: a {fmt} file, not an image ColorFlow opens; save it as {_ALLOWED_LIST}")
    try:
        image = Image.open(io.BytesIO(data), formats=[fmt])
    except UnidentifiedImageError as exc:  # its text names a memory address: not for users
        raise PageDecodeError(f"{name}: not a readable image: its {ALLOWED_FORMATS[fmt]} header is damaged") from exc
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as exc:
        raise PageDecodeError(f"{name}: {ALLOWED_FORMATS[fmt]} data is damaged or truncated ({exc})") from exc
    width, height = image.size
    if width * height > limits.max_pixels:
        raise PageDecodeError(
            f"{name}: image is {width}x{height} pixels, above the limit of {limits.max_pixels:,} pixels"
        )
    if width < 8 or height < 8:
        raise PageDecodeError(f"{name}: image is only {width}x{height} pixels")
    return image


def decode_image(data: bytes, name: str, limits: DecodeLimits = DecodeLimits()) -> Image.Image:
    """Decode bytes into a fully loaded PIL image with EXIF orientation applied.

    Raises PageDecodeError with a readable reason for anything that is not a usable image.
    """
    image = open_image(data, name, limits)
    try:
        image.load()
        return ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as exc:
        kind = ALLOWED_FORMATS[sniff_format(data)]  # JPEG's factory may report MPO: name it as sniffed
        raise PageDecodeError(f"{name}: {kind} data is damaged or truncated ({exc})") from exc


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """Composite an image with transparency onto white (manga paper), returning RGB."""
    if image.mode == "La":  # premultiplied gray+alpha (TIFF ExtraSamples=1): PIL goes to RGBA via LA only
        image = image.convert("LA")
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _high_bit_depth_to_8bit(image: Image.Image) -> Image.Image:
    """Scale I;16 / I / F images to 8-bit L by their actual value range."""
    array = np.asarray(image, dtype=np.float64)
    peak = float(array.max()) if array.size else 0.0
    if image.mode == "F" and peak <= 1.0:
        top = 1.0  # float images in [0, 1]
    elif image.mode.startswith("I;16") or peak > 255:
        top = 65535.0
    else:
        top = 255.0
    scaled = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def to_rgb(image: Image.Image) -> Image.Image:
    """Normalise any PIL mode (1, L, LA, P, RGB, RGBA, CMYK, I;16, I, F, ...) to RGB."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "La", "RGBa", "PA") or (
        mode == "P" and "transparency" in image.info
    ):
        return _flatten_alpha(image)
    if mode.startswith("I") or mode == "F":
        return _high_bit_depth_to_8bit(image).convert("RGB")
    return image.convert("RGB")


def to_gray(image: Image.Image) -> Image.Image:
    """Normalise any PIL mode to 8-bit gray (L), flattening transparency onto white."""
    if image.mode == "L":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        return _high_bit_depth_to_8bit(image)
    return to_rgb(image).convert("L")


def normalise(image: Image.Image, mode: str, name: str) -> Image.Image:
    """`to_gray` ("L") or `to_rgb` ("RGB"); PageDecodeError naming `name` for a mode PIL cannot convert."""
    try:
        return to_gray(image) if mode == "L" else to_rgb(image)
    except (OSError, ValueError) as exc:
        raise PageDecodeError(f"{name}: {image.mode} images cannot be converted ({exc})") from exc
