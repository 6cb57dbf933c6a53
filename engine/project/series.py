"""SeriesLibrary: the references, accepted pages and pins/rejects that every chapter of a series shares, kept
in a folder of their own (colorflow-series.json with a .bak, locked while saving, images copied in)."""

from __future__ import annotations

import copy
import copy
import hashlib
import io
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from engine import __version__
from engine.core.errors import InputError, ProjectFileError
from engine.io.chapter import ImageSource
from engine.io.fileio import atomic_write_bytes, ensure_real_folder
from engine.io.imaging import decode_image, open_image
from engine.io.naming import safe_name, safe_stem
from engine.io.projectlock import ProjectLock
from engine.project.format import (ACCEPTED, MAX_SERIES_BYTES, REFERENCES, SERIES_FORMAT, SERIES_VERSION,
                                   check_output_path)
from engine.project.state import _with_unknown
from engine.project.store import (PROJECT_FILE, FileKind, LinkInProject, encode_project, load_file, restore_file,
                                  save_file)
from engine.rap.curation import Choices, Target

SERIES_FILE = "colorflow-series.json"
# The file name suffix of a reference copied in, after what its bytes are (engine.io.imaging.ALLOWED_FORMATS).
_SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif", "GIF": ".gif"}


class SeriesFileError(ProjectFileError):
    """The series file (or a file it lists) is damaged, unsafe or newer: names the file and the field."""


class LinkInSeries(SeriesFileError, LinkInProject):
    """A symbolic link where the library keeps a file: the .bak names the same files, so no backup advice."""


def _validate(data: Any, folder: str):
    from engine.project.series_schema import validate_series

    return validate_series(data, folder)


SERIES = FileKind(SERIES_FILE, "series file", MAX_SERIES_BYTES, _validate, "SeriesLibrary.restore_backup",
                  "choose another series folder")


@contextmanager
def _series_errors() -> Iterator[None]:
    """A project-file error of the series file (the shared machinery's) raised as a SeriesFileError."""
    try:
        yield
    except SeriesFileError:
        raise
    except ProjectFileError as exc:
        raise SeriesFileError(str(exc)) from None


@dataclass(frozen=True)
class AcceptedPage:
    """A page a colorist accepted in a chapter of the series, copied into the library."""

    chapter: str
    page: str
    source: ImageSource


