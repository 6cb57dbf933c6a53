"""PIL -> Qt image conversion (main thread, display-sized images only); files are decoded by the engine, never by Qt."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from PySide6.QtGui import QImage, QPixmap

from engine.core.errors import PageDecodeError
from engine.io.chapter import ImageSource, load_image


def pil_to_qimage(image: Image.Image) -> QImage:
    """A deep-copied QImage of a PIL image (RGB or L)."""
    if image.mode == "L":
        data = image.tobytes()
        qimage = QImage(data, image.width, image.height, image.width, QImage.Format.Format_Grayscale8)
    else:
        rgb = image.convert("RGB")
        data = rgb.tobytes()
        qimage = QImage(data, rgb.width, rgb.height, rgb.width * 3, QImage.Format.Format_RGB888)
    return qimage.copy()  # own the pixels: `data` goes away with this frame


def pil_to_pixmap(image: Image.Image) -> QPixmap:
    return QPixmap.fromImage(pil_to_qimage(image))


def image_pixmap(source: ImageSource | str | Path | None) -> QPixmap | None:
    """A page or a result file decoded for display by the engine (its format allowlist and pixel
    limit, EXIF orientation applied); None when there is none or the engine refuses it."""
    if source is None:
        return None
    try:
        image = load_image(source if isinstance(source, ImageSource) else ImageSource(Path(source)), "RGB")
    except PageDecodeError:
        return None
    return pil_to_pixmap(image.image)
