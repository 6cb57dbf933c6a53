"""Archive limits: member count, total size and zip-bomb ratio refused from the central directory, fast."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import pytest
from PIL import Image

from engine.core.errors import InputError, PageDecodeError, UnsafeArchiveError
from engine.io import archive
from engine.io.chapter import ImageSource, list_archive, list_images, load_image, open_chapter

REPO_ROOT = Path(__file__).resolve().parents[1]


def png_bytes(value: int = 128, size=(16, 24)) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, value).save(buffer, format="PNG")
    return buffer.getvalue()


def stored_zip(members: list[tuple[str, bytes]], declared_count: int | None = None) -> bytes:
    """A ZIP written by hand (much faster than zipfile for 100,000 members), ZIP64 end record
    when the count needs it; `declared_count` forges the count the end record claims."""
    local, central = [], []
    offset = 0
    for name, data in members:
        raw = name.encode()
        crc = zlib.crc32(data)
        header = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0x21, crc, len(data), len(data), len(raw), 0)
        local.append(header + raw + data)
        central.append(
            struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0x21, crc, len(data), len(data),
                        len(raw), 0, 0, 0, 0, 0, offset) + raw
        )
        offset += len(header) + len(raw) + len(data)
    directory = b"".join(central)
    count = len(members) if declared_count is None else declared_count
    tail = b""
    if count > 0xFFFF:
        tail += struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, len(directory), offset)
        tail += struct.pack("<4sLQL", b"PK\x06\x07", 0, offset + len(directory), 1)
    short = min(count, 0xFFFF)
    tail += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, short, short, len(directory), offset, 0)
    return b"".join(local) + directory + tail


def test_hand_written_zip_is_a_valid_archive(tmp_path):
    path = tmp_path / "small.cbz"
    path.write_bytes(stored_zip([("2.png", png_bytes(20)), ("10.png", png_bytes(10)), ("1.png", png_bytes(30))]))
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
    chapter = open_chapter(path)
    assert chapter.page_names == ["1.png", "2.png", "10.png"] and not chapter.errors
    assert chapter.load_page(2).image.getpixel((0, 0)) == 10


@pytest.fixture(scope="module")
def hundred_thousand(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("big") / "chapter.cbz"
    path.write_bytes(stored_zip([(f"{i}.png", b"x") for i in range(100_000)]))
    return path


def test_100000_members_are_refused_in_under_a_second(hundred_thousand):
    for reader in (list_archive, open_chapter):
        start = time.perf_counter()
        with pytest.raises(UnsafeArchiveError) as caught:
            reader(hundred_thousand)
        elapsed = time.perf_counter() - start
        assert elapsed < 1.0, f"{reader.__name__} took {elapsed:.2f} s"
        assert str(caught.value).startswith(f"{hundred_thousand}: 100,000 members, more than the 10,000 allowed")
    assert isinstance(caught.value, InputError)


def test_an_end_record_that_understates_the_count_is_caught_in_the_directory(tmp_path):
    path = tmp_path / "liar.cbz"
    path.write_bytes(stored_zip([(f"{i}.png", b"x") for i in range(20_000)], declared_count=3))
    start = time.perf_counter()
    with pytest.raises(UnsafeArchiveError, match=r"more than 10,000 members \(its end record says 3\)"):
        list_archive(path)
    assert time.perf_counter() - start < 1.0


def test_member_count_cap_is_exact(tmp_path, monkeypatch):
    monkeypatch.setattr(archive, "MAX_ARCHIVE_MEMBERS", 5)
    members = [("Chapter/", b""), ("notes.txt", b"hi")] + [(f"Chapter/{i}.png", png_bytes()) for i in range(3)]
    at_cap, over = tmp_path / "five.zip", tmp_path / "six.zip"
    at_cap.write_bytes(stored_zip(members))
    over.write_bytes(stored_zip(members + [("Chapter/3.png", png_bytes())]))
    assert len(list_archive(at_cap)) == 3  # directories and other files count too, and still fit
    with pytest.raises(UnsafeArchiveError, match="6 members, more than the 5 allowed"):
        list_archive(over)


def test_central_directory_size_is_capped(tmp_path, monkeypatch):
    path = tmp_path / "names.cbz"
    path.write_bytes(stored_zip([("1.png", png_bytes()), ("2.png", png_bytes())]))
    directory = 2 * (46 + len("1.png"))
    monkeypatch.setattr(archive, "MAX_DIRECTORY_BYTES", directory)
    assert len(list_archive(path)) == 2
    monkeypatch.setattr(archive, "MAX_DIRECTORY_BYTES", directory - 1)
    with pytest.raises(UnsafeArchiveError, match=f"central directory of {directory} bytes, more than the "
                                                 f"{directory - 1} allowed"):
        list_archive(path)


@pytest.mark.parametrize("layout", ["comment", "prefixed"])
def test_member_count_is_found_behind_a_comment_or_prepended_data(tmp_path, monkeypatch, layout):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for i in range(3):
            zf.writestr(f"{i}.png", png_bytes(i))
        if layout == "comment":
            zf.comment = b"PK" + b"c" * 5000
    path = tmp_path / "c.cbz"
    path.write_bytes((b"MZ" + bytes(3000) if layout == "prefixed" else b"") + buffer.getvalue())
    assert len(list_archive(path)) == 3
    monkeypatch.setattr(archive, "MAX_ARCHIVE_MEMBERS", 2)
    with pytest.raises(UnsafeArchiveError, match="3 members, more than the 2 allowed"):
        list_archive(path)
    path.write_bytes(path.read_bytes().replace(b"PK\x05\x06\x00\x00\x00\x00\x03\x00\x03\x00",
                                               b"PK\x05\x06\x00\x00\x00\x00\x01\x00\x01\x00"))
    with pytest.raises(UnsafeArchiveError, match=r"more than 2 members \(its end record says 1\)"):
        list_archive(path)  # the directory itself is walked, not just the count it declares


def _bomb(path: Path, name: str = "bomb.png") -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("1.png", png_bytes())
        zf.writestr(name, bytes(50 * 1024**2))  # 50 MB of zeros deflate to ~50 KB


def test_zip_bomb_member_is_refused_by_its_ratio_without_decompressing(tmp_path):
    path = tmp_path / "bomb.cbz"
    _bomb(path, "pages/07.png")
    tracemalloc.start()
    try:
        with pytest.raises(UnsafeArchiveError) as caught:
            list_archive(path)
        with pytest.raises(UnsafeArchiveError):
            open_chapter(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert message.startswith(f"{path}: member 'pages/07.png' expands ")
    assert "to 52,428,800 bytes), more than the 200:1 allowed" in message and "zip bomb" in message
    assert peak < 5 * 1024**2  # the 50 MB were never inflated


def test_zip_bomb_is_also_refused_when_read_directly(tmp_path):
    path = tmp_path / "bomb.zip"
    _bomb(path)
    source = ImageSource.parse(f"{path}!bomb.png")  # e.g. a reference kept in a project file
    with pytest.raises(PageDecodeError, match=r"^bomb.png: expands .* more than the 200:1 allowed"):
        load_image(source, "RGB")
    assert load_image(ImageSource.parse(f"{path}!1.png"), "L").image.size == (16, 24)


def test_total_uncompressed_size_is_capped(tmp_path, monkeypatch):
    path = tmp_path / "pages.cbz"
    pages = [(f"{i}.png", png_bytes(i)) for i in range(3)]
    path.write_bytes(stored_zip(pages + [("ComicInfo.xml", b"<x/>" * 1000)]))
    total = sum(len(data) for _, data in pages)  # only images count
    monkeypatch.setattr(archive, "MAX_ARCHIVE_BYTES", total)
    assert len(list_archive(path)) == 3
    monkeypatch.setattr(archive, "MAX_ARCHIVE_BYTES", total - 1)
    with pytest.raises(UnsafeArchiveError) as caught:
        open_chapter(path)
    assert str(caught.value) == (
        f"{path}: images add up to {total:,} bytes uncompressed, more than the {total - 1:,} allowed; refused"
    )


def _forge_uncompressed_size(path: Path, size: int) -> None:
    """Rewrite the single member's uncompressed size in its local header and directory entry."""
    data = bytearray(path.read_bytes())
    assert data[:4] == b"PK\x03\x04"
    struct.pack_into("<L", data, 22, size)
    entry = data.rindex(b"PK\x01\x02")
    struct.pack_into("<L", data, entry + 24, size)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("compression", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_member_lying_about_its_size_is_stopped_while_reading(tmp_path, compression):
    path = tmp_path / "forged.cbz"
    real = png_bytes() + bytes(20 * 1024**2)  # 20 MB behind a valid PNG
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        zf.writestr("1.png", real)
    _forge_uncompressed_size(path, 1000)  # claims 1,000 bytes: no ratio or size limit applies
    source = list_archive(path)[0]
    tracemalloc.start()
    try:
        with pytest.raises(PageDecodeError, match=r"^1.png: cannot be read from forged.cbz \(Bad CRC-32"):
            load_image(source, "L")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * 1024**2  # at most the declared 1,000 bytes (+1) were inflated
    assert open_chapter(path).errors[source.ref].startswith("1.png: cannot be read")


def test_highly_compressible_small_members_are_not_bombs(tmp_path):
    path = tmp_path / "blank.cbz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("blank.bmp", bytes(archive.RATIO_FLOOR_BYTES))  # ~1000:1, but only 1 MiB
    assert [s.member for s in list_archive(path)] == ["blank.bmp"]


def _patch_member(path: Path, flag_bits: int = 0, method: int | None = None) -> None:
    """Set flag bits or the compression method of the single member, in both headers."""
    data = bytearray(path.read_bytes())
    for at in (0, data.rindex(b"PK\x01\x02") + 2):  # the directory entry has one more field first
        flags, current = struct.unpack_from("<2H", data, at + 6)
        struct.pack_into("<2H", data, at + 6, flags | flag_bits, current if method is None else method)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("patch, reason", [
    ({"flag_bits": 0x1}, "encrypted, password required"),
    ({"method": 99}, "compression method is not supported"),
])
def test_encrypted_or_exotic_members_are_per_page_errors(tmp_path, patch, reason):
    path = tmp_path / "odd.cbz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("1.png", png_bytes())
    _patch_member(path, **patch)
    chapter = open_chapter(path)
    assert chapter.page_names == ["1.png"]
    assert chapter.errors[f"{path}!1.png"].startswith("1.png: cannot be read from odd.cbz (")
    assert reason in chapter.errors[f"{path}!1.png"]


def test_page_files_above_the_page_limit_are_per_page_errors(tmp_path, monkeypatch):
    data = png_bytes(size=(64, 64))
    (tmp_path / "1.png").write_bytes(data)
    path = tmp_path / "c.zip"
    path.write_bytes(stored_zip([("1.png", data), ("2.png", png_bytes())]))
    monkeypatch.setattr(archive, "MAX_MEMBER_BYTES", len(data) - 1)
    with pytest.raises(PageDecodeError, match=r"^1.png: more than .* bytes, above the page limit"):
        load_image(ImageSource(tmp_path / "1.png"), "L")
    chapter = open_chapter(path)
    assert list(chapter.errors) == [f"{path}!1.png"]
    assert f"{len(data):,} bytes, above the page limit of {len(data) - 1:,}" in chapter.errors[f"{path}!1.png"]


def test_open_chapter_parses_each_archive_once(tmp_path, monkeypatch):
    path = tmp_path / "c.cbz"
    path.write_bytes(stored_zip([(f"{i}.png", png_bytes(i)) for i in range(12)]))
    opened = []

    class CountingZipFile(zipfile.ZipFile):
        def __init__(self, file, *args, **kwargs):
            opened.append(file)
            super().__init__(file, *args, **kwargs)

    monkeypatch.setattr(archive.zipfile, "ZipFile", CountingZipFile)
    chapter = open_chapter(path)
    assert len(chapter.sources) == 12 and not chapter.errors
    assert opened == [path]  # listing and all 12 probes share one parse
    assert chapter.load_page(3).image.getpixel((0, 0)) == 3  # outside open_chapter: a fresh parse
    assert opened == [path, path]


def test_a_kept_archive_that_changes_is_reopened(tmp_path):
    path = tmp_path / "c.cbz"
    path.write_bytes(stored_zip([("1.png", png_bytes(1))]))
    with archive.archives_kept_open():
        first = ImageSource(path, "1.png").read_bytes()
        path.write_bytes(stored_zip([("1.png", png_bytes(2, size=(200, 300)))]))
        second = ImageSource(path, "1.png").read_bytes()
        path.write_bytes(b"no longer a zip")
        with pytest.raises(PageDecodeError, match=r"^1.png: .*: not a valid ZIP/CBZ archive"):
            load_image(ImageSource(path, "1.png"), "L")
    assert len(first) != len(second)  # the change is seen by size (and modification time)
    assert Image.open(io.BytesIO(first)).getpixel((0, 0)) == 1
    assert Image.open(io.BytesIO(second)).getpixel((0, 0)) == 2


PROBE = (
    "import json, sys\n"
    "from engine.cli.main import main\n"
    "code = main(sys.argv[1:])\n"
    "print(json.dumps({'code': code, 'torch': 'torch' in sys.modules}))\n"
)


def _cli(args: list[str]) -> tuple[dict, str]:
    result = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=60)
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


