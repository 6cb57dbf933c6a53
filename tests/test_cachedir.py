"""Capped disk caches: trimming removes the least recently used files first, a cache hit counts as a use."""

from __future__ import annotations

import os

from PIL import Image

from engine.io.cachedir import trim_cache
from engine.preprocess.page import PagePreparer
from engine.core.geometry import WorkSize


def _file(path, size, mtime):
    path.write_bytes(b"x" * size)
    os.utime(path, ns=(mtime, mtime))
    return path


def test_trim_removes_oldest_until_under_the_cap(tmp_path):
    old, mid, new = (_file(tmp_path / f"{n}.png", 100, t) for n, t in (("a", 1_000), ("b", 2_000), ("c", 3_000)))
    other = _file(tmp_path / "notes.txt", 1000, 0)  # not matched by the pattern: never touched
    assert trim_cache(tmp_path, 250, "*.png") == [old]  # 300 -> 200 bytes, one file is enough
    assert not old.exists() and mid.exists() and new.exists() and other.exists()
    assert trim_cache(tmp_path, 250, "*.png") == []  # already under the cap
    assert trim_cache(tmp_path, 0, "*.png") == [mid, new]


def test_a_cached_frame_that_is_read_survives_a_newer_unread_one(tmp_path):
    preparer = PagePreparer(None, tmp_path, memory_items=0, disk_limit_bytes=10**9)
    size = WorkSize(64, 64)
    frame = Image.effect_noise((96, 96), 64).convert("RGB")  # noise: ~9 KB as PNG, far above the tiny file
    first, second = preparer.key("a", size, "screen", "letterbox", 0), preparer.key("b", size, "screen", "letterbox", 0)
    preparer._store(first, frame)
    preparer._store(second, frame)
    os.utime(tmp_path / f"{first}.png", ns=(1_000, 1_000))
    os.utime(tmp_path / f"{second}.png", ns=(2_000, 2_000))
    assert preparer._cached(first) is not None  # a hit: now the most recently used
    one_file = (tmp_path / f"{first}.png").stat().st_size
    preparer.disk_limit_bytes = one_file + 1000  # room for it and the tiny new file, not for both frames
    preparer._store(preparer.key("c", size, "screen", "letterbox", 0), Image.new("RGB", (1, 1)))  # tiny file
    assert (tmp_path / f"{first}.png").exists()
    assert not (tmp_path / f"{second}.png").exists()
