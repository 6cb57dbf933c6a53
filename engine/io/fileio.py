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

from engine.core.errors import OutputError


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


def refuse_symlink(path: Path) -> None:
    """OutputError naming `path` if it is a symbolic link: ColorFlow writes nothing through a link
    inside a project folder (a shared folder can carry `layered -> elsewhere`)."""
    if os.path.islink(path):
        raise OutputError(
            f"{path} is a symbolic link (to {os.readlink(path)}); ColorFlow does not write through links "
            "in a project folder: remove the link (what it points to is not touched) and run again")


def ensure_real_folder(folder: Path, root: Path) -> Path:
    """`folder`, made if missing, after checking that neither it nor any folder between it and
    `root` is a symbolic link (`refuse_symlink`). `root` itself is where the user chose to work."""
    folder, root = Path(folder), Path(root)
    current = root
    for part in folder.relative_to(root).parts:
        current = current / part
        refuse_symlink(current)
        current.mkdir(exist_ok=True)
    return folder


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], None], root: Path | None = None) -> None:
    """Write a file so that readers see either the old or the complete new content. The file
    itself is replaced, never followed if it is a link; with `root` (the project folder), its
    folders below `root` must not be links either (`ensure_real_folder`)."""
    path = Path(path)
    if root is not None:
        ensure_real_folder(path.parent, root)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        exc.filename = str(path)  # not the random temp name: the file being written
        raise
    try:
        # mkstemp makes the file private (0600); give it the permissions a plain open() would
        # (0666 minus the umask), so a comic server or NAS running as another user can read it.
        os.chmod(tmp_name, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException as exc:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass  # gone, or the folder turned read-only: the first error is the one to tell
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # a failed write or fsync names no file: say which
        raise


def make_temp_folder(parent: Path, prefix: str) -> Path:
    """A new empty folder in `parent` to fill and rename into place, with the permissions a plain
    mkdir gives (0777 minus the umask) rather than mkdtemp's private 0700, like atomic_write's files."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(folder, 0o777 & ~current_umask())
    return folder


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(data))


def atomic_write_json(path: Path, payload: Any) -> None:
    # allow_nan=False: NaN and infinities are not JSON; json.dumps would write them as bare words
    text = json.dumps(payload, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_image(image: Image.Image, path: Path, format: str = "PNG") -> None:
    atomic_write(path, lambda handle: image.save(handle, format=format))
