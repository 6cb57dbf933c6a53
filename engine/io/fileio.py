"""Atomic file writes: temp file in the same folder, fsync, then os.replace."""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

from PIL import Image


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


# The name mkstemp gives atomic_write's temp files: ".NAME.<8 random characters>.tmp".
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


# The subfolders ColorFlow writes in a project: page folders (naming.page_folder_name) and layered exports.
_OWN_SUBFOLDER = re.compile(r"^(\d{3,}_.+|layered)$")


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete temp files that atomic_write left in a project folder and its own subfolders (page
    folders, layered/) when its process was killed; other folders (the output folder may be a
    shared one) are left alone. Only call it holding the folder's lock: no write is in flight."""
    folder = Path(folder)
    removed = []
    own = (p for p in folder.iterdir() if _OWN_SUBFOLDER.match(p.name) and p.is_dir() and not p.is_symlink())
    for parent in [folder, *own]:
        for entry in parent.iterdir():
            if _TEMP_NAME.match(entry.name) and entry.is_file() and not entry.is_symlink():
                try:
                    entry.unlink()
                    removed.append(entry)
                except OSError:
                    pass  # read-only or gone: harmless, it is never read
    return removed


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write a file so that readers see either the old or the complete new content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); give it the permissions a plain open() would
        # (0666 minus the umask), so a comic server or NAS running as another user can read it.
        os.chmod(tmp_name, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(data))


def atomic_write_json(path: Path, payload: Any) -> None:
    text = json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_image(image: Image.Image, path: Path, format: str = "PNG") -> None:
    atomic_write(path, lambda handle: image.save(handle, format=format))