@pytest.mark.parametrize("command", ["retrieve", "colorize"])
def test_cli_refuses_the_100000_member_chapter_with_exit_2(command, hundred_thousand, tmp_path):
    refs = tmp_path / "refs"
    refs.mkdir()
    Image.new("RGB", (64, 96), (200, 20, 20)).save(refs / "r.png")
    outcome, err = _cli([command, str(hundred_thousand), "--refs", str(refs), "--out", str(tmp_path / "o"),
                         "--models", "tiny"])
    assert outcome == {"code": 2, "torch": False}, err
    assert err.strip().splitlines() == [
        f"colorflow: error: INPUT {hundred_thousand}: 100,000 members, more than the 10,000 allowed; refused"
    ]


def test_cli_refuses_a_zip_bomb_reference_with_exit_2(tmp_path):
    pages, bomb = tmp_path / "pages", tmp_path / "refs.cbz"
    pages.mkdir()
    Image.new("L", (64, 96), 200).save(pages / "1.png")
    _bomb(bomb)
    outcome, err = _cli(["colorize", str(pages), "--refs", str(bomb), "--out", str(tmp_path / "o"), "--models", "tiny"])
    assert outcome == {"code": 2, "torch": False}, err
    line = err.strip()
    assert line.startswith(f"colorflow: error: --refs {bomb}: member 'bomb.png' expands ") and "200:1" in line


def test_archives_still_list_through_list_images(tmp_path):
    path = tmp_path / "ok.cbz"
    path.write_bytes(stored_zip([("a/2.png", png_bytes()), ("a/1.png", png_bytes())]))
    assert [s.member for s in list_images([path])] == ["a/1.png", "a/2.png"]
