"""Symlinks never move reads or writes outside the chosen folders, and every page keeps its own
name: pages of two inputs with the same file names are never mixed."""

from __future__ import annotations

import builtins
import io
import json
import os
import shutil
import stat
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.cli.main import main
from engine.core.errors import InputError, OutputError, PageDecodeError, ProjectFileError, UnsafeArchiveError
from engine.io.chapter import list_images, open_chapter
from engine.project.state import ChapterProject
from engine.project.store import PROJECT_FILE

# Gray levels of the pages of the two inputs, far enough apart to tell the pages apart by
# lightness after coloring (keep-ink, on by default, takes lightness from the page).
LEVELS = {("chA", "1.png"): 50, ("chB", "1.png"): 170}


@pytest.fixture
def opened(monkeypatch) -> list[Path]:
    """Every path opened through open()/io.open/os.open from now on, as given and as resolved
    (opening a symlink opens what it points to); an open that failed opened nothing."""
    seen: list[Path] = []
    real_open, real_os_open = builtins.open, os.open

    def note(file) -> None:
        if isinstance(file, (str, os.PathLike)):
            path = Path(os.fsdecode(file)).absolute()
            seen.extend([path, path.resolve()])

    def recording_open(file, *args, **kwargs):
        handle = real_open(file, *args, **kwargs)
        note(file)
        return handle

    def recording_os_open(file, *args, **kwargs):
        descriptor = real_os_open(file, *args, **kwargs)
        note(file)
        return descriptor

    monkeypatch.setattr(builtins, "open", recording_open)
    monkeypatch.setattr(io, "open", recording_open)
    monkeypatch.setattr(os, "open", recording_os_open)
    return seen


def _inside(paths: list[Path], folder: Path) -> list[Path]:
    return [p for p in paths if p == folder or folder in p.parents]


