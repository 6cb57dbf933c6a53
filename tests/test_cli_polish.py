"""CLI polish: `--out` naming a file, an unknown `--models` value, the README demo's folder, and
`--include-uncolored` with a page that cannot be read."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from engine.cli.main import main

REPO_ROOT = Path(__file__).resolve().parents[1]


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("command, advice", [("colorize", "name a folder or a NAME.cbz"), ("retrieve", "name a folder")])
def test_out_naming_an_existing_file_says_so_and_writes_nothing(one_page_chapter, tmp_path, capsys, command, advice):
    pages, refs = one_page_chapter
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    before = _tree(tmp_path)
    for out, blocker in ((taken, taken), (taken / "sub", taken)):  # the folder itself, or a folder above it
        code = main([command, str(pages), "--refs", str(refs), "--out", str(out), "--models", "tiny"])
        assert code == 2
        err = capsys.readouterr().err.strip()
        if out == blocker:
            assert err == f"colorflow: error: --out {out} is a file; {advice}"
        else:
            assert err == f"colorflow: error: --out {out}: {blocker} is a file; {advice}"
    assert _tree(tmp_path) == before and taken.read_text() == "mine"


@pytest.mark.parametrize("command, out_name", [("colorize", "out"), ("colorize", "ch.cbz"), ("retrieve", "out")])
def test_unknown_models_value_lists_the_choices_and_leaves_no_folder(one_page_chapter, tmp_path, monkeypatch, capsys,
                                                                     command, out_name):
    pages, refs = one_page_chapter
    monkeypatch.chdir(tmp_path)
    before = _tree(tmp_path)
    assert main([command, str(pages), "--refs", str(refs), "--out", str(tmp_path / out_name), "--models", "tinny"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("colorflow: error: --models ")
    assert "'official', 'tiny' or " in err and "models folder" in err and "did you mean 'tiny'" in err
    assert _tree(tmp_path) == before  # no empty OUT (nor OUT.colorflow) left behind
    not_models = tmp_path / "pages-of-something"  # a folder, but not in the models layout
    not_models.mkdir()
    assert main([command, str(pages), "--refs", str(refs), "--out", str(tmp_path / out_name),
                 "--models", str(not_models)]) == 2
    assert "not a ColorFlow models directory" in capsys.readouterr().err
    assert _tree(tmp_path) == sorted([*before, not_models.name])


def test_the_readme_demo_folder_is_ignored_by_git():
    git = shutil.which("git")
    if git is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert "colorflow demo demo && colorflow colorize demo/chapter --refs demo/refs --out demo/out " in readme
    for path in ("demo/chapter/1.png", "demo/refs/ref_01.png", "demo/out/chapter-colored.cbz"):
        assert subprocess.run([git, "check-ignore", "-q", path], cwd=REPO_ROOT).returncode == 0, path
    # only the README's folder at the top: a `demo` package or test data elsewhere stays tracked
    assert subprocess.run([git, "check-ignore", "-q", "engine/io/demo/x.py"], cwd=REPO_ROOT).returncode == 1


def test_include_uncolored_places_an_unreadable_page_as_a_placeholder_and_says_so(tiny_models_dir, tmp_path, capsys):
    chapter = tmp_path / "chapter"
    chapter.mkdir()
    Image.new("L", (256, 384), 200).save(chapter / "1.png")
    Image.new("L", (1, 1), 200).save(chapter / "2.png")  # decodes, but far too small to be a page
    Image.new("L", (256, 384), 90).save(chapter / "3.png")
    refs = tmp_path / "refs"
    refs.mkdir()
    Image.new("RGB", (256, 384), (200, 40, 40)).save(refs / "r.png")
    target = tmp_path / "ch.cbz"
    code = main(["colorize", str(chapter), "--refs", str(refs), "--out", str(target), "--models", str(tiny_models_dir),
                 "--steps", "1", "--size", "256x384", "--input-style", "gray", "--include-uncolored"])
    assert code == 1  # a page failed: the report lists it
    with zipfile.ZipFile(target) as archive:
        assert [n for n in archive.namelist() if n != "ComicInfo.xml"] == ["001_1.png", "002_2.png", "003_3.png"]
        assert Image.open(archive.open("002_2.png")).size == (256, 384)
    captured = capsys.readouterr()
    said = captured.out + captured.err
    [line] = [l for l in said.splitlines() if "placeholder" in l]
    assert "2.png" in line and "could not be read" in line
