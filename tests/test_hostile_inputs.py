"""Every reader refuses every hostile file (tests/hostile_files.py) in one line naming its real format, and never starts a program.

Future formats and readers must pass this: a format is one line in `hostile_files.HOSTILE_FILES`,
a reader one entry in `READERS` (the file's path in, whether it was accepted and the refusal
text, if the reader gives one, out).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from PIL import EpsImagePlugin, Image

from hostile_files import HOSTILE_FILES, HostileFile

REPO_ROOT = Path(__file__).resolve().parents[1]
GOOD_SIZE = (64, 96)  # the size of the generator's decodable pages


@pytest.fixture
def no_programs(monkeypatch, tmp_path):
    """Record and fail every attempt to start a program, by any route Python offers; a stand-in
    `gs` first on PATH (Pillow finds Ghostscript there) writes `ran-gs` if something still runs it."""
    started: list[str] = []

    def refuse(route):
        def fail(*args, **kwargs):
            started.append(f"{route} {args[1] if route == 'subprocess' else args}")  # [1]: the command line
            raise AssertionError(f"a program was started while reading a hostile file: {started[-1]}")
        return fail

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse("subprocess"))
    for name in ("system", "posix_spawn", "posix_spawnp", "fork", "forkpty", "execv", "execve", "execvp", "execvpe"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse(f"os.{name}"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "gs"
    stand_in.write_text(f"#!/bin/sh\necho \"$@\" > '{tmp_path / 'ran-gs'}'\n")
    stand_in.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)  # Pillow caches its Ghostscript lookup: look again
    yield started
    assert started == []
    assert not (tmp_path / "ran-gs").exists()


def _good_page(path: Path, color=(200, 200, 200)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", GOOD_SIZE, color).save(path)
    return path


# --- readers: path -> (accepted, refusal text or None where the reader shows none) ---------------

def _chapter_page(path: Path, request) -> tuple[bool, str | None]:
    from engine.io.chapter import open_chapter

    chapter = open_chapter(path.parent)
    reason = chapter.errors.get(str(path))
    return reason is None, reason


def _reference(path: Path, request) -> tuple[bool, str | None]:
    from engine.core.errors import PageDecodeError
    from engine.io.chapter import list_images, load_image

    (source,) = list_images([path])
    try:
        load_image(source, "RGB")
    except PageDecodeError as exc:
        return False, str(exc)
    return True, None


def _cli_retrieve(path: Path, request) -> tuple[bool, str | None]:
    """`colorflow retrieve` with the file as a page beside a good one, and as a reference beside a good one."""
    from engine.cli.main import main

    capsys = request.getfixturevalue("capsys")
    models = request.getfixturevalue("tiny_models_dir")
    _good_page(path.parent / "0.png")
    ref = _good_page(path.parent.parent / "refs" / "r.png", (200, 20, 20))
    out = path.parent.parent / "out"
    code = main(["retrieve", str(path.parent), "--refs", str(ref), str(path), "--out", str(out),
                 "--models", str(models), "--input-style", "gray", "--json"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    report = json.loads(captured.out)
    assert "0.png" in report["done"]  # the good page still finishes
    assert code == (1 if report["failed"] else 0)
    refusal = report["failed"].get(path.name)
    good_page = next(p for p in report["pages"] if p["page"] == "0.png")
    warnings = json.loads((out / good_page["outputs"]["retrieval"]).read_text())["warnings"]
    # as a reference the file is skipped with the same refusal, or used like any image
    assert [w for w in warnings if path.name in w] == ([f"reference skipped: {refusal}"] if refusal else [])
    return path.name in report["done"], refusal


def _evaluation(path: Path, request) -> tuple[bool, str | None]:
    from engine.core.errors import InputError
    from engine.evaluation.folders import evaluate_folders

    gt = _good_page(path.parent.parent / "gt" / f"{path.stem}.png")
    try:
        evaluate_folders(path.parent, gt.parent, metrics="psnr")
    except InputError as exc:
        return False, str(exc)
    return True, None


def _gui_display(path: Path, request) -> tuple[bool, str | None]:
    """The window's page and result views (they show the page's refusal from the chapter check)."""
    pytest.importorskip("PySide6")
    request.getfixturevalue("qapp")
    from app.images import image_pixmap

    return image_pixmap(path) is not None, None


READERS = {
    "chapter-page": _chapter_page,
    "reference": _reference,
    "cli-retrieve": _cli_retrieve,
    "evaluation": _evaluation,
    "gui-display": _gui_display,
}


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("hostile", HOSTILE_FILES, ids=lambda h: h.key)
def test_hostile_file_is_refused_in_one_line_and_runs_no_program(
    hostile: HostileFile, reader, tmp_path, request, no_programs
):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "chapter" / hostile.filename
    path.parent.mkdir()
    path.write_bytes(hostile.make(marker))

    accepted, refusal = READERS[reader](path, request)

    assert no_programs == [] and not marker.exists()
    if hostile.expect is None:
        assert accepted, f"{hostile.key} is a valid image and should decode"
        return
    assert not accepted, f"{reader} accepted the {hostile.key} file"
    if refusal is not None:
        assert "\n" not in refusal.strip() and hostile.filename in refusal
        said = refusal.replace(hostile.filename, "").lower()  # "9.png" must not pass for naming PNG
        for word in hostile.expect:
            assert word.lower() in said, refusal
        assert "decompression bomb" not in refusal  # our limit and words, not Pillow's


@pytest.mark.parametrize("hostile", [h for h in HOSTILE_FILES if h.pillow_format], ids=lambda h: h.key)
def test_each_disguised_file_is_one_pillow_would_take(hostile: HostileFile, tmp_path, no_programs):
    """The refusals above are not vacuous: Pillow's own plugin for the real format opens each file
    (header only: for EPS the program would start at load)."""
    path = tmp_path / hostile.filename
    path.write_bytes(hostile.make(tmp_path / "payload-ran"))
    with Image.open(path, formats=[hostile.pillow_format]) as image:
        assert image.format == hostile.pillow_format


SAFE_DECODER = "engine/io/imaging.py"
UNSAFE_OPENERS = re.compile(r"\bImage\.open\(|QImageReader|QImage\(\s*str\(|QPixmap\(\s*str\(|loadFromData\(")


def test_only_the_safe_decoder_opens_image_files():
    """Every image the engine, the GUI and the scripts open goes through engine/io/imaging.py
    (its format allowlist and pixel limit); Pillow's and Qt's own format guessing is never used."""
    offenders = []
    for folder in ("engine", "app", "scripts"):
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            relative = path.relative_to(REPO_ROOT).as_posix()
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if UNSAFE_OPENERS.search(line) and relative != SAFE_DECODER:
                    offenders.append(f"{relative}:{number}: {line.strip()}")
    assert offenders == []
