"""PIL -> Qt image conversion (main thread, display-sized images only)."""

from __future__ import annotations

from PIL import Image
from PySide6.QtGui import QImage, QPixmap


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
