"""Every fault stops cleanly: a folder turning read-only mid-run, a full disk at start, an output
inside the input, a cache path that is a file, Ctrl+C, hostile names, a bad seed, unusable
references: one clear line each, the lock released, nothing already made lost."""

from __future__ import annotations

import errno
import json
import os
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Callable

import pytest
from PIL import Image

from engine.cli.main import main
from engine.io.projectlock import LOCK_FILE
from engine.project.state import ChapterProject

# The smallest working size and one step: the tiny models color a page in well under a second.
FAST = ["--size", "256x256", "--input-style", "gray", "--device", "cpu"]
BIDI_AND_CONTROLS = {chr(c) for c in (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), 0x200E, 0x200F,
                                      *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029)}


def two_page_chapter(tmp_path: Path) -> tuple[Path, Path]:
    pages, refs = tmp_path / "pages", tmp_path / "refs"
    pages.mkdir()
    refs.mkdir()
    for name, value in (("1.png", 90), ("2.png", 200)):
        Image.new("L", (64, 64), value).save(pages / name)
    Image.new("RGB", (64, 64), (200, 20, 20)).save(refs / "r.png")
    return pages, refs


def colorize_args(pages: Path, refs: Path, out: Path, models: Path) -> list[str]:
    return ["colorize", str(pages), "--refs", str(refs), "--out", str(out), "--models", str(models),
            "--steps", "1", "--format", "png", *FAST]


def read_only_when(monkeypatch, folder: Path, turns: Callable[[str], bool]) -> None:
    """Once a file whose name makes `turns` true is renamed into `folder`, the folder is
    read-only: creating, renaming and removing files in it fail with EROFS, as on a share
    remounted read-only (chmod does not stop root, so the refusal is injected where files are made)."""
    real_replace, real_unlink, real_mkstemp = os.replace, os.unlink, tempfile.mkstemp
    read_only = [False]
    folder = str(folder)

    def inside(path) -> bool:
        return os.path.abspath(os.fspath(path)).startswith(folder + os.sep)

    def refuse(path):
        raise OSError(errno.EROFS, "Read-only file system", os.fspath(path))

    def replace(src, dst, **kwargs):
        if read_only[0] and inside(dst):
            refuse(dst)
        real_replace(src, dst, **kwargs)
        if inside(dst) and turns(os.path.basename(dst)):
            read_only[0] = True

    def unlink(path, **kwargs):
        if read_only[0] and inside(path):
            refuse(path)
        real_unlink(path, **kwargs)

    def mkstemp(*args, dir=None, prefix="tmp", suffix="", **kwargs):
        if read_only[0] and dir is not None and inside(Path(dir) / "x"):
            refuse(Path(dir) / f"{prefix}a1b2c3d4{suffix}")  # as os.open names the temp file
        return real_mkstemp(*args, dir=dir, prefix=prefix, suffix=suffix, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "unlink", unlink)
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_output_turning_read_only_mid_run_exits_1_with_the_report_and_frees_the_lock(
        tiny_models_dir, tmp_path, monkeypatch, capsys):
    pages, refs = two_page_chapter(tmp_path)
    out = tmp_path / "out"
    args = colorize_args(pages, refs, out, tiny_models_dir)

    def page_1_recorded(name: str) -> bool:  # page 1 written and the project saying so
        return name == "colorflow-project.json" and (out / "001_1.png").exists()

    with monkeypatch.context() as patch:
        read_only_when(patch, out, page_1_recorded)
        assert main(args) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    [line] = [l for l in captured.err.splitlines() if l.startswith("colorflow: error:")]  # one error, no second
    assert f"{out / '002_2.png'}: Read-only file system while writing page 2.png" in line  # the page, the path
    assert "make the folder writable" in line.lower() and "--resume" in line
    # the per-page report: page 1 colored, page 2 stopped
    assert f"1 page(s) colored into {out}; 1 failed" in captured.out
    assert any(l.startswith("  2.png: ") for l in captured.out.splitlines())
    assert (out / "001_1.png").is_file() and not (out / "002_2.png").exists()
    # a read-only folder keeps the lock file: said so, and the ended run's lock is taken over
    assert (out / LOCK_FILE).exists()
    [note] = [l for l in captured.err.splitlines() if LOCK_FILE in l]
    assert note.startswith("note: ") and "the next run takes it over" in note
    # the folder writable again: the lock this run held does not stand in the way; resume finishes
    assert main([*args, "--resume"]) == 0
    assert [p.status for p in ChapterProject.load(out).pages] == ["done", "done"]
    assert not (out / LOCK_FILE).exists()


