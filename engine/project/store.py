"""The project file on disk (and the series library file, kept the same way): its names, reading with the
size cap, parsing and validation, encoding, saving with a .bak, and the advice when it is unusable."""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from engine.core.errors import ProjectFileError
from engine.io.fileio import atomic_write, atomic_write_bytes
from engine.project.format import MAX_PROJECT_BYTES

PROJECT_FILE = "colorflow-project.json"
BACKUP_FILE = PROJECT_FILE + ".bak"  # the file as it was before the last save that changed it
T = TypeVar("T")


@dataclass(frozen=True)
class FileKind:
    """A JSON file ColorFlow keeps in a folder with a .bak of its previous good save (the chapter project,
    the series library): its name, what messages call it, its size cap and its validator."""

    file: str
    what: str  # "project file"
    max_bytes: int
    validate: Callable[[Any, str], Any]  # (parsed JSON, folder) -> the model; NewerVersion / ValueError
    restore: str  # the call that brings the .bak back, named in the advice
    elsewhere: str = "choose another output folder"

    @property
    def backup(self) -> str:
        return self.file + ".bak"


def _validate_project(data: Any, folder: str):
    from engine.project.schema import validate

    return validate(data, folder)


PROJECT = FileKind(PROJECT_FILE, "project file", MAX_PROJECT_BYTES, _validate_project, "ChapterProject.restore_backup")


class NewerProject(ProjectFileError):
    """Saved by a newer ColorFlow: not damaged, so no backup advice."""


class LinkInProject(ProjectFileError):
    """A symbolic link in the project folder: the .bak names the same files, so no backup advice."""


