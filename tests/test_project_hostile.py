"""A project file sent by a colleague is untrusted: outputs leading outside the project folder
and pages that are not the chapter's own are refused or dropped, and nothing outside is opened."""

from __future__ import annotations

import builtins
import io
import json
import os
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from engine.cli.main import main
from engine.core.errors import ProjectFileError
from engine.project.state import ChapterProject
from engine.project.store import PROJECT_FILE

ESCAPES = ["../outside/secret.png", "../../../../etc/passwd"]


@pytest.fixture
def opened(monkeypatch) -> list[Path]:
    """Every path opened for reading or writing through open()/io.open/os.open from now on (PIL,
    pathlib and the engine all open files through these; page files are opened with os.open)."""
    seen: list[Path] = []
    real_open, real_os_open = builtins.open, os.open

    def recording_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)):
            seen.append(Path(os.fsdecode(file)).absolute())
        return real_open(file, *args, **kwargs)

    def recording_os_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)):
            seen.append(Path(os.fsdecode(file)).absolute())
        return real_os_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", recording_open)
    monkeypatch.setattr(io, "open", recording_open)
    monkeypatch.setattr(os, "open", recording_os_open)
    return seen


def _outside_secret(tmp_path: Path) -> Path:
    """A real PNG outside the project folder: if anything opened it, a CBZ would carry it."""
    secret = tmp_path / "outside" / "secret.png"
    secret.parent.mkdir()
    Image.new("RGB", (40, 60), (1, 2, 3)).save(secret)
    return secret


def _edit_project(out: Path, edit) -> bytes:
    """Edit the project file by hand, as a colleague would before sending it; its new bytes."""
    data = json.loads((out / PROJECT_FILE).read_text())
    edit(data)
    raw = (json.dumps(data, indent=1) + "\n").encode()
    (out / PROJECT_FILE).write_bytes(raw)
    return raw


def _touches(opened: list[Path], *forbidden: Path) -> list[Path]:
    """Opened paths inside the forbidden folders or /etc/passwd (the recorder is alive: it saw
    the project file being read)."""
    assert any(p.name == PROJECT_FILE for p in opened), opened
    return [p for p in opened if any(p == f or f in p.parents for f in forbidden) or str(p) == "/etc/passwd"]


@pytest.mark.parametrize("escape", ESCAPES)
def test_resume_export_refuses_an_output_leading_outside_and_opens_nothing_there(
        tiny_models_dir, tmp_path, capsys, opened, escape):
    """The reported attack: a finished project whose page output was edited to point outside,
    then `colorize --resume --format cbz`. It used to pack the outside file into the CBZ and
    exit 0; now it is exit 2 naming the entry, no CBZ, the file left as sent."""
    from engine.io.demo import make_demo_chapter

    chapter, refs = make_demo_chapter(tmp_path / "data", pages=2, refs=1)
    out = tmp_path / "out"
    secret = _outside_secret(tmp_path)
    args = ["colorize", str(chapter), "--refs", str(refs), "--out", str(out), "--models", str(tiny_models_dir),
            "--steps", "1", "--size", "256x384", "--input-style", "gray", "--json"]
    assert main(args) == 0
    capsys.readouterr()

    def point_outside(data):
        assert data["pages"][0]["status"] == "done"
        data["pages"][0]["outputs"]["colored"] = escape

    sent = _edit_project(out, point_outside)
    opened.clear()
    assert main([*args, "--resume", "--format", "cbz"]) == 2
    err = capsys.readouterr().err
    assert "pages[0].outputs.colored" in err and "'1.png'" in err and escape in err
    assert str(out / PROJECT_FILE) in err
    assert not list(out.glob("*.cbz"))
    assert (out / PROJECT_FILE).read_bytes() == sent  # never overwritten
    assert not (out / ".colorflow.lock").exists()  # the lock went with the refused run
    assert _touches(opened, secret.parent) == []


def test_a_symlinked_output_leading_outside_is_refused_on_load_and_on_export(tmp_path, opened):
    """An output name that is harmless as text but a symlink to a file outside (as an unpacked
    project folder can carry) is refused when the project loads, and again if it appears after."""
    from engine.io.export import export_project
    from engine.io.chapter import open_chapter

    pages = tmp_path / "chapter"
    pages.mkdir()
    Image.new("L", (40, 60), 200).save(pages / "1.png")
    secret = _outside_secret(tmp_path)
    out = tmp_path / "out"
    chapter = open_chapter([str(pages)])
    project = ChapterProject(folder=out, inputs=[str(pages)])
    project.sync_pages([(s.name, s.ref) for s in chapter.sources])
    out.mkdir()
    Image.new("RGB", (40, 60), (200, 0, 0)).save(out / "001_1.png")
    project.record_outputs("1.png", {"colored": out / "001_1.png"}, "done", "k")
    project.save()
    assert json.loads((out / PROJECT_FILE).read_text())["pages"][0]["outputs"] == {"colored": "001_1.png"}

    (out / "001_1.png").unlink()
    (out / "001_1.png").symlink_to(secret)  # created after the project was loaded
    opened.clear()
    with pytest.raises(ProjectFileError, match=r"page '1.png' outputs.colored: '001_1.png' leads to .*outside"):
        export_project(project, chapter, "cbz")
    with pytest.raises(ProjectFileError, match=r"pages\[0\].outputs.colored \(page '1.png'\).*outside the project"):
        ChapterProject.load(out)
    assert not list(out.glob("*.cbz"))
    assert _touches(opened, secret.parent) == []


