"""Open a chapter or a set of references: folders, CBZ/ZIP archives or image files.

Pages come in natural order (2.png before 10.png). Archives are read member by member with
path and size checks; a page that cannot be decoded becomes a per-page error.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

from natsort import natsorted, ns
from PIL import Image

from engine.errors import InputError, PageDecodeError, UnsafeArchiveError
from engine.io import archive
from engine.io.imaging import IMAGE_EXTENSIONS, DecodeLimits, decode_image, normalise

ARCHIVE_EXTENSIONS = frozenset({".cbz", ".zip"})


@dataclass(frozen=True)
class ImageSource:
    """Where one image lives: a file, or a member inside a ZIP/CBZ archive."""

    path: Path
    member: str | None = None
    label: str | None = None  # display name, e.g. the path relative to the chapter folder

    @property
    def ref(self) -> str:
        """Stable string id used in reports and project files."""
        return f"{self.path}!{self.member}" if self.member else str(self.path)

    @property
    def name(self) -> str:
        """Display name: the file name, or the member path inside the archive."""
        return self.label or self.member or self.path.name

    def read_bytes(self) -> bytes:
        """The file's bytes, at most the page limit (PageDecodeError beyond it).

        Archive members go through the archive limits; OSError for an unreadable file and
        InputError for an archive that can no longer be used.
        """
        if self.member is not None:
            return archive.read_member(self.path, self.member, self.name)
        limit = archive.MAX_MEMBER_BYTES
        with open(self.path, "rb") as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise PageDecodeError(f"{self.name}: more than {limit:,} bytes, above the page limit")
        return data

    @classmethod
    def parse(cls, ref: str) -> "ImageSource":
        """Inverse of `ref` (the display label is not part of the id)."""
        path, sep, member = ref.partition("!")
        return cls(Path(path), member if sep else None)


@dataclass
class PageImage:
    """One decoded image with its content hash (sha256 of the file bytes)."""

    source: ImageSource
    image: Image.Image
    sha256: str


def load_image(source: ImageSource, mode: str, limits: DecodeLimits = DecodeLimits()) -> PageImage:
    """Read and decode one image, normalised to gray ("L") or color ("RGB").

    Raises PageDecodeError with a reason naming the file.
    """
    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
    try:
        data = source.read_bytes()
    except PageDecodeError:
        raise
    except OSError as exc:
        raise PageDecodeError(f"{source.name}: cannot be read ({exc})") from exc
    except InputError as exc:  # the whole archive changed or broke since it was listed
        raise PageDecodeError(f"{source.name}: {exc}") from exc
    image = decode_image(data, source.name, limits)
    return PageImage(source, normalise(image, mode, source.name), hashlib.sha256(data).hexdigest())


def _is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS


def _is_hidden(parts: Iterable[str]) -> bool:
    # Dotfiles, AppleDouble "._x" files and macOS resource folders are never pages.
    return any(part.startswith(".") or part == "__MACOSX" for part in parts)


def _check_member_name(path: Path, name: str) -> None:
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"{path}: archive member {name!r} has an absolute path; refused")
    if ".." in pure.parts:
        raise UnsafeArchiveError(f"{path}: archive member {name!r} points outside the archive; refused")


def list_archive(path: Path, max_total_bytes: int | None = None) -> list[ImageSource]:
    """Image members of a ZIP/CBZ in natural order, after path and size checks.

    Every refusal is an InputError naming the archive: UnsafeArchiveError for a member that
    escapes its folder or a limit of `engine.io.archive` (member count, total size, default
    `MAX_ARCHIVE_BYTES`, compression ratio), all checked before anything is decompressed.
    """
    with archive.open_archive(path) as opened:
        infos = opened.infolist()
    images = []
    for info in infos:
        _check_member_name(path, info.filename)
        if info.filename.endswith("/"):  # a folder (ZipInfo.is_dir() fails on an empty name)
            continue
        parts = PurePosixPath(info.filename).parts
        if _is_hidden(parts) or not _is_image_name(info.filename):
            continue
        images.append(info)
    archive.check_members(path, images, max_total_bytes)
    sources = [ImageSource(path, info.filename) for info in images]
    return natsorted(sources, key=lambda s: s.member, alg=ns.PATH | ns.IGNORECASE)


def list_folder(path: Path) -> list[ImageSource]:
    """Image files in a folder and its subfolders, in natural order, skipping hidden files."""
    files = [
        p
        for p in path.rglob("*")
        if p.is_file() and _is_image_name(p.name) and not _is_hidden(p.relative_to(path).parts)
    ]
    ordered = natsorted(files, key=lambda p: p.relative_to(path).as_posix(), alg=ns.PATH | ns.IGNORECASE)
    return [ImageSource(p, label=p.relative_to(path).as_posix()) for p in ordered]


def list_images(inputs: Sequence[str | Path]) -> list[ImageSource]:
    """Expand folders, archives and image files (in the order given) into image sources."""
    if not inputs:
        raise InputError("no input given")
    sources: list[ImageSource] = []
    for item in inputs:
        path = Path(item).expanduser().resolve()
        if path.is_dir():
            found = list_folder(path)
        elif path.is_file() and path.suffix.lower() in ARCHIVE_EXTENSIONS:
            found = list_archive(path)
        elif path.is_file() and _is_image_name(path.name):
            found = [ImageSource(path)]
        elif path.exists():
            raise InputError(f"{path}: not a folder, .cbz/.zip archive or image file")
        else:
            raise InputError(f"{path}: does not exist")
        if not found:
            raise InputError(f"{path}: contains no images")
        sources.extend(found)
    return sources


@dataclass
class Chapter:
    """The pages of one chapter in reading order, with any page that failed its header check."""

    sources: list[ImageSource]
    errors: dict[str, str] = field(default_factory=dict)  # source.ref -> reason

    @property
    def page_names(self) -> list[str]:
        return [s.name for s in self.sources]

    def load_page(self, index: int) -> PageImage:
        """Decode page `index` as gray; raises PageDecodeError for a bad page."""
        return load_image(self.sources[index], "L")


def probe(source: ImageSource, limits: DecodeLimits = DecodeLimits()) -> str | None:
    """Decode once before heavy work: None if the image is usable, else the reason."""
    try:
        load_image(source, "L", limits)
    except PageDecodeError as exc:
        return str(exc)
    return None


def open_chapter(inputs: Sequence[str | Path] | str | Path, check: bool = True) -> Chapter:
    """Open a chapter; with `check`, every page is decoded once and failures recorded per page."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    with archive.archives_kept_open():  # each archive is parsed once, not once per page
        sources = list_images(inputs)
        chapter = Chapter(sources)
        if check:
            for source in sources:
                reason = probe(source)
                if reason:
                    chapter.errors[source.ref] = reason
    return chapter