def encode_project(payload: dict[str, Any]) -> bytes:
    """A project's JSON payload as the bytes saved to its file."""
    # allow_nan=False: NaN and infinities are not JSON (json.dumps would write them as bare words)
    return (json.dumps(payload, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def read_project_file(path: Path, kind: FileKind = PROJECT) -> bytes:
    """A project (or series) file's or its .bak's bytes, at most its kind's cap: a larger file, or one
    that is not a regular file, is a ProjectFileError before anything is read. OSError
    (FileNotFoundError) when it cannot be read."""
    if path.is_symlink():  # reading through it would read whatever file it names
        raise LinkInProject(
            f"{path} is a symbolic link (to {os.readlink(path)}), not read: ColorFlow does not read {kind.what}s "
            "through links; put a copy of the file in its place if you trust it, or remove the link")
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise ProjectFileError(f"{path}: not a {kind.what} (not a regular file)")
    with open(path, "rb") as handle:
        raw = handle.read(kind.max_bytes + 1)
    if max(info.st_size, len(raw)) > kind.max_bytes:
        raise ProjectFileError(f"{path}: {kind.what} is too large ({max(info.st_size, len(raw)):,} bytes; "
                               f"a {kind.what} is at most {kind.max_bytes // 1024**2} MiB)")
    return raw


def same_content(path: Path, data: bytes) -> bool:
    """Whether the file at `path` holds exactly `data` (the size is compared before reading)."""
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except FileNotFoundError:
        return False


class _NotAJsonNumber(ValueError):
    """A number JSON cannot hold (NaN, an infinity, 1e999) or too long to read."""


def _refuse_constant(text: str):
    raise _NotAJsonNumber(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotAJsonNumber(text)
    return value


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # more digits than Python reads (sys.get_int_max_str_digits)
        raise _NotAJsonNumber(f"{text[:12]}... ({len(text):,} digits)") from None


def parse_project(path: Path, raw: bytes, folder: Path, kind: FileKind = PROJECT):
    """The validated model (at the current version) of a project (or series) file's bytes, or ProjectFileError
    (no backup advice: the caller adds it)."""
    from engine.project.schema import NewerVersion

    try:
        # utf-8-sig: a byte order mark (Notepad writes one) is read past
        data = json.loads(raw.decode("utf-8-sig"), parse_constant=_refuse_constant, parse_float=_finite_float,
                          parse_int=_whole_number)
    except _NotAJsonNumber as exc:
        raise ProjectFileError(f"{path}: {kind.what} is damaged (the number {exc} is not one JSON can hold: "
                               f"infinite, not a number, or too long)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProjectFileError(f"{path}: {kind.what} is damaged (not JSON: {exc})") from None
    except RecursionError:
        raise ProjectFileError(f"{path}: {kind.what} is damaged (JSON nested too deeply)") from None
    try:
        return kind.validate(data, str(folder))
    except NewerVersion as exc:
        raise NewerProject(f"{path}: {exc}; update ColorFlow. The file was left untouched") from None
    except ValueError as exc:
        raise ProjectFileError(f"{path}: {kind.what} is damaged: {exc}") from None


def backup_advice(folder: Path, kind: FileKind = PROJECT) -> str:
    """What to tell a user whose project (or series) file is unusable: the .bak if it is good, else other ways."""
    backup = folder / kind.backup
    try:
        parse_project(backup, read_project_file(backup, kind), folder, kind)
    except FileNotFoundError:
        return f"restore it from a backup or {kind.elsewhere}"
    except (OSError, ProjectFileError):
        return f"its backup {kind.backup} is unusable too; restore it from a backup or {kind.elsewhere}"
    return (f"the previous save is intact in {backup}: rename {kind.backup} to {kind.file} "
            f"(or {kind.restore}) to go back to it")


def keep_damaged_aside(folder: Path, kind: FileKind = PROJECT) -> None:
    """Copy the file, if there is one, to `<file>.damaged-<time>` beside it (colorflow-project.json.damaged-...)."""
    path = folder / kind.file
    if path.exists():
        aside = folder / f"{kind.file}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
        with open(path, "rb") as damaged:  # copied in pieces: it may be too large to hold in memory
            atomic_write(aside, lambda handle: shutil.copyfileobj(damaged, handle))


def load_file(folder: Path, kind: FileKind, build: Callable[[Any], T]) -> tuple[bytes, T]:
    """(the bytes, `build(validated model)`) of `<folder>/<kind.file>`. FileNotFoundError when there is
    none; ProjectFileError naming the file and the field when it (or `build`) finds it damaged, unsafe or
    newer, with the .bak advice where that helps; the file is never changed by loading."""
    path = folder / kind.file
    try:
        raw = read_project_file(path, kind)
        return raw, build(parse_project(path, raw, folder, kind))
    except (FileNotFoundError, NewerProject, LinkInProject):
        raise
    except ProjectFileError as exc:
        raise ProjectFileError(f"{exc}. The file was left untouched; {backup_advice(folder, kind)}") from None
    except OSError as exc:
        raise ProjectFileError(f"{path}: {kind.what} cannot be read ({exc}); left untouched") from exc


def save_file(folder: Path, kind: FileKind, data: bytes, on_disk: bytes | None) -> None:
    """Write `data` as `<folder>/<kind.file>` atomically: a crash mid-save leaves the previous file intact.
    The file it replaces becomes the .bak; a damaged, unsafe or newer file on disk, or one changed behind
    our back (it is not `on_disk`, the bytes last loaded or saved) and not valid, is never saved over."""
    path, backup = folder / kind.file, folder / kind.backup
    if len(data) > kind.max_bytes:  # never write a file the next load would refuse
        raise ProjectFileError(f"{path}: not saved: the {kind.what} would be {len(data):,} bytes, "
                               f"more than a {kind.what} may hold ({kind.max_bytes // 1024**2} MiB)")
    try:
        current = read_project_file(path, kind)
    except FileNotFoundError:
        current = None
    except ProjectFileError as exc:
        raise ProjectFileError(f"{exc}; not saved over it (left untouched)") from None
    if current == data:
        return  # nothing changed: the backup keeps the previous version
    if current is not None:
        if current != on_disk:  # changed behind our back: keep it only if it is good
            try:
                parse_project(path, current, folder, kind)
            except ProjectFileError as exc:
                raise ProjectFileError(f"{exc}; not saved over it (left untouched)") from None
        if not same_content(backup, current):
            atomic_write_bytes(backup, current)
    atomic_write_bytes(path, data)


def restore_file(folder: Path, kind: FileKind, build: Callable[[Any], T]) -> tuple[bytes, T]:
    """Go back to the previous save: the damaged file is kept beside it as `<file>.damaged-<time>` and
    the .bak becomes the file. Returns (its bytes, `build(validated model)`)."""
    backup = folder / kind.backup
    try:
        raw = read_project_file(backup, kind)
    except FileNotFoundError:
        raise ProjectFileError(f"{backup}: there is no backup to restore") from None
    built = build(parse_project(backup, raw, folder, kind))
    keep_damaged_aside(folder, kind)
    atomic_write_bytes(folder / kind.file, raw)
    return raw, built