def test_full_disk_at_start_names_the_path_gives_advice_and_leaves_no_lock(one_page_chapter, tmp_path,
                                                                          monkeypatch, capsys):
    pages, refs = one_page_chapter
    out = tmp_path / "out"

    def full(fd):  # a full disk: small writes land in the page cache, the flush fails
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", full)
        code = main(["colorize", str(pages), "--refs", str(refs), "--out", str(out),
                     "--models", "tiny"])  # a valid name (checked before OUT is made), never built: the disk stops it
    assert code == 2  # nothing ran: the output folder cannot be used, as a read-only one at start
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("colorflow: error: ")
    assert str(out) in err and "No space left on device" in err and "free some disk space" in err
    assert sorted(p.name for p in out.iterdir()) == []  # no lock, no temp file, no project file


@pytest.mark.parametrize("where", ["same", "inside", "deep inside"])
def test_out_in_the_input_folder_is_refused_before_anything_is_written(one_page_chapter, tmp_path, capsys, where):
    pages, refs = one_page_chapter
    out = {"same": pages, "inside": pages / "colored", "deep inside": pages / "a" / "b"}[where]
    before = sorted(p.relative_to(pages) for p in pages.rglob("*"))
    for command in ("colorize", "retrieve"):
        code = main([command, str(pages), "--refs", str(refs), "--out", str(out),
                     "--models", str(tmp_path / "no-models")])
        assert code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--out" in err and str(pages) in err
        assert "the input folder" in err
        assert sorted(p.relative_to(pages) for p in pages.rglob("*")) == before  # nothing made there


def test_a_project_folder_beside_the_chapter_is_fine(one_page_chapter, tmp_path, capsys):
    pages, refs = one_page_chapter
    out = pages.parent / f"{pages.name}.colorflow"
    assert main(["retrieve", str(pages), "--refs", str(refs), "--out", str(out),
                 "--models", str(tmp_path / "no-models")]) == 2
    assert "model directory does not exist" in capsys.readouterr().err  # past the input checks


def test_cache_dir_that_is_a_file_is_refused_before_models_load(one_page_chapter, tmp_path, capsys):
    pages, refs = one_page_chapter
    cache = tmp_path / "cache.txt"
    cache.write_text("not a folder")
    for command in ("colorize", "retrieve"):
        code = main([command, str(pages), "--refs", str(refs), "--out", str(tmp_path / "out"),
                     "--models", str(tmp_path / "no-models"), "--cache-dir", str(cache)])
        assert code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--cache-dir" in err and str(cache) in err
        assert "not a folder" in err
    assert cache.read_text() == "not a folder"


def test_ctrl_c_says_how_to_resume_and_what_is_kept(tiny_models_dir, tmp_path, monkeypatch, capsys):
    pages, refs = two_page_chapter(tmp_path)
    out = tmp_path / "out"
    args = colorize_args(pages, refs, out, tiny_models_dir)
    real_replace = os.replace

    def interrupted_after_page_1(src, dst, **kwargs):
        real_replace(src, dst, **kwargs)
        if os.path.basename(dst) == "colorflow-project.json" and (out / "001_1.png").exists():
            raise KeyboardInterrupt  # Ctrl+C right after page 1 is recorded

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", interrupted_after_page_1)
        assert main(args) == 130
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1] == (f"colorflow: interrupted; 1 of 2 page(s) done are kept in {out}: "
                                    "run the same command with --resume to continue")
    assert not (out / LOCK_FILE).exists()
    assert main([*args, "--resume"]) == 0
    assert json.loads((out / "colorflow-project.json").read_text())["pages"][1]["status"] == "done"


def test_printable_escapes_controls_and_bidi_overrides_only():
    from engine.core.errors import printable

    assert printable("a\u202eb\nc\x1b[31m\x85\u2066.png") == "a\\u202eb\\nc\\x1b[31m\\x85\\u2066.png"
    assert printable("ページ 1\\2 é.png") == "ページ 1\\2 é.png"  # letters and backslashes stay