def _one_page_chapter_and_outside_secret(tmp_path):
    """(chapter folder with page 1.png, a secret file outside every project folder, an empty project folder)."""
    pages = tmp_path / "chapter"
    pages.mkdir()
    Image.new("L", (40, 60), 200).save(pages / "1.png")
    out = tmp_path / "out"
    out.mkdir()
    return pages, _outside_secret(tmp_path), out


@pytest.mark.parametrize("escape", ESCAPES)
def test_gui_open_refuses_a_project_with_an_output_leading_outside(tmp_path, opened, escape):
    from app.document import ChapterDocument

    pages, secret, out = _one_page_chapter_and_outside_secret(tmp_path)
    raw = json.dumps({
        "format": "colorflow-project", "version": 2, "inputs": [str(pages)],
        "pages": [{"name": "1.png", "source": str(pages / "1.png"), "status": "done", "outputs": {"colored": escape}}],
    }).encode()
    (out / PROJECT_FILE).write_bytes(raw)
    opened.clear()
    with pytest.raises(ProjectFileError, match=r"pages\[0\].outputs.colored \(page '1.png'\)"):
        ChapterDocument.open(out)
    assert (out / PROJECT_FILE).read_bytes() == raw
    assert _touches(opened, secret.parent) == []


def test_gui_open_drops_pages_that_are_not_the_chapters_own(tmp_path, opened):
    """A page whose source is not one of the chapter's (built from the project's inputs) is
    dropped with its outputs; the chapter's page starts fresh, and the foreign file is never opened."""
    from app.document import ChapterDocument

    pages, secret, out = _one_page_chapter_and_outside_secret(tmp_path)
    Image.new("RGB", (40, 60), (200, 0, 0)).save(out / "001_1.png")
    (out / PROJECT_FILE).write_text(json.dumps({
        "format": "colorflow-project", "version": 2, "inputs": [str(pages)],
        "pages": [
            {"name": "1.png", "source": str(secret), "status": "done", "outputs": {"colored": "001_1.png"}},
            {"name": "secret.png", "source": str(secret), "status": "done", "outputs": {"colored": "001_1.png"}},
        ],
    }))
    opened.clear()
    document = ChapterDocument.open(out)
    assert [(p.name, p.source, p.status, p.outputs) for p in document.project.pages] == [
        ("1.png", str(pages / "1.png"), "pending", {})]
    assert json.loads((out / PROJECT_FILE).read_text())["pages"][0]["source"] == str(pages / "1.png")
    assert _touches(opened, secret.parent) == []


def test_cbz_of_a_clean_project_still_packs_its_own_outputs(tmp_path):
    """The confinement does not get in the way: a v2 project with relative outputs exports."""
    from engine.io.chapter import open_chapter
    from engine.io.export import export_project

    pages = tmp_path / "chapter"
    (tmp_path / "chapter" / "sub").mkdir(parents=True)
    Image.new("L", (40, 60), 200).save(pages / "1.png")
    out = tmp_path / "out"
    (out / "nested").mkdir(parents=True)
    Image.new("RGB", (41, 60), (200, 0, 0)).save(out / "nested" / "c.png")
    chapter = open_chapter([str(pages)])
    project = ChapterProject(folder=out, inputs=[str(pages)])
    project.sync_pages([(s.name, s.ref) for s in chapter.sources])
    project.record_outputs("1.png", {"colored": "nested/c.png"}, "done", "k")
    project.save()
    [cbz] = export_project(ChapterProject.load(out), chapter, "cbz")
    with zipfile.ZipFile(cbz) as archive:
        [page] = [n for n in archive.namelist() if n.endswith(".png")]
        assert Image.open(io.BytesIO(archive.read(page))).size == (41, 60)


def test_gui_open_never_decodes_a_project_reference_that_is_not_an_image_file(tmp_path, opened):
    from PIL import Image

    from app.document import ChapterDocument
    from engine.project.state import ChapterProject

    chapter = tmp_path / "chapter"
    chapter.mkdir()
    Image.new("L", (64, 96), 200).save(chapter / "1.png")
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("not for us")
    picture = tmp_path / "outside" / "ref.png"
    Image.new("RGB", (64, 96), (200, 30, 30)).save(picture)
    project = ChapterProject.open_or_create(tmp_path / "chapter.colorflow")
    project.inputs = [str(chapter)]
    project.references = [str(secret), str(picture)]  # as a colleague's project file may say
    project.save()
    from app.jobs import reference_thumbnails

    opened.clear()  # what the test itself wrote above does not count
    document = ChapterDocument.open(chapter)
    try:
        assert [r.ref for r in document.references] == [str(picture)]
        assert set(reference_thumbnails(document)) == {str(picture)}  # decoded: the picture only
        assert picture in opened, opened
        assert secret not in opened, opened
    finally:
        document.close()
