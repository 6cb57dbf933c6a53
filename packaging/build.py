"""Build the desktop bundle with PyInstaller; prints the build time and the bundle size."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPEC = HERE / "colorflow.spec"
APP_NAME = "ColorFlow"


def tree_size(folder: Path) -> int:
    """Bytes of the regular files under folder (symlinks not followed, counted once)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = Path(root, name)
            if not path.is_symlink():
                total += path.stat().st_size
    return total


def largest_parts(bundle: Path, count: int = 8) -> list[tuple[str, int]]:
    """The biggest top-level entries of the bundle's library folder (where the size goes)."""
    internal = bundle / "_internal" if (bundle / "_internal").is_dir() else bundle
    parts = []
    for entry in internal.iterdir():
        size = tree_size(entry) if entry.is_dir() else (0 if entry.is_symlink() else entry.stat().st_size)
        parts.append((entry.name, size))
    return sorted(parts, key=lambda item: -item[1])[:count]


def start_build(dist: Path, work: Path, clean: bool = False, quiet: bool = True, trim: bool = True,
                **popen) -> subprocess.Popen:
    """Start PyInstaller on colorflow.spec in the background (the test suite overlaps the build
    with its other tests); `finish_build` waits for it. `popen` goes to subprocess.Popen."""
    if not trim:  # read by the spec: measure the bundle without excludes and dropped files
        os.environ["COLORFLOW_NO_EXCLUDES"] = "1"
    command = [sys.executable, "-m", "PyInstaller", str(SPEC), "--noconfirm",
               "--distpath", str(dist), "--workpath", str(work)]
    if clean:
        command.append("--clean")
    if quiet:
        command += ["--log-level", "WARN"]
    return subprocess.Popen(command, **popen)


def finish_build(process: subprocess.Popen, dist: Path) -> Path:
    """Wait for a build started by `start_build`; returns dist/ColorFlow (the one-folder bundle)."""
    if process.wait() != 0:
        raise subprocess.CalledProcessError(process.returncode, process.args)
    return dist / APP_NAME


def build(dist: Path, work: Path, clean: bool = False, quiet: bool = True, trim: bool = True) -> Path:
    """Run PyInstaller on colorflow.spec; returns dist/ColorFlow (the one-folder bundle)."""
    return finish_build(start_build(dist, work, clean, quiet, trim), dist)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dist", type=Path, default=HERE.parent / "dist", help="output folder (default: dist/)")
    parser.add_argument("--work", type=Path, default=HERE.parent / "build", help="PyInstaller work folder (default: build/)")
    parser.add_argument("--clean", action="store_true", help="empty PyInstaller's caches first")
    parser.add_argument("--verbose", action="store_true", help="PyInstaller's INFO log")
    parser.add_argument("--no-excludes", action="store_true",
                        help="keep everything the hooks find (only to measure what the excludes save)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    bundle = build(args.dist.resolve(), args.work.resolve(), clean=args.clean, quiet=not args.verbose,
                   trim=not args.no_excludes)
    elapsed = time.perf_counter() - start
    size = tree_size(bundle)
    print(f"built {bundle} in {elapsed:.0f} s; bundle size {size / 2**20:.0f} MiB")
    for name, part in largest_parts(bundle):
        print(f"  {part / 2**20:8.1f} MiB  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
