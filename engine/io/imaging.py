"""Safe image decoding with size limits and normalisation of every PIL mode to gray or RGB."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from engine.errors import PageDecodeError

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".jfif"}
)
# A 600 dpi double-page spread is ~ 10k x 7k; 80 MP leaves room and stops decompression bombs.
MAX_IMAGE_PIXELS = 80_000_000
# PIL's own guard raises at 2x its limit and warns at 1x; we check explicitly before decoding.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


@dataclass(frozen=True)
class DecodeLimits:
    """Caps applied before pixel data is decoded."""

    max_pixels: int = MAX_IMAGE_PIXELS


def decode_image(data: bytes, name: str, limits: DecodeLimits = DecodeLimits()) -> Image.Image:
    """Decode bytes into a fully loaded PIL image with EXIF orientation applied.

    Raises PageDecodeError with a readable reason for anything that is not a usable image.
    """
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > limits.max_pixels:
            raise PageDecodeError(
                f"{name}: image is {width}x{height} pixels, above the limit of "
                f"{limits.max_pixels:,} pixels"
            )
        if width < 8 or height < 8:
            raise PageDecodeError(f"{name}: image is only {width}x{height} pixels")
        image.load()
        return ImageOps.exif_transpose(image)
    except PageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise PageDecodeError(f"{name}: refused, image too large ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise PageDecodeError(f"{name}: not a readable image file") from exc
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as exc:
        raise PageDecodeError(f"{name}: image data is damaged or truncated ({exc})") from exc


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
