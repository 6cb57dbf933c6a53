"""Open a chapter or a set of references: folders, CBZ/ZIP archives or image files.

Pages come in natural order (2.png before 10.png). Archives are read member by member with
path and size checks; a page that cannot be decoded becomes a per-page error.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

from natsort import natsorted, ns
from PIL import Image

from engine.core.errors import InputError, PageDecodeError, UnsafeArchiveError, listed
from engine.io import archive
from engine.io.imaging import IMAGE_EXTENSIONS, DecodeLimits, decode_image, normalise, open_image

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
        with os.fdopen(_open_no_follow(self.path, self.name), "rb") as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise PageDecodeError(f"{self.name}: more than {limit:,} bytes, above the page limit")
        return data

    @classmethod
    def parse(cls, ref: str) -> "ImageSource":
        """Inverse of `ref` (the display label is not part of the id)."""
        path, sep, member = ref.partition("!")
        return cls(Path(path), member if sep else None)


def _open_no_follow(path: Path, name: str) -> int:
    """A read-only descriptor of `path`, never through a symlink: listing resolved the links that
    stay inside their folder to their targets, so a link found now was put there since."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        if not hasattr(os, "O_NOFOLLOW") and path.is_symlink():  # Windows: check, then open
            raise OSError(f"{path} is a symbolic link")
        return os.open(path, flags)
    except OSError:
        if path.is_symlink():
            raise PageDecodeError(
                f"{name}: {path} is a symbolic link (to {os.readlink(path)}), not followed: a page is read "
                "from the file it was listed as; open the chapter again") from None
        raise


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
    data = _read_image_bytes(source)
    image = decode_image(data, source.name, limits)
    return PageImage(source, normalise(image, mode, source.name), hashlib.sha256(data).hexdigest())


def image_header(source: ImageSource, limits: DecodeLimits = DecodeLimits()) -> Image.Image:
    """An image opened for its size and metadata only: format allowlisted, pixel limit checked,
    pixels not decoded. PageDecodeError naming the file, as `load_image`."""
    return open_image(_read_image_bytes(source), source.name, limits)


def _read_image_bytes(source: ImageSource) -> bytes:
    try:
        return source.read_bytes()
    except PageDecodeError:
        raise
    except OSError as exc:
        raise PageDecodeError(f"{source.name}: cannot be read ({exc})") from exc
    except InputError as exc:  # the whole archive changed or broke since it was listed
        raise PageDecodeError(f"{source.name}: {exc}") from exc


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
        if stat.S_ISLNK(info.external_attr >> 16):  # Unix mode bits: what an unzip would make a link
            raise UnsafeArchiveError(f"{path}: archive member {info.filename!r} is a symbolic link; refused")
        if info.filename.endswith("/"):  # a folder (ZipInfo.is_dir() fails on an empty name)
            continue
        parts = PurePosixPath(info.filename).parts
        if _is_hidden(parts) or not _is_image_name(info.filename):
            continue
        images.append(info)
    counts = Counter(info.filename for info in images)
    duplicates = [f"{count} members named {name!r}" for name, count in counts.items() if count > 1]
    if duplicates:  # zipfile reads only the last of them: the others could never be told apart
        raise UnsafeArchiveError(f"{path}: {listed(duplicates)}; refused (only the last of each could be read): "
                                 "repack it with one member per name")
    archive.check_members(path, images, max_total_bytes)
    sources = [ImageSource(path, info.filename) for info in images]
    return natsorted(sources, key=lambda s: s.member, alg=ns.PATH | ns.IGNORECASE)


def _link_target(link: Path) -> Path | None:
    """The file a symlink leads to, or None for a link to a folder, to nothing or to itself."""
    try:
        target = link.resolve()
    except (OSError, RuntimeError):  # a loop of links
        return None
    return target if target.is_file() else None


