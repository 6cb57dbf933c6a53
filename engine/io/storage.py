"""Output folders the run can trust: writable and with room for the chapter, checked before any
model loads; storage failures (disk full, read-only, quota) told apart from other errors."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Sequence

from engine.core.errors import InputError, OutputError

# What a colored page costs on disk compared with its black-and-white source file (a gray PNG
# or JPEG becomes an RGB PNG): generous, so the check errs on the side of warning.
OUTPUT_PER_SOURCE_BYTE = 4
PROJECT_OVERHEAD_BYTES = 2 * 1024**2  # project file, its backup, retrieval records
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def human_bytes(count: float) -> str:
    """541 B, 95.9 MB, 3.4 GB (decimal units, as the hub shows sizes)."""
    if count < 1000:
        return f"{int(count)} B"
    for unit in ("KB", "MB", "GB"):
        count /= 1000
        if count < 1000 or unit == "GB":
            break
    return f"{count:.1f} {unit}"


def is_storage_error(exc: BaseException) -> bool:
    """A write failed because of the disk or folder (full, read-only, no permission)."""
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


def storage_advice(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "free some disk space (or choose another output folder)"
    return "make the folder writable (or choose another output folder)"


def estimate_output_bytes(sources: Sequence) -> int:
    """Bytes a chapter's colored pages will take, from its source files' sizes."""
    total = 0
    archives: dict[Path, dict[str, int]] = {}
    for source in sources:
        try:
            if source.member is None:
                total += source.path.stat().st_size
                continue
            if source.path not in archives:
                with zipfile.ZipFile(source.path) as archive:
                    archives[source.path] = {i.filename: i.file_size for i in archive.infolist()}
            total += archives[source.path].get(source.member, 0)
        except (OSError, zipfile.BadZipFile):
            continue  # an unreadable page fails on its own later
    return total * OUTPUT_PER_SOURCE_BYTE + PROJECT_OVERHEAD_BYTES


def nearest_existing(folder: Path) -> Path:
    """`folder` or its nearest parent that exists (where a folder not yet made would live)."""
    folder = Path(folder).expanduser().absolute()
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return folder


def file_in_the_way(folder: Path) -> Path | None:
    """The existing file (not a folder) at `folder` or above it that keeps it from being a folder."""
    existing = nearest_existing(folder)
    return None if existing.is_dir() else existing


def check_outside_inputs(folder: Path, inputs: Sequence) -> None:
    """Refuse an output folder that is an input chapter folder or lies inside one: the next run
    would read the colored pages as new pages of the chapter. (A folder beside it is fine.)"""
    folder = Path(folder).expanduser().resolve()
    for item in inputs:
        source = Path(item).expanduser().resolve()
        if not source.is_dir() or (folder != source and source not in folder.parents):
            continue
        where = "is the input folder" if folder == source else f"is inside the input folder {source}"
        raise InputError(f"{folder} {where}: the next run would take the colored pages as pages of the "
                         f"chapter; choose a folder outside it, such as {source.parent / (source.name + '.colorflow')}")


def probe_writable(folder: Path) -> None:
    """Make `folder` if missing and write and remove a temp file in it: OSError if it cannot be used."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".colorflow-write-test.", dir=folder)
    os.close(fd)
    os.unlink(probe)


def check_output_folder(folder: Path, needed_bytes: int = 0) -> None:
    """Refuse an output folder that cannot be written or lacks room, before the run starts."""
    folder = Path(folder)
    blocker = file_in_the_way(folder)
    if blocker is not None:
        raise OutputError(f"{folder}: {blocker} is a file, not a folder; choose another output folder")
    try:
        probe_writable(folder)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OutputError(f"{folder}: cannot write there ({reason}); {storage_advice(exc)}") from exc
    free = shutil.disk_usage(nearest_existing(folder)).free
    if needed_bytes and free < needed_bytes:
        raise OutputError(
            f"{folder}: only {human_bytes(free)} free, the chapter needs about {human_bytes(needed_bytes)}; "
            "free some disk space or choose another output folder"
        )
