"""ZIP/CBZ reading with limits checked from the end record and central directory before any decompression."""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import zipfile
import zlib
from pathlib import Path
from typing import Iterable, Iterator

from engine.core.errors import InputError, PageDecodeError, UnsafeArchiveError

MAX_ARCHIVE_MEMBERS = 10_000  # entries of any kind; a thick volume has a few hundred pages
MAX_ARCHIVE_BYTES = 4 * 1024**3  # total uncompressed size of all image members
MAX_MEMBER_BYTES = 256 * 1024**2  # one page file, uncompressed
MAX_COMPRESSION_RATIO = 200  # uncompressed:compressed of one member; more is a zip bomb
RATIO_FLOOR_BYTES = 1024**2  # members up to this size are harmless whatever their ratio
# ~1.6 KB per entry at the member cap; real entries are 46 bytes plus a name and a few extras.
MAX_DIRECTORY_BYTES = 16 * 1024**2

_END = struct.Struct("<4s4H2LH")  # end of central directory record
_END64_LOCATOR = struct.Struct("<4sLQL")
_END64 = struct.Struct("<4sQ2H2L4Q")
_ENTRY_SIZE = 46  # fixed part of a central directory entry

try:  # zipfile itself treats lzma as optional
    import lzma

    _LZMA_ERRORS: tuple[type[Exception], ...] = (lzma.LZMAError,)
except ImportError:  # pragma: no cover
    _LZMA_ERRORS = ()

# What zipfile and its decompressors raise for a damaged, encrypted or exotic archive.
ZIP_ERRORS: tuple[type[Exception], ...] = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    OSError,
    EOFError,
    ValueError,  # includes UnicodeDecodeError of a member name flagged UTF-8
    struct.error,
    NotImplementedError,  # unsupported compression method
    RuntimeError,  # encrypted member
    zlib.error,
    *_LZMA_ERRORS,
)


def _end_record(handle, size: int) -> tuple[int, int, int] | None:
    """(declared entries, directory size, directory start) found the way zipfile finds them."""
    tail_size = min(size, _END.size + (1 << 16))
    handle.seek(size - tail_size)
    tail = handle.read(tail_size)
    if tail[-_END.size:][:4] == b"PK\x05\x06" and tail[-2:] == b"\0\0":
        at = len(tail) - _END.size
    else:
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or at + _END.size > len(tail):
            return None
    _, _, _, _, entries, directory_size, _, _ = _END.unpack_from(tail, at)
    location = size - tail_size + at
    locator_at = location - _END64_LOCATOR.size
    record_at = locator_at - _END64.size
    if record_at >= 0:
        handle.seek(locator_at)
        locator = handle.read(_END64_LOCATOR.size)
        if locator[:4] == b"PK\x06\x07":
            handle.seek(record_at)
            record = _END64.unpack(handle.read(_END64.size))
            if record[0] == b"PK\x06\x06":
                entries, directory_size = record[7], record[8]
                return entries, directory_size, record_at - directory_size
    return entries, directory_size, location - directory_size


def _count_entries(directory: bytes, stop_after: int) -> int:
    """Central directory entries actually present (zipfile ignores the declared count)."""
    count = at = 0
    while at + _ENTRY_SIZE <= len(directory) and count <= stop_after:
        if directory[at : at + 4] != b"PK\x01\x02":
            break  # damaged: zipfile stops here too, with an error
        name, extra, comment = struct.unpack_from("<3H", directory, at + 28)
        at += _ENTRY_SIZE + name + extra + comment
        count += 1
    return count


def check_directory(path: Path) -> None:
    """Refuse an archive with too many members or too large a central directory.

    Reads only the end record and the fixed part of each directory entry, so an archive with
    100,000 members is refused in milliseconds, before zipfile builds an entry for each.
    """
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        found = _end_record(handle, size)
        if found is None:
            return  # not a ZIP: zipfile says so
        entries, directory_size, start = found
        if entries > MAX_ARCHIVE_MEMBERS:
            raise UnsafeArchiveError(
                f"{path}: {entries:,} members, more than the {MAX_ARCHIVE_MEMBERS:,} allowed; refused"
            )
        if directory_size > MAX_DIRECTORY_BYTES:
            raise UnsafeArchiveError(
                f"{path}: central directory of {directory_size:,} bytes, more than the "
                f"{MAX_DIRECTORY_BYTES:,} allowed; refused"
            )
        if start < 0:
            return
        handle.seek(start)
        directory = handle.read(directory_size)
    if _count_entries(directory, MAX_ARCHIVE_MEMBERS) > MAX_ARCHIVE_MEMBERS:
        raise UnsafeArchiveError(
            f"{path}: more than {MAX_ARCHIVE_MEMBERS:,} members (its end record says {entries:,}), "
            f"more than the {MAX_ARCHIVE_MEMBERS:,} allowed; refused"
        )