class SeriesLibrary:
    """`<folder>/colorflow-series.json`, `references/` and `accepted/<chapter>/`: what a series' chapters share.
    Series-level pins/rejects sit under each chapter's and page's (the narrower level wins). Nothing
    outside the folder is read through it: files are relative POSIX paths checked inside it, never links."""

    def __init__(self, folder: Path, name: str = "") -> None:
        self.folder = Path(folder).expanduser().resolve()
        self.name = name
        self._chapters: list[str] = []
        self._references: list[dict[str, Any]] = []  # {"file", "sha256", "original", unknown keys...}
        self._accepted: list[dict[str, Any]] = []  # {"chapter", "page", "file", "sha256", unknown keys...}
        self._curation: dict[str, Any] = {"pins": [], "rejects": []}  # refs: library-relative files
        self._unknown: dict[str, Any] = {}
        self._on_disk: bytes | None = None

    @property
    def path(self) -> Path:
        return self.folder / SERIES_FILE

    @property
    def chapters(self) -> list[str]:
        return list(self._chapters)

    # --- the file -----------------------------------------------------------------------------------
    @classmethod
    def create(cls, folder: Path, name: str | None = None) -> "SeriesLibrary":
        """A new, empty library in `folder` (made if missing), saved at once. InputError when the folder
        already holds one."""
        library = cls(folder, name if name is not None else Path(folder).expanduser().resolve().name)
        if library.path.exists() or library.path.is_symlink():
            raise InputError(f"{library.folder} already holds a series library ({SERIES_FILE}): add to it with "
                             f"`colorflow series add`, or choose another folder")
        if library.folder.exists() and not library.folder.is_dir():
            raise InputError(f"{library.folder}: not a folder")
        if (library.folder / PROJECT_FILE).exists():  # a run locks its chapter's folder: the library needs its own
            raise InputError(f"{library.folder} is a chapter project's folder: make the series library in a folder "
                             "of its own (beside the chapters)")
        library.save()
        return library

    @classmethod
    def load(cls, folder: Path) -> "SeriesLibrary":
        """Read and validate `<folder>/colorflow-series.json`. FileNotFoundError when there is none;
        SeriesFileError naming the file and the field when it is damaged, unsafe or newer (with the .bak
        advice where that helps); the file is never changed by loading."""
        return cls._read(folder, load_file)

    @classmethod
    def restore_backup(cls, folder: Path) -> "SeriesLibrary":
        """Go back to the previous save: the damaged file is kept beside it as `colorflow-series.json.damaged-<time>`
        and the .bak becomes the series file."""
        return cls._read(folder, restore_file)

    @classmethod
    def _read(cls, folder: Path, read) -> "SeriesLibrary":
        library = cls(folder)
        with _series_errors():
            library._on_disk, _ = read(library.folder, SERIES, library._take)
        return library

    def _take(self, model) -> "SeriesLibrary":
        """Fill this library from a validated file, its files checked (links, paths outside)."""
        dumped = model.model_dump()  # unknown keys included: they are saved back
        self.name, self._chapters = dumped.pop("name"), dumped.pop("chapters")
        self._references, self._accepted = dumped.pop("references"), dumped.pop("accepted")
        self._curation = dumped.pop("curation")
        self._unknown = {k: v for k, v in dumped.items() if k not in ("format", "version", "saved_by")}
        for kind, entries in (("references", self._references), ("accepted", self._accepted)):
            for index, entry in enumerate(entries):
                self._file(entry["file"], f"{kind}[{index}].file")
        return self

    def to_json(self) -> dict[str, Any]:
        return _with_unknown({
            "format": SERIES_FORMAT,
            "version": SERIES_VERSION,
            "saved_by": f"colorflow {__version__}",
            "name": self.name,
            "chapters": list(self._chapters),
            "references": [dict(e) for e in self._references],
            "accepted": [dict(e) for e in self._accepted],
            "curation": self._curation,
        }, self._unknown)

    def save(self) -> None:
        """Atomic save under the folder's lock: the file it replaces becomes the .bak; a damaged or newer
        file on disk is never saved over."""
        data = encode_project(self.to_json())
        with _series_errors(), ProjectLock(self.folder):
            save_file(self.folder, SERIES, data, self._on_disk)
        self._on_disk = data

    def _file(self, value: str, entry: str) -> Path:
        """The absolute path of a library file, checked: relative, inside the folder, no link on the way."""
        try:
            check_output_path(value, "series folder")
        except ValueError as exc:
            raise SeriesFileError(f"{self.path}: {entry}: {exc} (got {value!r})") from None
        path = self.folder
        for part in PurePosixPath(value).parts:
            path = path / part
            if path.is_symlink():
                raise LinkInSeries(
                    f"{self.path}: {entry}: {path} is a symbolic link; ColorFlow does not follow links in a series "
                    "library: remove it (what it points to is not touched) and add that image again. The series "
                    "file was left untouched")
        return path

    # --- references ---------------------------------------------------------------------------------
    def add_reference(self, source: ImageSource) -> str:
        """Copy a colored reference in (after its bytes pass the image checks); its library file. The same
        image added again is kept once."""
        data = source.read_bytes()
        image = open_image(data, source.name)
        digest = hashlib.sha256(data).hexdigest()
        for entry in self._references:
            if entry["sha256"] == digest:
                return entry["file"]
        file = self._unused(REFERENCES, safe_stem(source.name, "reference"), _SUFFIXES[image.format])
        self._write(file, data)
        self._references.append({"file": file, "sha256": digest, "original": source.name})
        return file

    def remove_reference(self, file: str) -> None:
        """Take a reference out of the library: its copy is deleted, its pins and rejects go with it."""
        file = self._library_file(file)
        entry = next((e for e in self._references if e["file"] == file), None)
        if entry is None:
            raise InputError(f"{file}: not a reference of the series library {self.folder}")
        self._drop(self._references, entry, "the reference removed")

    def _drop(self, entries: list[dict[str, Any]], entry: dict[str, Any], what: str) -> None:
        """Take `entry` out of `entries`: its copy is deleted, its pins and rejects go with it."""
        path = self._file(entry["file"], what)
        entries.remove(entry)
        for kind in ("pins", "rejects"):
            self._curation[kind] = [t for t in self._curation[kind] if t["ref"] != entry["file"]]
        if path.is_file():
            path.unlink()

    def reference_sources(self) -> list[ImageSource]:
        """The references, absolute paths inside the folder, in the order added (SeriesFileError for a link)."""
        return [ImageSource(self._file(e["file"], f"references[{i}].file")) for i, e in enumerate(self._references)]

    def references(self) -> list[dict[str, Any]]:
        """The references as recorded: {"file", "sha256", "original"} (a copy)."""
        return [{"file": e["file"], "sha256": e["sha256"], "original": e.get("original")} for e in self._references]

    # --- chapters and accepted pages ----------------------------------------------------------------
    def register_chapter(self, name: str) -> None:
        """Add a chapter at the end of the series' order (nothing when it is there already)."""
        if not isinstance(name, str) or not name.strip():
            raise InputError("a chapter of a series needs a name")
        if name not in self._chapters:
            self._chapters.append(name)

    def add_accepted(self, chapter: str, page: str, path: Path) -> str:
        """Copy a chapter's accepted (colored) page in as accepted/<chapter>/<page>.png, replacing the one
        accepted before for that page; its library file. The chapter is registered if new."""
        if not isinstance(page, str) or not page.strip():
            raise InputError("an accepted page needs its page name")
        self.register_chapter(chapter)
        source = ImageSource(Path(path), label=f"{chapter}/{page}")
        data = source.read_bytes()
        image = open_image(data, source.name)
        if image.format != "PNG":
            buffer = io.BytesIO()
            decode_image(data, source.name).save(buffer, "PNG")
            data = buffer.getvalue()
        entry = next((e for e in self._accepted if (e["chapter"], e["page"]) == (chapter, page)), None)
        if entry is None:
            entry = {"chapter": chapter, "page": page, "file": self._unused(
                f"{ACCEPTED}/{self._chapter_folder(chapter)}", safe_stem(page, "page"), ".png")}
            self._accepted.append(entry)
        entry["sha256"] = hashlib.sha256(data).hexdigest()
        self._write(entry["file"], data)
        return entry["file"]

    def remove_accepted(self, chapter: str, page: str) -> None:
        """Take a chapter's accepted page out of the library (un-accepted): its copy is deleted, its pins
        and rejects go with it; nothing when the library has none for that page."""
        entry = next((e for e in self._accepted if (e["chapter"], e["page"]) == (chapter, page)), None)
        if entry is not None:
            self._drop(self._accepted, entry, f"accepted page {chapter}/{page}")

    def accepted(self, before_chapter: str | None = None) -> list[AcceptedPage]:
        """The accepted pages of the chapters registered before `before_chapter` (all chapters when it is None
        or not registered), chapter by chapter in series order."""
        order = self._chapters
        earlier = order[:order.index(before_chapter)] if before_chapter in order else order
        rank = {name: index for index, name in enumerate(earlier)}
        found = sorted((e for e in self._accepted if e["chapter"] in rank), key=lambda e: rank[e["chapter"]])
        return [AcceptedPage(e["chapter"], e["page"],
                             ImageSource(self._file(e["file"], f"accepted page {e['chapter']}/{e['page']}"),
                                         label=f"{e['chapter']}/{e['page']}"))
                for e in found]

    # --- series-level pins and rejects --------------------------------------------------------------
    def choices(self) -> Choices:
        """The series' pins and rejects, with absolute refs (as the library's image sources have them)."""
        def targets(kind: str) -> list[Target]:
            return [Target(str(self.folder / t["ref"]), t["patch"]) for t in self._curation[kind]]

        return Choices(targets("pins"), targets("rejects"))

    def set_choice(self, target: Target, state: str | None) -> None:
        """Pin ("pin"), reject ("reject") or clear (None) a library file or one of its patches for every
        chapter of the series. target.ref: the file's absolute ref or its library file; InputError otherwise."""
        if state not in ("pin", "reject", None):
            raise ValueError(f"state must be 'pin', 'reject' or None, got {state!r}")
        file = self._library_file(target.ref)
        for kind in ("pins", "rejects"):
            self._curation[kind] = [t for t in self._curation[kind] if (t["ref"], t["patch"]) != (file, target.patch)]
        if state is not None:
            self._curation[state + "s"].append({"ref": file, "patch": target.patch})

    # --- undo ---------------------------------------------------------------------------------------
    def entries(self) -> dict[str, Any]:
        """What the library lists (chapters, references, accepted pages, pins and rejects) as recorded, a
        copy: `put_back` makes the library list exactly this again (an undo)."""
        return copy.deepcopy({"chapters": self._chapters, "references": self._references,
                              "accepted": self._accepted, "curation": self._curation})

    def put_back(self, entries: dict[str, Any], files: dict[str, bytes]) -> None:
        """Undo an edit: the lists as `entries()` gave them before it, and `files` (library file -> bytes,
        those the edit deleted) written back; a listed file the edit added and `entries` lacks is deleted."""
        listed = {e["file"] for e in [*entries["references"], *entries["accepted"]]}
        for file, data in files.items():  # checked before anything changes
            if file not in listed:
                raise InputError(f"{file}: not a file of the series library {self.folder} at that point")
            open_image(data, file)
        for entry in [*self._references, *self._accepted]:
            path = self._file(entry["file"], "a file the undo takes out")
            if entry["file"] not in listed and path.is_file():
                path.unlink()
        for file, data in files.items():
            self._write(file, data)
        restored = copy.deepcopy(entries)
        self._chapters, self._references = restored["chapters"], restored["references"]
        self._accepted, self._curation = restored["accepted"], restored["curation"]

    # --- helpers ------------------------------------------------------------------------------------
    def _library_file(self, ref: str) -> str:
        """A ref (absolute, or relative to the folder) as the library file it names; InputError for any
        other (outside the folder, an archive member, a file never added)."""
        path = Path(ref)
        if path.is_absolute():
            path = path.relative_to(self.folder) if path.is_relative_to(self.folder) else None
        file = PurePosixPath(*path.parts).as_posix() if path is not None and path.parts else None
        known = {e["file"] for e in self._references} | {e["file"] for e in self._accepted}
        if file not in known or "!" in ref:
            raise InputError(f"{ref}: not a file of the series library {self.folder}; add the image to the "
                             "library first")
        return file

    def _chapter_folder(self, chapter: str) -> str:
        """The folder name under accepted/ of a chapter: its own if it has pages, else a safe unused one."""
        for entry in self._accepted:
            if entry["chapter"] == chapter:
                return PurePosixPath(entry["file"]).parts[1]
        taken = {PurePosixPath(e["file"]).parts[1].casefold() for e in self._accepted}
        base = safe_name(chapter, "chapter")
        name, number = base, 1
        while name.casefold() in taken:
            number += 1
            name = f"{base}-{number}"
        return name

    def _unused(self, folder: str, stem: str, suffix: str) -> str:
        """`folder/stem+suffix`, numbered (stem-2, ...) while the library or the disk has that name."""
        taken = {e["file"].casefold() for e in [*self._references, *self._accepted]}
        file, number = f"{folder}/{stem}{suffix}", 1
        while file.casefold() in taken or (self.folder / file).exists() or (self.folder / file).is_symlink():
            number += 1
            file = f"{folder}/{stem}-{number}{suffix}"
        return file

    def _write(self, file: str, data: bytes) -> None:
        """Write a library file atomically, no folder on the way a link (OutputError naming it)."""
        path = self._file(file, "the file written")
        ensure_real_folder(path.parent, self.folder)
        atomic_write_bytes(path, data)
