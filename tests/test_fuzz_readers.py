"""Fuzzing the readers: random and damaged images and archives give our own errors only, never a hang."""

from __future__ import annotations

import io
import os
import struct
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from engine.core.errors import InputError, PageDecodeError, UnsafeArchiveError
from engine.io.chapter import ImageSource, list_archive, load_image, open_chapter, probe
from engine.io.imaging import IMAGE_EXTENSIONS

# COLORFLOW_FUZZ_EXAMPLES=5000 fuzzes longer with fresh random examples; CI runs the fixed few.
_DEEP = int(os.environ.get("COLORFLOW_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    derandomize=not _DEEP,  # the same examples on every run and every machine
    database=None,
    max_examples=_DEEP or 150,
    deadline=timedelta(seconds=2),  # one example taking longer fails the test: no hangs
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _la_tiff() -> bytes:
    """Gray + premultiplied alpha (TIFF ExtraSamples=1), which PIL opens in mode "La"."""
    data = bytearray(_encode(Image.new("LA", (16, 16), (10, 128)), "TIFF"))
    at = data.find(struct.pack("<HHI", 338, 3, 1))
    struct.pack_into("<H", data, at + 8, 1)
    return bytes(data)


def _seeds() -> dict[str, bytes]:
    gray = Image.linear_gradient("L").resize((24, 32))
    rgb = Image.merge("RGB", (gray, gray.rotate(90), gray.transpose(Image.Transpose.FLIP_TOP_BOTTOM)))
    exif = Image.Exif()
    exif[0x0112] = 6
    return {
        "png-L": _encode(gray, "PNG"),
        "png-RGBA": _encode(rgb.convert("RGBA"), "PNG"),
        "png-P": _encode(rgb.convert("P"), "PNG"),
        "png-I16": _encode(Image.new("I;16", (16, 16), 300), "PNG"),
        "jpeg-exif": _encode(rgb, "JPEG", exif=exif.tobytes()),
        "jpeg-progressive-L": _encode(gray, "JPEG", progressive=True),
        "jpeg-CMYK": _encode(rgb.convert("CMYK"), "JPEG"),
        "webp-lossy": _encode(rgb, "WEBP", quality=50),
        "webp-lossless": _encode(rgb.convert("RGBA"), "WEBP", lossless=True),
        "gif": _encode(rgb.convert("P"), "GIF"),
        "bmp": _encode(rgb, "BMP"),
        "tiff-lzw": _encode(rgb, "TIFF", compression="tiff_lzw"),
        "tiff-La": _la_tiff(),
    }


SEEDS = _seeds()
NAMES = ["page.png", "page.jpg", "page.jpeg", "page.webp", "page.tif", "page.gif", "page.bmp"]


@st.composite
def damaged_images(draw) -> bytes:
    """A valid seed image with bytes overwritten, inserted or cut off: reaches deep into decoders."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, len(data) - 1))
        if draw(st.booleans()):
            data[at] = draw(st.integers(0, 255))
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    cut = draw(st.integers(1, len(data)))
    return bytes(data[: cut if draw(st.booleans()) else len(data)])


magic_prefixed = st.builds(
    lambda magic, rest: magic + rest,
    st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"GIF89a", b"BM",
                     b"II*\x00", b"MM\x00*"]),
    st.binary(max_size=512),
)
image_bytes = st.one_of(st.binary(max_size=512), magic_prefixed, damaged_images())


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _assert_usable(page, mode: str) -> None:
    assert page.image.mode == mode and min(page.image.size) >= 8
    assert len(page.sha256) == 64


@pytest.mark.filterwarnings("ignore::UserWarning:PIL.*")  # damaged files warn (corrupt EXIF, ...)
@settings(FUZZ, max_examples=_DEEP or 300)  # ~5 ms an example: affordable
@given(data=image_bytes, name=st.sampled_from(NAMES))
@example(data=SEEDS["tiff-La"], name="page.tif")  # found by this test: "La" escaped as ValueError
def test_random_image_files_decode_or_fail_with_page_decode_error(scratch, data, name):
    path = scratch / "pages" / name
    path.parent.mkdir(exist_ok=True)
    for other in path.parent.iterdir():
        other.unlink()
    path.write_bytes(data)
    source = ImageSource(path)
    outcomes = []
    for mode in ("L", "RGB"):
        try:
            _assert_usable(load_image(source, mode), mode)
            outcomes.append(None)
        except PageDecodeError as exc:
            assert str(exc).startswith(f"{name}: ")
            outcomes.append(str(exc))
    assert probe(source) == outcomes[0]
    chapter = open_chapter(path.parent)
    assert chapter.errors == ({} if outcomes[0] is None else {source.ref: outcomes[0]})


def test_every_seed_is_a_usable_image(scratch):
    for key, data in SEEDS.items():
        path = scratch / f"seed-{key}.img.png"
        path.write_bytes(data)
        _assert_usable(load_image(ImageSource(path), "RGB"), "RGB")


# --- archives ---------------------------------------------------------------------------------

PART = st.one_of(
    st.sampled_from(["..", ".", "", "Chapter 1", "__MACOSX", ".hidden", "._1.png", "C:", "a..b", "…", "页"]),
    st.text(st.characters(blacklist_characters="\x00/\\", blacklist_categories=("Cs",)), max_size=8),
)
EXTENSION = st.sampled_from([".png", ".JPG", ".webp", ".txt", "", ".png.", ".xml", "/"])


@st.composite
def member_names(draw) -> str:
    parts = draw(st.lists(PART, min_size=1, max_size=4))
    name = draw(st.sampled_from(["/", "\\"])).join(parts) + draw(EXTENSION)
    return draw(st.sampled_from(["", "", "", "/", "\\", "C:/", "d:\\"])) + name


def _unsafe(name: str) -> bool:
    """The archive rules, stated independently: absolute or drive paths and any '..' part escape."""
    return name[:1] in ("/", "\\") or name[1:2] == ":" or ".." in name.replace("\\", "/").split("/")


def _listed(name: str) -> bool:
    """A page: not a folder, no hidden part (dot files, __MACOSX), an image extension."""
    if name.endswith("/"):
        return False
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return False
    return os.path.splitext(parts[-1])[1].lower() in IMAGE_EXTENSIONS


VALID_PAGE = SEEDS["png-L"]
contents = st.one_of(st.just(VALID_PAGE), st.binary(max_size=64), damaged_images())


def _zip(members: list[tuple[str, bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data, compression in members:
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return buffer.getvalue()


archives = st.lists(
    st.tuples(member_names(), contents, st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])),
    min_size=1, max_size=6, unique_by=lambda m: m[0],
)


@FUZZ
@given(members=archives)
@example(members=[("", VALID_PAGE, zipfile.ZIP_STORED), ("1.png", VALID_PAGE, zipfile.ZIP_STORED)])  # found:
# an empty member name made ZipInfo.is_dir() raise IndexError
@example(members=[("C:/x.png", VALID_PAGE, zipfile.ZIP_STORED)])
@example(members=[("a\\..\\..\\x.png", VALID_PAGE, zipfile.ZIP_STORED)])
@example(members=[("a/./.b/x.png", VALID_PAGE, zipfile.ZIP_STORED), ("a/./b/x.PNG", b"junk", zipfile.ZIP_DEFLATED)])
def test_random_zip_structures(scratch, members):
    path = scratch / "random.cbz"
    path.write_bytes(_zip(members))
    if any(_unsafe(name) for name, _, _ in members):
        with pytest.raises(UnsafeArchiveError, match="refused"):
            list_archive(path)
        return
    written = {name: data for name, data, _ in members}
    pages = sorted(name for name in written if _listed(name))
    assert sorted(s.member for s in list_archive(path)) == pages
    if not pages:
        with pytest.raises(InputError, match="contains no images"):
            open_chapter(path)
        return
    chapter = open_chapter(path)
    for source in chapter.sources:
        assert source.read_bytes() == written[source.member]
        if written[source.member] == VALID_PAGE:
            assert source.ref not in chapter.errors
    assert set(chapter.errors) <= {s.ref for s in chapter.sources}


@st.composite
def damaged_archives(draw) -> bytes:
    data = bytearray(_zip(draw(archives)))
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@st.composite
def forged_end_records(draw) -> bytes:
    """Random bytes ending in an end record (and maybe a ZIP64 locator) with random fields."""
    body = draw(st.binary(max_size=256))
    counts = draw(st.integers(0, 0xFFFF))
    record = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, counts, counts, draw(st.integers(0, 2**32 - 1)),
                         draw(st.integers(0, 2**32 - 1)), 0)
    if draw(st.booleans()):
        zip64 = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, *(draw(st.integers(0, 2**64 - 1))
                                                                             for _ in range(4)))
        locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, draw(st.integers(0, 2**64 - 1)), 1)
        body += zip64 + locator
    return body + record


def _utf8_flagged_invalid_name() -> bytes:
    """An archive whose member name is flagged UTF-8 but is not: zipfile raises UnicodeDecodeError."""
    data = bytearray(_zip([("\xff.png", VALID_PAGE, zipfile.ZIP_STORED)]))
    entry = data.rindex(b"PK\x01\x02")
    struct.pack_into("<H", data, entry + 8, 0x800)
    name_at = entry + 46
    data[name_at : name_at + 1] = b"\xff"  # cp437 wrote 0x98 for "\xff"; make it invalid UTF-8
    return bytes(data)


@FUZZ
@given(data=st.one_of(damaged_archives(), forged_end_records(), st.binary(max_size=256)))
@example(data=b"PK\x05\x06" + bytes(18))  # an empty archive
@example(data=_zip([("", VALID_PAGE, zipfile.ZIP_STORED)]))  # found: IndexError from ZipInfo.is_dir()
@example(data=_utf8_flagged_invalid_name())
def test_damaged_archives_give_input_errors_only(scratch, data):
    path = scratch / "damaged.zip"
    path.write_bytes(data)
    try:
        sources = list_archive(path)
    except InputError as exc:
        assert str(exc).startswith(f"{path}: ")
        return
    for source in sources:
        try:
            load_image(source, "RGB")
        except PageDecodeError as exc:
            assert str(exc).startswith(f"{source.name}: ")
    try:
        chapter = open_chapter(path)
    except InputError as exc:
        assert "contains no images" in str(exc) and not sources
    else:
        assert [s.member for s in chapter.sources] == [s.member for s in sources]

