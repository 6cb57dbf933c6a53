"""Disk caches: checked usable before a run, with a size cap (least recently used files go first)."""

from __future__ import annotations

import os
from pathlib import Path

from engine.core.errors import InputError, OutputError
from engine.io.storage import probe_writable


def touch(path: Path) -> None:
    """Mark a cache file as just used (its mtime orders the trimming)."""
    try:
        os.utime(path)
    except OSError:
        pass  # read-only cache: it is then only never trimmed by use


def trim_cache(folder: Path, max_bytes: int, pattern: str = "*") -> list[Path]:
    """Delete the least recently used files matching `pattern` in `folder` until the rest fit in
    `max_bytes`; returns what was deleted. A file that vanishes or cannot be deleted is skipped."""
    entries = []
    for path in Path(folder).glob(pattern):
        try:
            stat = path.stat()
        except OSError:
            continue
        if path.is_file():
            entries.append((stat.st_mtime_ns, stat.st_size, path))
    total = sum(size for _, size, _ in entries)
    removed = []
    for _, size, path in sorted(entries, key=lambda e: (e[0], e[2].name)):
        if total <= max_bytes:
            break
        try:
            path.unlink()
        except OSError:
            continue
        total -= size
        removed.append(path)
    return removed


def check_cache_folder(folder: Path) -> None:
    """Refuse a cache folder that is a file (or lies under one) or cannot be written, before any
    model loads; a missing one is made. Every page would otherwise fail on its first cache write."""
    folder = Path(folder).expanduser()
    try:
        probe_writable(folder)  # FileExistsError when a file has the name
    except (FileExistsError, NotADirectoryError) as exc:
        blocker = next((p for p in (folder, *folder.parents) if p.exists()), folder)  # the file in the way
        what = "it is a file" if blocker == folder else f"{blocker} is a file"
        raise InputError(f"{folder}: not a folder ({what}); give a folder (it is made if missing)") from exc
    except OSError as exc:
        raise OutputError(f"{folder}: cannot write the cache there ({exc.strerror or exc}); "
                          "make it writable or give another cache folder") from exc
