"""PIL -> Qt image conversion (main thread, display-sized images only)."""

from __future__ import annotations

from PIL import Image
from PySide6.QtCore import QBuffer, QByteArray, QIODevice
from PySide6.QtGui import QImage, QImageReader, QPixmap


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


def pixmap_with_exif(data: bytes) -> QPixmap | None:
    """Decode image bytes for display with EXIF orientation applied (as the engine does)."""
    buffer = QBuffer()
    buffer.setData(QByteArray(data))
    buffer.open(QIODevice.OpenModeFlag.ReadOnly)
    reader = QImageReader(buffer)
    reader.setAutoTransform(True)
    image = reader.read()
    return QPixmap.fromImage(image) if not image.isNull() else None