def _outside_files(tmp_path: Path) -> Path:
    """A folder outside every chapter and project: a secret text file and a real image."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("root:x:0:0:root:/root:/bin/bash\n")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(outside / "secret.png")
    return outside


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _gray(path: Path, level: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (64, 64), level).save(path)


# --- file symlinks in chapter and reference folders ------------------------------------------


@pytest.mark.parametrize("where", ["chapter", "refs"])
def test_a_file_symlink_leading_outside_is_refused_and_never_read(tiny_models_dir, tmp_path, capsys, opened, where):
    """The reported hole: `2.png -> /etc/passwd`-like and `3.png -> outside image` in a folder
    were read, colored and packed. Now the run is refused before anything is read or loaded."""
    outside = _outside_files(tmp_path)
    chapter, refs, out = tmp_path / "chapter", tmp_path / "refs", tmp_path / "out"
    _gray(chapter / "1.png", 200)
    refs.mkdir()
    Image.new("RGB", (64, 64), (200, 20, 20)).save(refs / "r.png")
    folder = chapter if where == "chapter" else refs
    (folder / "2.png").symlink_to(outside / "secret.txt")
    (folder / "3.png").symlink_to(outside / "secret.png")
    opened.clear()
    code = main(["colorize", str(chapter), "--refs", str(refs), "--out", str(out), "--models", str(tiny_models_dir),
                 "--steps", "1", "--size", "256x256", "--input-style", "gray", "--format", "cbz"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("colorflow: error: ")
    assert f"{folder / '2.png'}" in err and str(outside / "secret.txt") in err and "symbolic link" in err
    assert _inside(opened, outside) == []
    assert not out.exists() or not list(out.glob("*.cbz"))


def test_a_file_symlink_inside_the_folder_is_followed(tmp_path):
    """A link that stays inside the chapter folder is harmless and still read, under its own name."""
    chapter = tmp_path / "chapter"
    _gray(chapter / "a.png", 50)
    _gray(chapter / "sub" / "c.png", 90)
    (chapter / "b.png").symlink_to("a.png")
    (chapter / "d.png").symlink_to(Path("sub") / "c.png")
    opened_chapter = open_chapter([chapter])
    assert opened_chapter.page_names == ["a.png", "b.png", "d.png", "sub/c.png"]
    assert opened_chapter.errors == {}
    levels = [int(np.asarray(opened_chapter.load_page(i).image).mean()) for i in range(4)]
    assert levels == [50, 50, 90, 90]


def test_a_page_swapped_for_a_symlink_after_listing_is_not_read(tmp_path, opened):
    """Reading never follows a link that replaced a page after the chapter was listed."""
    outside = _outside_files(tmp_path)
    chapter = tmp_path / "chapter"
    _gray(chapter / "1.png", 200)
    opened_chapter = open_chapter([chapter], check=False)
    (chapter / "1.png").unlink()
    (chapter / "1.png").symlink_to(outside / "secret.png")
    opened.clear()
    with pytest.raises(PageDecodeError, match=r"1\.png.*symbolic link"):
        opened_chapter.load_page(0)
    assert _inside(opened, outside) == []


def test_an_archive_symlink_member_is_refused(tmp_path):
    """SECURITY.md says archive symlinks are refused: a member whose mode says symlink is."""
    cbz = tmp_path / "chapter.cbz"
    buffer = io.BytesIO()
    Image.new("L", (64, 64), 200).save(buffer, format="PNG")
    with zipfile.ZipFile(cbz, "w") as archive:
        archive.writestr("1.png", buffer.getvalue())
        link = zipfile.ZipInfo("2.png")
        link.create_system = 3  # Unix: the high 16 bits of external_attr are st_mode
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match=r"chapter\.cbz.*'2\.png'.*symbolic link"):
        list_images([cbz])


# --- folders the project writes into ---------------------------------------------------------


@pytest.fixture(scope="module")
def colored_two_inputs(tmp_path_factory, tiny_models_dir):
    """Two chapter folders that both hold 1.png, colored into one project with --format cbz:
    (args of the run, its --json report, the project folder)."""
    root = tmp_path_factory.mktemp("two-inputs")
    for (folder, name), level in LEVELS.items():
        _gray(root / folder / name, level)
    Image.new("RGB", (64, 64), (200, 20, 20)).save(root / "r.png")
    out = root / "out"
    args = ["colorize", str(root / "chA"), str(root / "chB"), "--refs", str(root / "r.png"), "--out", str(out),
            "--models", str(tiny_models_dir), "--steps", "1", "--size", "256x256", "--input-style", "gray", "--json",
            "--cache-dir", str(root / "cache")]
    with pytest.MonkeyPatch.context() as patch:  # the autouse per-test isolation does not reach module fixtures
        patch.setenv("COLORFLOW_CACHE_DIR", str(root / "user-cache"))
        patch.setenv("COLORFLOW_CONFIG_DIR", str(root / "user-config"))
        stdout = io.StringIO()
        patch.setattr("sys.stdout", stdout)
        code = main([*args, "--format", "cbz"])
    assert code == 0
    return args, json.loads(stdout.getvalue()), out


def _copy_project(out: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "out"
    shutil.copytree(out, copy, symlinks=True)
    return copy


def _with_out(args: list[str], out: Path) -> list[str]:
    at = args.index("--out")
    return [*args[: at + 1], str(out), *args[at + 2:]]


def test_two_inputs_with_the_same_page_names_give_every_page_once(colored_two_inputs, tmp_path, capsys):
    """The reported mix-up: the CBZ held chB's pages twice and none of chA's; --resume redid all."""
    args, report, out = colored_two_inputs
    expected = [f"{folder}/{name}" for folder, name in LEVELS]
    assert report["done"] == expected and report["failed"] == {}
    [cbz] = report["exports"]
    with zipfile.ZipFile(cbz) as archive:
        pages = sorted(n for n in archive.namelist() if n.endswith(".png"))
        assert len(pages) == len(LEVELS)
        levels = [np.asarray(Image.open(io.BytesIO(archive.read(n))).convert("L"), dtype=float).mean() for n in pages]
    for level, expected_level in zip(levels, LEVELS.values()):
        assert abs(level - expected_level) < 15, levels
    project = json.loads((out / PROJECT_FILE).read_text())
    assert [(p["name"], Path(p["source"]).parent.name) for p in project["pages"]] == [
        (f"{folder}/{name}", folder) for folder, name in LEVELS]
    assert len({p["outputs"]["colored"] for p in project["pages"]}) == len(LEVELS)

    copy = _copy_project(out, tmp_path)
    assert main([*_with_out(args, copy), "--resume"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["done"] == [] and again["skipped"] == expected


def test_a_symlinked_layered_folder_is_refused_and_nothing_outside_changes(colored_two_inputs, tmp_path, capsys):
    """The reported hole: `layered -> elsewhere` in a shared project sent PSD/ORA exports there,
    overwriting a file with a matching name, exit 0."""
    args, _, out = colored_two_inputs
    copy = _copy_project(out, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("001_1.psd", "002_1.psd", "001_1.ora", "002_1.ora"):
        (elsewhere / name).write_bytes(f"precious {name}\n".encode())
    before = _snapshot(elsewhere)
    (copy / "layered").symlink_to(elsewhere, target_is_directory=True)
    for fmt in ("psd", "ora"):
        code = main([*_with_out(args, copy), "--resume", "--format", fmt])
        err = capsys.readouterr().err
        assert code == 2, err
        assert str(copy / "layered") in err and "symbolic link" in err
        assert _snapshot(elsewhere) == before


def test_a_symlinked_page_folder_is_refused(tiny_models_dir, one_page_chapter, tmp_path, capsys):
    """`retrieve` writes NNN_name/ page folders: one that is a link to a folder elsewhere is
    refused for that page, naming it, and nothing there changes."""
    pages, refs = one_page_chapter
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (elsewhere / "canvas.png").write_bytes(b"precious canvas\n")
    (out / "001_1").symlink_to(elsewhere, target_is_directory=True)
    code = main(["retrieve", str(pages), "--refs", str(refs), "--out", str(out), "--models", str(tiny_models_dir),
                 "--size", "256x256", "--input-style", "gray", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1
    assert str(out / "001_1") in report["failed"]["1.png"] and "symbolic link" in report["failed"]["1.png"]
    assert _snapshot(elsewhere) == {"canvas.png": b"precious canvas\n"}


def test_a_symlinked_project_folder_chosen_by_the_app_is_refused(tmp_path):
    """The GUI keeps a chapter's project in `<chapter>.colorflow` beside it: a link there (as a
    shared folder of chapters can carry) would send the project, lock and outputs elsewhere."""
    from app.document import ChapterDocument

    chapter, elsewhere = tmp_path / "chapter", tmp_path / "elsewhere"
    _gray(chapter / "1.png", 200)
    elsewhere.mkdir()
    (tmp_path / "chapter.colorflow").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(OutputError, match="chapter.colorflow.*symbolic link"):
        ChapterDocument.open(chapter)
    assert list(elsewhere.iterdir()) == []


# --- symlinked files in a project: messages that name the link -------------------------------


def _project_with_one_done_page(tmp_path: Path) -> Path:
    pages, out = tmp_path / "chapter", tmp_path / "out"
    _gray(pages / "1.png", 200)
    chapter = open_chapter([pages])
    project = ChapterProject(folder=out, inputs=[str(pages)])
    project.sync_pages([(s.name, s.ref) for s in chapter.sources])
    out.mkdir()
    Image.new("RGB", (64, 64), (200, 0, 0)).save(out / "001_1.png")
    project.record_outputs("1.png", {"colored": "001_1.png"}, "done", "k")
    project.save()
    project.save()  # a .bak exists, recording the same output
    return out


def test_a_symlinked_output_file_is_named_with_advice_that_works(tmp_path):
    """Restoring the .bak (the old advice) cannot help: it records the same output. The message
    names the link and says to remove it."""
    outside = _outside_files(tmp_path)
    out = _project_with_one_done_page(tmp_path)
    (out / "001_1.png").unlink()
    (out / "001_1.png").symlink_to(outside / "secret.png")
    with pytest.raises(ProjectFileError) as caught:
        ChapterProject.load(out)
    message = str(caught.value)
    assert f"{out / '001_1.png'} is a symbolic link" in message and str(outside / "secret.png") in message
    assert ".bak" not in message and "remove" in message and "\n" not in message


def test_a_symlinked_project_file_is_refused_unread(tmp_path, opened):
    """colorflow-project.json as a link to a file elsewhere was read through (any file the
    link named); it is refused, naming the link, and what it points to is never opened."""
    out = _project_with_one_done_page(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / PROJECT_FILE).rename(elsewhere / PROJECT_FILE)
    (out / PROJECT_FILE).symlink_to(elsewhere / PROJECT_FILE)
    opened.clear()
    with pytest.raises(ProjectFileError) as caught:
        ChapterProject.load(out)
    message = str(caught.value)
    assert f"{out / PROJECT_FILE} is a symbolic link" in message and str(elsewhere / PROJECT_FILE) in message
    assert ".bak" not in message.replace(str(out / PROJECT_FILE), "")
    assert _inside(opened, elsewhere) == []


# --- unique page identity -------------------------------------------------------------------


def test_single_inputs_and_inputs_without_clashes_keep_todays_names(tmp_path):
    """Existing projects resume unchanged: names are what they always were unless they clash."""
    chapter, other = tmp_path / "chapter", tmp_path / "other"
    for name in ("10.png", "2.png", "sub/1.png"):
        _gray(chapter / name, 100)
    _gray(other / "3.png", 100)
    cbz = tmp_path / "vol.cbz"
    with zipfile.ZipFile(cbz, "w") as archive:
        for name in ("p10.png", "p9.png", "A.png", "a.png"):
            archive.writestr(name, (chapter / "2.png").read_bytes())
    assert [s.name for s in list_images([chapter])] == ["2.png", "10.png", "sub/1.png"]
    assert [s.name for s in list_images([cbz])] == ["A.png", "a.png", "p9.png", "p10.png"]
    assert [s.name for s in list_images([chapter, other])] == ["2.png", "10.png", "sub/1.png", "3.png"]
    # A project saved by an earlier version keeps its done page when the chapter is opened again.
    out = tmp_path / "out"
    out.mkdir()
    (out / "001_2.png").write_bytes((chapter / "2.png").read_bytes())
    (out / PROJECT_FILE).write_text(json.dumps({
        "format": "colorflow-project", "version": 2, "inputs": [str(chapter)],
        "pages": [{"name": "2.png", "source": str(chapter / "2.png"), "status": "done",
                   "outputs": {"colored": "001_2.png"}, "settings_key": "k"}]}))
    project = ChapterProject.load(out)
    project.sync_pages([(s.name, s.ref) for s in open_chapter([chapter]).sources])
    assert (project.pages[0].status, project.pages[0].outputs) == ("done", {"colored": "001_2.png"})


def test_clashing_names_across_inputs_are_prefixed_by_their_input(tmp_path):
    chA, chB, loose = tmp_path / "chA", tmp_path / "chB", tmp_path / "loose"
    _gray(chA / "1.png", 10)
    _gray(chA / "2.png", 20)
    _gray(chB / "1.PNG", 30)  # the same page name to a person and to a case-insensitive disk
    _gray(loose / "9.png", 40)
    names = [s.name for s in list_images([chA, chB, loose / "9.png"])]
    assert names == ["chA/1.png", "chA/2.png", "chB/1.PNG", "loose/9.png"]


def test_pages_that_still_share_a_name_are_refused_in_one_line(tmp_path):
    one, two = tmp_path / "x" / "ch", tmp_path / "y" / "ch"
    _gray(one / "1.png", 10)
    _gray(two / "1.png", 20)
    _gray(two / "2.png", 20)
    with pytest.raises(InputError) as caught:
        list_images([one, two])
    message = str(caught.value)
    assert "'ch/1.png'" in message and str(one) in message and str(two) in message and "\n" not in message
    assert "ch/2.png" not in message
    with pytest.raises(InputError, match="'ch/1.png'"):
        list_images([one, one])  # the same folder given twice


def test_an_archive_with_a_duplicated_member_is_refused_in_one_line(tiny_models_dir, tmp_path, capsys):
    """Only the last of two members named 1.png was ever read; the chapter is refused instead,
    before any model loads."""
    cbz = tmp_path / "chapter.cbz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate it is asked to write
        with zipfile.ZipFile(cbz, "w") as archive:
            for level in (60, 180):
                buffer = io.BytesIO()
                Image.new("L", (64, 64), level).save(buffer, format="PNG")
                archive.writestr("1.png", buffer.getvalue())
    refs = tmp_path / "r.png"
    Image.new("RGB", (64, 64), (200, 20, 20)).save(refs)
    code = main(["colorize", str(cbz), "--refs", str(refs), "--out", str(tmp_path / "out"),
                 "--models", str(tiny_models_dir), "--steps", "1", "--size", "256x256"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and str(cbz) in err and "'1.png'" in err and "2 members" in err
