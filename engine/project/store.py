"""The project file on disk: its names, reading with the size cap, parsing and validation, encoding,
and the advice given when it is unusable (the .bak if that is good)."""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any

from engine.core.errors import ProjectFileError
from engine.io.fileio import atomic_write
from engine.project.format import MAX_PROJECT_BYTES

PROJECT_FILE = "colorflow-project.json"
BACKUP_FILE = PROJECT_FILE + ".bak"  # the file as it was before the last save that changed it


class NewerProject(ProjectFileError):
    """Saved by a newer ColorFlow: not damaged, so no backup advice."""


class LinkInProject(ProjectFileError):
    """A symbolic link in the project folder: the .bak names the same files, so no backup advice."""


def encode_project(payload: dict[str, Any]) -> bytes:
    """A project's JSON payload as the bytes saved to its file."""
    # allow_nan=False: NaN and infinities are not JSON (json.dumps would write them as bare words)
    return (json.dumps(payload, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def read_project_file(path: Path) -> bytes:
    """A project file's (or its .bak's) bytes, at most MAX_PROJECT_BYTES: a larger file, or one
    that is not a regular file, is a ProjectFileError before anything is read. OSError
    (FileNotFoundError) when it cannot be read."""
    if path.is_symlink():  # reading through it would read whatever file it names
        raise LinkInProject(
            f"{path} is a symbolic link (to {os.readlink(path)}), not read: ColorFlow does not read project "
            "files through links; put a copy of the file in its place if you trust it, or remove the link")
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise ProjectFileError(f"{path}: not a project file (not a regular file)")
    with open(path, "rb") as handle:
        raw = handle.read(MAX_PROJECT_BYTES + 1)
    if max(info.st_size, len(raw)) > MAX_PROJECT_BYTES:
        raise ProjectFileError(f"{path}: project file is too large ({max(info.st_size, len(raw)):,} bytes; "
                               f"a project file is at most {MAX_PROJECT_BYTES // 1024**2} MiB)")
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


def parse_project(path: Path, raw: bytes, folder: Path):
    """The validated model (at the current version) of a project file's bytes, or ProjectFileError
    (no backup advice: the caller adds it)."""
    from engine.project.schema import NewerVersion, validate

    try:
        # utf-8-sig: a byte order mark (Notepad writes one) is read past
        data = json.loads(raw.decode("utf-8-sig"), parse_constant=_refuse_constant, parse_float=_finite_float,
                          parse_int=_whole_number)
    except _NotAJsonNumber as exc:
        raise ProjectFileError(f"{path}: project file is damaged (the number {exc} is not one JSON can hold: "
                               f"infinite, not a number, or too long)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProjectFileError(f"{path}: project file is damaged (not JSON: {exc})") from None
    except RecursionError:
        raise ProjectFileError(f"{path}: project file is damaged (JSON nested too deeply)") from None
    try:
        return validate(data, str(folder))
    except NewerVersion as exc:
        raise NewerProject(f"{path}: {exc}; update ColorFlow. The file was left untouched") from None
    except ValueError as exc:
        raise ProjectFileError(f"{path}: project file is damaged: {exc}") from None


def backup_advice(folder: Path) -> str:
    """What to tell a user whose project file is unusable: the .bak if it is good, else other ways."""
    backup = folder / BACKUP_FILE
    try:
        parse_project(backup, read_project_file(backup), folder)
    except FileNotFoundError:
        return "restore it from a backup or choose another output folder"
    except (OSError, ProjectFileError):
        return f"its backup {BACKUP_FILE} is unusable too; restore it from a backup or choose another output folder"
    return (f"the previous save is intact in {backup}: rename {BACKUP_FILE} to {PROJECT_FILE} "
            f"(or ChapterProject.restore_backup) to go back to it")


def keep_damaged_aside(folder: Path) -> None:
    """Copy the project file, if there is one, to `colorflow-project.json.damaged-<time>` beside it."""
    path = folder / PROJECT_FILE
    if path.exists():
        aside = folder / f"{PROJECT_FILE}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
        with open(path, "rb") as damaged:  # copied in pieces: it may be too large to hold in memory
            atomic_write(aside, lambda handle: shutil.copyfileobj(damaged, handle))
