"""Tampering with a saved weight file the way a bad copy or a hostile edit would, for the model-record tests."""

from __future__ import annotations

import os
from pathlib import Path


def flip_byte_keeping_size_and_mtime(path: Path) -> None:
    """One bit of one tensor of a safetensors file (the header, so every shape, stays valid), then the
    modification time put back as it was: size and mtime as before, only the content (or ctime) can tell."""
    before = path.stat()
    data = bytearray(path.read_bytes())
    header = int.from_bytes(data[:8], "little")
    data[8 + header + (len(data) - 8 - header) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