def test_control_and_bidi_characters_in_names_are_escaped_in_every_line(tiny_models_dir, tmp_path, capsys):
    hostile = "ch/evil\u202egnp.exe\n\x1b[2Jx.png"
    archive = tmp_path / "chapter.cbz"
    page = tmp_path / "page.png"
    Image.new("L", (64, 64), 200).save(page)
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(page, "ch/1.png")
        zf.writestr(hostile, b"broken")
    refs = tmp_path / "refs"
    refs.mkdir()
    Image.new("RGB", (64, 64), (200, 20, 20)).save(refs / "r\u202e.png")
    Image.new("RGB", (64, 64), (20, 200, 20)).save(refs / "ok.png")
    (refs / "bad\u202e\n.png").write_bytes(b"broken")  # a reference warning names it too
    code = main(["retrieve", str(archive), "--refs", str(refs), "--out", str(tmp_path / "out"),
                 "--models", str(tiny_models_dir), *FAST])
    assert code == 1
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "evil\\u202egnp.exe\\n\\x1b[2Jx.png" in captured.out  # the report line, escaped
    assert "bad\\u202e\\n.png" in captured.err  # the warning line
    raw = {c for c in text if c in BIDI_AND_CONTROLS} - {"\n", "\r"}
    assert not raw, f"raw control or bidi characters printed: {sorted(map(hex, map(ord, raw)))}"
    # and no line break from a name: every line of the report is a known kind of line
    for line in captured.out.splitlines():
        assert line.startswith(("1 page(s) retrieved", "  ch/")), line


def test_retrieve_and_colorize_refuse_the_same_seeds(one_page_chapter, tmp_path, capsys):
    pages, refs = one_page_chapter
    for seed in ("-5", str(2**63)):
        messages = []
        for command in ("retrieve", "colorize"):
            code = main([command, str(pages), "--refs", str(refs), "--out", str(tmp_path / "out"),
                         "--models", str(tmp_path / "no-models"), "--seed", seed])
            assert code == 2
            messages.append(capsys.readouterr().err.strip())
        assert messages[0] == messages[1] == f"colorflow: error: --seed must be a non-negative integer, got {seed}"
    assert main(["retrieve", str(pages), "--refs", str(refs), "--out", str(tmp_path / "out"),
                 "--models", str(tmp_path / "no-models"), "--seed", str(2**63 - 1)]) == 2
    assert "model directory does not exist" in capsys.readouterr().err  # the largest seed passes


def png_claiming(width: int, height: int) -> bytes:
    """A PNG header that claims width x height pixels and holds none (an image bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@pytest.mark.parametrize("command", ["retrieve", "colorize"])
def test_each_unusable_reference_gets_one_warning_line(tiny_models_dir, tmp_path, capsys, command):
    pages, refs = two_page_chapter(tmp_path)
    (refs / "bomb.png").write_bytes(png_claiming(20_000, 20_000))  # 400 MP, above the 80 MP limit
    (refs / "damaged.png").write_bytes(png_claiming(64, 64)[:40])
    out = tmp_path / "out"
    args = [command, str(pages), "--refs", str(refs), "--out", str(out), "--models", str(tiny_models_dir),
            *FAST, "--json"]
    if command == "colorize":
        args += ["--steps", "1"]
    assert main(args) == 0
    captured = capsys.readouterr()
    warnings = [l for l in captured.err.splitlines() if "bomb.png" in l or "damaged.png" in l]
    assert len(warnings) == 2  # one line each, not one per page
    bomb = next(l for l in warnings if "bomb.png" in l)
    damaged = next(l for l in warnings if "damaged.png" in l)
    assert "20000x20000" in bomb and "limit" in bomb
    assert "damaged or truncated" in damaged or "not a readable image" in damaged
    report = json.loads(captured.out)  # and the JSON report keeps them
    assert len(report["warnings"]) == 2
    assert any("bomb.png" in w for w in report["warnings"]) and any("damaged.png" in w for w in report["warnings"])


def test_the_app_worker_escapes_names_in_the_messages_it_passes_on(qtbot):
    pytest.importorskip("PySide6")
    from engine.core.errors import PageDecodeError
    from engine.core.events import Notice, PageFailed
    from app.worker import EngineWorker

    hostile = "evil\u202egnp.exe\n.png"
    escaped = "evil\\u202egnp.exe\\n.png"

    def job(emit, _cancel):
        emit(PageFailed(hostile, f"{hostile}: not a readable image file"))
        emit(Notice(f"reference skipped: {hostile}: broken"))
        raise PageDecodeError(f"{hostile}: broken")

    worker = EngineWorker()
    got: dict = {}
    worker.page_failed.connect(lambda _job, page, reason: got.update(page=page, reason=reason))
    worker.notice.connect(lambda _job, text: got.update(notice=text))
    try:
        with qtbot.waitSignal(worker.job_failed, timeout=5000) as failed:
            worker.submit(job)
    finally:
        worker.shutdown()
    assert got["page"] == hostile  # the page's key in the job model stays the name itself
    assert got["reason"] == f"{escaped}: not a readable image file"
    assert got["notice"] == f"reference skipped: {escaped}: broken"
    assert failed.args[1] == f"{escaped}: broken"