def list_folder(path: Path) -> list[ImageSource]:
    """Image files in a folder and its subfolders, in natural order, skipping hidden files.

    Folder symlinks are not followed. A file symlink is followed only when its target lies inside
    the folder: the page is read from the target, under the link's name. A link leading outside
    is refused (InputError naming it and its target): nothing outside is ever read.
    """
    root = path.resolve()
    found: list[tuple[str, Path]] = []  # (name relative to the folder, the file to read)
    outside: list[tuple[str, Path]] = []
    for entry in path.rglob("*"):
        relative = entry.relative_to(path)
        if not _is_image_name(entry.name) or _is_hidden(relative.parts):
            continue
        if entry.is_symlink():
            target = _link_target(entry)
            if target is not None:
                (found if target.is_relative_to(root) else outside).append((relative.as_posix(), target))
        elif entry.is_file():
            found.append((relative.as_posix(), entry))
    if outside:
        name, target = natsorted(outside, key=lambda pair: pair[0], alg=ns.PATH | ns.IGNORECASE)[0]
        more = f" ({len(outside) - 1} more such link(s))" if len(outside) > 1 else ""
        raise InputError(f"{path / name} is a symbolic link to {target}, outside {path}; refused: links are "
                         f"followed only inside the folder, copy the file into it instead{more}")
    ordered = natsorted(found, key=lambda pair: pair[0], alg=ns.PATH | ns.IGNORECASE)
    return [ImageSource(file, label=name) for name, file in ordered]


def _distinct_names(groups: Sequence[tuple[str, Path, list[ImageSource]]]) -> list[ImageSource]:
    """The pages of all inputs, each under a name no other page has: the project, the pipeline
    and the exports know a page by its name. Names stay as they are unless pages of different
    inputs share one (ignoring case, as a person or a case-insensitive disk would): then every
    page is named after its input too, `chA/1.png`. Names that still clash (an input given twice,
    two inputs with the same name) are refused in one line listing them (InputError).

    `groups`: per input, in order, (the name that tells it apart, its path, its pages).
    """
    inputs_of: dict[str, set[int]] = {}
    for index, (_, _, found) in enumerate(groups):
        for source in found:
            inputs_of.setdefault(source.name.casefold(), set()).add(index)
    paired = [(source, path) for _, path, found in groups for source in found]
    if any(len(indices) > 1 for indices in inputs_of.values()):
        paired = [(replace(source, label=f"{prefix}/{source.name}"), path)
                  for prefix, path, found in groups for source in found]
    paths_of: dict[str, list[str]] = {}
    for source, path in paired:
        paths_of.setdefault(source.name, []).append(str(path))
    clashes = [f"{name!r} ({', '.join(paths)})" for name, paths in paths_of.items() if len(paths) > 1]
    if clashes:
        raise InputError(f"pages with the same name would be mixed up: {listed(clashes)}; "
                         "give each input once, under a name of its own (or rename the pages)")
    return [source for source, _ in paired]


def list_images(inputs: Sequence[str | Path]) -> list[ImageSource]:
    """Expand folders, archives and image files (in the order given) into image sources, each
    under a distinct name (see `_distinct_names`)."""
    if not inputs:
        raise InputError("no input given")
    groups: list[tuple[str, Path, list[ImageSource]]] = []
    for item in inputs:
        path = Path(item).expanduser().resolve()
        prefix = path.name
        if path.is_dir():
            found = list_folder(path)
        elif path.is_file() and path.suffix.lower() in ARCHIVE_EXTENSIONS:
            found = list_archive(path)
        elif path.is_file() and _is_image_name(path.name):
            found, prefix = [ImageSource(path)], path.parent.name  # a page given alone: its folder's name
        elif path.exists():
            raise InputError(f"{path}: not a folder, .cbz/.zip archive or image file")
        else:
            raise InputError(f"{path}: does not exist")
        if not found:
            raise InputError(f"{path}: contains no images")
        groups.append((prefix, path, found))
    return _distinct_names(groups)


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
