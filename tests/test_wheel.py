"""The installable product: a wheel built from a clean copy of the repository, installed into a
fresh virtual environment outside the source tree, runs every entry point (slow: once in CI)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
import tomllib
import zipfile
from pathlib import Path

import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _clean_clone(target: Path) -> Path:
    """The files a fresh clone of the working tree would hold (tracked and not ignored), so no
    stale build/ or egg-info folder of the checkout can leak into the wheel."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO_ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO_ROOT / name
        if source.is_file():  # a tracked file another change deleted is not in a clone either
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def _fresh_venv(folder: Path) -> Path:
    """A new venv that reuses this environment's installed libraries (torch, Qt, ...) through a
    .pth line, without their download; ColorFlow itself is not in it. Returns its bin folder."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    # a plain path line: this environment's own .pth files (the editable install) are not run
    Path(site, "zz_reuse_libraries.pth").write_text("\n".join(sorted(ours)) + "\n")
    return folder / "bin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel, bin folder of the venv it is installed in, seconds each step took)."""
    root = tmp_path_factory.mktemp("wheel")
    seconds = {}
    start = time.perf_counter()
    clone = _clean_clone(root / "clone")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(root / "dist"), str(clone)], cwd=root, check=True)
    (wheel,) = (root / "dist").glob("colorflow_desktop-*.whl")
    seconds["build"] = time.perf_counter() - start
    start = time.perf_counter()
    bin_dir = _fresh_venv(root / "venv")
    subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--ignore-installed", str(wheel)], cwd=root, check=True)
    seconds["install"] = time.perf_counter() - start
    yield wheel, bin_dir, seconds
    shutil.rmtree(root, ignore_errors=True)


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(COLORFLOW_CACHE_DIR=str(tmp / "cache"), COLORFLOW_CONFIG_DIR=str(tmp / "config"),
               HF_HOME=str(tmp / "hf"), HF_HUB_OFFLINE="1", QT_QPA_PLATFORM="offscreen", PYTHONNOUSERSITE="1")
    return env


def test_the_wheel_holds_the_packages_and_every_resource_and_no_tests(installed):
    wheel, _bin, _seconds = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    resources = {f"colorflow_resources/{p.relative_to(REPO_ROOT / 'resources').as_posix()}"
                 for p in (REPO_ROOT / "resources").rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts}
    assert "colorflow_resources/models/presets.json" in resources and resources <= names
    sources = {p.relative_to(REPO_ROOT).as_posix() for package in ("engine", "app")
               for p in (REPO_ROOT / package).rglob("*.py") if "__pycache__" not in p.parts}
    assert sources <= names  # a subpackage without __init__.py would be missing
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"engine", "app", "colorflow_resources"}  # no tests/, training/, scripts/, main.py
    entry_points = next(zipfile.ZipFile(wheel).read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "colorflow = engine.cli.main:main" in entry_points and "colorflow-gui = app.launcher:main" in entry_points


def test_the_installed_commands_work_outside_the_source_tree(installed, tmp_path):
    _wheel, bin_dir, seconds = installed
    env, work = _env(tmp_path), tmp_path / "work"
    work.mkdir()

    def run(*command: str, timeout: int = 300) -> str:
        start = time.perf_counter()
        done = subprocess.run([str(c) for c in command], env=env, cwd=work, capture_output=True, text=True,
                              timeout=timeout)
        words = [Path(command[0]).name] + [str(c) for c in command[1:3] if not str(c).startswith("/")]
        seconds[" ".join(words)[:40]] = time.perf_counter() - start
        assert done.returncode == 0, f"{command}: {done.stderr[-3000:]}"
        return done.stdout

    where = run(bin_dir / "python", "-c", "import engine, app, colorflow_resources as r; "
                "print(engine.__file__); print(app.__file__); print(r.__file__)").split()
    venv = bin_dir.parent.resolve()
    assert all(Path(path).resolve().is_relative_to(venv) for path in where), where
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert run(bin_dir / "colorflow", "--version").strip() == f"colorflow {version}"
    listing = run(bin_dir / "colorflow", "models", "list")
    assert "official  0/" in listing and "CreativeML OpenRAIL-M" in listing
    run(bin_dir / "colorflow", "models", "make-tiny", tmp_path / "tiny")
    assert (tmp_path / "tiny" / "sd15" / "unet" / "config.json").is_file()
    assert (tmp_path / "tiny" / "colorflow" / "GraySD" / "config.json").is_file()
    run(bin_dir / "colorflow", "demo", tmp_path / "demo")
    out = tmp_path / "out"
    run(bin_dir / "colorflow", "colorize", tmp_path / "demo" / "chapter", "--refs", tmp_path / "demo" / "refs",
        "--out", out, "--models", "tiny", "--size", "256x384", "--steps", "1", "--format", "png")
    chapter_pages = sorted(p.name for p in (tmp_path / "demo" / "chapter").iterdir())
    assert len(sorted(out.glob("*.png"))) == len(chapter_pages) > 0
    shot = tmp_path / "window.png"
    run(bin_dir / "colorflow-gui", "--demo", "--screenshot", shot)
    lo, hi = Image.open(shot).convert("L").getextrema()
    assert hi - lo > 50  # a drawn window, not an empty image
    print("wheel test seconds:", {k: round(v, 1) for k, v in seconds.items()})
