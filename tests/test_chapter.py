"""Chapter input: natural order, archives, safety limits, every PIL mode, per-page errors."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from engine.io.chapter import ImageSource, list_archive, list_images, load_image, open_chapter
from engine.core.errors import InputError, PageDecodeError, UnsafeArchiveError
from engine.io.imaging import DecodeLimits, decode_image, to_gray, to_rgb


def png_bytes(color=128, size=(40, 60), mode="L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_folder_pages_in_natural_order(tmp_path):
    for name in ("10.png", "2.png", "1.png", "Page 3.jpg", ".hidden.png", "notes.txt"):
        (tmp_path / name).write_bytes(png_bytes() if name.endswith("png") else b"x")
    Image.new("RGB", (40, 60)).save(tmp_path / "Page 3.jpg")
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "11.png").write_bytes(png_bytes())
    names = [s.name for s in list_images([tmp_path])]
    assert names == ["1.png", "2.png", "10.png", "extra/11.png", "Page 3.jpg"]


def test_cbz_with_corrupt_page_text_and_nested_folder(tmp_path):
    archive = tmp_path / "chapter.cbz"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("Chapter 1/10.png", png_bytes(10))
        zf.writestr("Chapter 1/2.png", png_bytes(20))
        zf.writestr("Chapter 1/1.png", png_bytes(30))
        zf.writestr("Chapter 1/3.png", b"\x89PNG\r\n\x1a\n this is not really a png")
        zf.writestr("Chapter 1/readme.txt", "scanned by us")
        zf.writestr("__MACOSX/Chapter 1/._1.png", b"junk")
        zf.writestr("Chapter 1/.DS_Store", b"junk")
    chapter = open_chapter(archive)
    assert chapter.page_names == ["Chapter 1/1.png", "Chapter 1/2.png", "Chapter 1/3.png", "Chapter 1/10.png"]
    assert list(chapter.errors) == [f"{archive}!Chapter 1/3.png"]
    assert "Chapter 1/3.png" in chapter.errors[f"{archive}!Chapter 1/3.png"]
    assert "not a readable image" in chapter.errors[f"{archive}!Chapter 1/3.png"]
    good = [chapter.load_page(i) for i in (0, 1, 3)]
    assert [np.asarray(p.image)[0, 0] for p in good] == [30, 20, 10]
    with pytest.raises(PageDecodeError):
        chapter.load_page(2)


@pytest.mark.parametrize("member", ["../evil.png", "/etc/evil.png", "a/../../evil.png", "C:/evil.png"])
def test_archive_members_escaping_the_folder_are_refused(tmp_path, member):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("1.png", png_bytes())
        zf.writestr(zipfile.ZipInfo(member), png_bytes())
    with pytest.raises(UnsafeArchiveError, match="refused") as caught:
        list_images([archive])
    assert str(caught.value).startswith(f"{archive}: archive member {member!r}")


def test_archive_total_size_is_capped(tmp_path):
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(3):
            zf.writestr(f"{i}.png", png_bytes(size=(400, 400)))
    assert len(list_archive(archive)) == 3
    with pytest.raises(UnsafeArchiveError, match="uncompressed"):
        list_archive(archive, max_total_bytes=1000)


def test_pixel_limit_is_checked_before_decoding():
    data = png_bytes(size=(300, 300))
    with pytest.raises(PageDecodeError, match="above the limit"):
        decode_image(data, "huge.png", DecodeLimits(max_pixels=50_000))
    assert decode_image(data, "ok.png").size == (300, 300)


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        list_images([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="contains no images"):
        list_images([tmp_path / "empty"])
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(InputError, match="not a folder"):
        list_images([tmp_path / "notes.txt"])
    (tmp_path / "broken.cbz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a valid ZIP"):
        list_images([tmp_path / "broken.cbz"])


def _modes() -> dict[str, Image.Image]:
    rgb = Image.new("RGB", (16, 16), (200, 100, 50))
    palette_transparent = Image.new("P", (16, 16), 0)
    palette_transparent.putpalette([0, 0, 0] * 256)
    palette_transparent.info["transparency"] = 0
    i16 = Image.fromarray(np.full((16, 16), 65535, np.uint16))
    return {
        "1": Image.new("1", (16, 16), 1),
        "L": Image.new("L", (16, 16), 255),
        "LA": Image.new("LA", (16, 16), (0, 0)),  # fully transparent ink on white paper
        "La": Image.new("La", (16, 16), (0, 0)),  # premultiplied alpha, as TIFF ExtraSamples=1 opens
        "P": rgb.convert("P"),
        "P-transparent": palette_transparent,
        "RGB": rgb,
        "RGBA": Image.new("RGBA", (16, 16), (0, 0, 0, 0)),
        "CMYK": Image.new("CMYK", (16, 16), (0, 0, 0, 0)),
        "I;16": i16,
    }


@pytest.mark.parametrize("mode", list(_modes()))
def test_every_mode_normalises_to_gray_and_rgb(mode):
    image = _modes()[mode]
    gray, color = to_gray(image), to_rgb(image)
    assert gray.mode == "L" and color.mode == "RGB"
    expected_white = mode in ("1", "L", "LA", "La", "P-transparent", "RGBA", "CMYK", "I;16")
    if expected_white:  # paper stays white, transparency goes onto white
        assert np.asarray(gray).min() == 255
        assert np.asarray(color).min() == 255
    if mode in ("RGB", "P"):
        assert tuple(int(v) for v in np.asarray(color)[0, 0]) == pytest.approx((200, 100, 50), abs=8)


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("L", (40, 20), 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif.tobytes())
    loaded = load_image(ImageSource(path), "L")
    assert loaded.image.size == (20, 40)


def test_content_hash_ignores_location(tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes(5))
    (tmp_path / "b.png").write_bytes(png_bytes(5))
    a, b = (load_image(ImageSource(tmp_path / n), "RGB") for n in ("a.png", "b.png"))
    assert a.sha256 == b.sha256 and a.image.mode == "RGB"