def _open_checked(path: Path) -> zipfile.ZipFile:
    try:
        check_directory(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc})") from exc
    try:
        return zipfile.ZipFile(path)
    except ZIP_ERRORS as exc:
        raise InputError(f"{path}: not a valid ZIP/CBZ archive ({exc})") from exc


_kept = threading.local()


@contextlib.contextmanager
def archives_kept_open() -> Iterator[None]:
    """Within this block each archive is opened and checked once per thread, not once per read."""
    if getattr(_kept, "archives", None) is not None:
        yield  # nested: the outer block owns the archives
        return
    _kept.archives = {}
    try:
        yield
    finally:
        archives, _kept.archives = _kept.archives, None
        for archive, _ in archives.values():
            archive.close()


def _stamp(path: Path) -> tuple[int, int]:
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc})") from exc
    return stat.st_size, stat.st_mtime_ns


@contextlib.contextmanager
def open_archive(path: Path) -> Iterator[zipfile.ZipFile]:
    """A checked ZipFile; InputError (UnsafeArchiveError for a limit) if it cannot be used."""
    archives = getattr(_kept, "archives", None)
    if archives is None:
        with _open_checked(path) as archive:
            yield archive
        return
    stamp = _stamp(path)
    kept = archives.pop(path, None)
    if kept is not None and kept[1] != stamp:
        kept[0].close()  # the file changed since it was opened
        kept = None
    if kept is None:
        kept = (_open_checked(path), stamp)
    archives[path] = kept
    yield kept[0]


def _ratio_exceeded(info: zipfile.ZipInfo) -> bool:
    return info.file_size > RATIO_FLOOR_BYTES and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1)


def _ratio_text(info: zipfile.ZipInfo) -> str:
    ratio = info.file_size / max(info.compress_size, 1)
    return (
        f"expands {ratio:,.0f}:1 ({info.compress_size:,} to {info.file_size:,} bytes), "
        f"more than the {MAX_COMPRESSION_RATIO}:1 allowed"
    )


def check_members(path: Path, infos: Iterable[zipfile.ZipInfo], max_total_bytes: int | None = None) -> None:
    """Refuse a zip bomb member or too large a total, from the central directory alone."""
    limit = MAX_ARCHIVE_BYTES if max_total_bytes is None else max_total_bytes
    total = 0
    for info in infos:
        if _ratio_exceeded(info):
            raise UnsafeArchiveError(f"{path}: member {info.filename!r} {_ratio_text(info)}; refused as a zip bomb")
        total += info.file_size
    if total > limit:
        raise UnsafeArchiveError(
            f"{path}: images add up to {total:,} bytes uncompressed, more than the {limit:,} allowed; refused"
        )


def read_member(path: Path, member: str, name: str) -> bytes:
    """The bytes of one member, never more than its declared size nor the page limit.

    PageDecodeError (naming `name`) for a member that is missing, too large, a zip bomb or
    damaged; InputError if the archive as a whole cannot be used.
    """
    with open_archive(path) as archive:
        try:
            info = archive.getinfo(member)
        except KeyError as exc:
            raise PageDecodeError(f"{name}: not in {path} any more") from exc
        if info.file_size > MAX_MEMBER_BYTES:
            raise PageDecodeError(
                f"{name}: {info.file_size:,} bytes, above the page limit of {MAX_MEMBER_BYTES:,} bytes"
            )
        if _ratio_exceeded(info):
            raise PageDecodeError(f"{name}: {_ratio_text(info)}; refused as a zip bomb")
        try:
            with archive.open(info) as stream:
                data = stream.read(info.file_size + 1)  # never trust the declared size further
        except ZIP_ERRORS as exc:
            raise PageDecodeError(f"{name}: cannot be read from {path.name} ({exc})") from exc
    if len(data) > info.file_size:
        raise PageDecodeError(f"{name}: holds more than the {info.file_size:,} bytes it declares; refused")
    return data
