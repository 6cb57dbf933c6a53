"""The series library: references, accepted pages and series-level pins/rejects shared by all chapters of a
series, kept in their own folder (colorflow-series.json), and the `colorflow series new|add|list` commands."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from engine.cli.main import main
from engine.core.errors import InputError
from engine.io.chapter import ImageSource
from engine.project.series import SERIES_FILE, SeriesLibrary
from engine.project.state import ChapterProject
from engine.rap.curation import Target


def _png(path: Path, color, size=(32, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _library(tmp_path: Path, name: str = "Hero") -> SeriesLibrary:
    return SeriesLibrary.create(tmp_path / "series", name)


def test_create_and_load_round_trip_everything_the_library_holds(tmp_path):
    red = _png(tmp_path / "in" / "red.png", (255, 0, 0))
    page = _png(tmp_path / "ch1" / "001_1.png", (0, 0, 255))
    library = _library(tmp_path)
    file = library.add_reference(ImageSource(red))
    library.register_chapter("ch1")
    library.register_chapter("ch2")
    library.add_accepted("ch1", "1.png", page)
    library.set_choice(Target(file, "TL"), "pin")
    library.set_choice(Target(file), "reject")
    library.save()

    data = json.loads((tmp_path / "series" / SERIES_FILE).read_text())
    assert (data["format"], data["version"], data["name"]) == ("colorflow-series", 1, "Hero")
    assert data["chapters"] == ["ch1", "ch2"]
    [entry] = data["references"]
    assert entry["file"].startswith("references/") and entry["original"] == "red.png"
    assert entry["sha256"] == hashlib.sha256(red.read_bytes()).hexdigest()
    [accepted] = data["accepted"]
    assert (accepted["chapter"], accepted["page"], accepted["file"]) == ("ch1", "1.png", "accepted/ch1/1.png")

    again = SeriesLibrary.load(tmp_path / "series")
    assert again.name == "Hero" and again.chapters == ["ch1", "ch2"]
    assert [s.read_bytes() for s in again.reference_sources()] == [red.read_bytes()]
    [got] = again.accepted()
    assert (got.chapter, got.page) == ("ch1", "1.png") and got.source.read_bytes() == page.read_bytes()
    absolute = str((tmp_path / "series").resolve() / file)
    assert again.choices().pins == [Target(absolute, "TL")]
    assert again.choices().rejects == [Target(absolute, None)]


def test_create_refuses_a_folder_that_already_holds_a_library(tmp_path):
    _library(tmp_path).save()
    before = (tmp_path / "series" / SERIES_FILE).read_bytes()
    with pytest.raises(InputError, match="already"):
        SeriesLibrary.create(tmp_path / "series", "Other")
    assert (tmp_path / "series" / SERIES_FILE).read_bytes() == before
    with pytest.raises(FileNotFoundError):
        SeriesLibrary.load(tmp_path / "nothing-here")
    ChapterProject(folder=tmp_path / "ch1").save()  # a chapter's folder: its runs lock it, the library needs its own
    with pytest.raises(InputError, match="chapter project"):
        SeriesLibrary.create(tmp_path / "ch1")
    assert not (tmp_path / "ch1" / SERIES_FILE).exists()


def test_a_reference_is_copied_in_so_the_library_still_works_after_the_original_is_deleted(tmp_path):
    original = _png(tmp_path / "in" / "cover.png", (10, 200, 30))
    content = original.read_bytes()
    library = _library(tmp_path)
    file = library.add_reference(ImageSource(original))
    library.save()
    original.unlink()

    [source] = SeriesLibrary.load(tmp_path / "series").reference_sources()
    assert source.path == (tmp_path / "series").resolve() / file
    assert source.read_bytes() == content
    assert Image.open(source.path).getpixel((5, 5)) == (10, 200, 30)


def test_reference_names_are_made_distinct_and_the_same_image_twice_is_kept_once(tmp_path):
    first = _png(tmp_path / "a" / "cover.png", (255, 0, 0))
    second = _png(tmp_path / "b" / "cover.png", (0, 255, 0))
    archive = tmp_path / "refs.cbz"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("sub dir/cover.png", (tmp_path / "b" / "cover.png").read_bytes())
        handle.writestr("x/<why>?.jpg", _jpeg_bytes())
    library = _library(tmp_path)
    files = [library.add_reference(ImageSource(first)), library.add_reference(ImageSource(second)),
             library.add_reference(ImageSource(archive, "sub dir/cover.png")),  # same bytes as `second`
             library.add_reference(ImageSource(archive, "x/<why>?.jpg"))]
    assert files[0] != files[1] and files[2] == files[1]
    assert len(library.reference_sources()) == 3
    for file in files:
        assert file.startswith("references/") and "/" not in file.removeprefix("references/")
        assert all(c not in file for c in '<>?:\\ ')
    assert files[3].endswith(".jpg")  # named after what its bytes are


def _jpeg_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), (9, 9, 9)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_a_new_chapter_starts_with_the_series_references_and_a_series_reject_applies_there(tmp_path):
    hero = _png(tmp_path / "in" / "hero.png", (200, 50, 50))
    villain = _png(tmp_path / "in" / "villain.png", (50, 50, 200))
    library = _library(tmp_path)
    hero_file, villain_file = library.add_reference(ImageSource(hero)), library.add_reference(ImageSource(villain))
    library.set_choice(Target(villain_file), "reject")
    library.set_choice(Target(hero_file, "TL"), "pin")
    library.save()

    chapter = ChapterProject(folder=tmp_path / "ch2", series={"folder": str(tmp_path / "series"), "chapter": "ch2"})
    found = SeriesLibrary.load(Path(chapter.series["folder"]))
    refs = {s.name: s.ref for s in found.reference_sources()}
    assert sorted(refs) == sorted(Path(f).name for f in (hero_file, villain_file))
    series_choices = found.choices()
    effective = chapter.choices_for("1.png", series_choices)
    assert effective.rejects == [Target(refs[Path(villain_file).name])]  # the same ref string retrieval sees
    assert effective.pins == [Target(refs[Path(hero_file).name], "TL")]
    chapter.pin(refs[Path(villain_file).name], page="1.png")  # the narrower level wins
    assert chapter.choices_for("1.png", series_choices).rejects == []


def test_accepted_before_a_chapter_gives_the_earlier_chapters_pages_in_series_order(tmp_path):
    library = _library(tmp_path)
    for chapter in ("ch1", "ch2", "ch3"):
        library.register_chapter(chapter)
    library.add_accepted("ch3", "1.png", _png(tmp_path / "c3.png", (3, 3, 3)))
    library.add_accepted("ch2", "5.png", _png(tmp_path / "c25.png", (25, 25, 25)))
    library.add_accepted("ch1", "2.png", _png(tmp_path / "c12.png", (12, 12, 12)))
    library.add_accepted("ch2", "1.png", _png(tmp_path / "c21.png", (21, 21, 21)))
    library.add_accepted("ch2", "5.png", _png(tmp_path / "c25b.png", (99, 99, 99)))  # accepted again: replaced

    def pages(before):
        return [(a.chapter, a.page) for a in library.accepted(before)]

    assert pages("ch3") == [("ch1", "2.png"), ("ch2", "5.png"), ("ch2", "1.png")]
    assert pages("ch2") == [("ch1", "2.png")]
    assert pages("ch1") == []
    assert pages(None) == pages("not-registered") == [*pages("ch3"), ("ch3", "1.png")]
    replaced = next(a for a in library.accepted() if (a.chapter, a.page) == ("ch2", "5.png"))
    assert Image.open(replaced.source.path).getpixel((0, 0)) == (99, 99, 99)
    library.save()
    assert [(a.chapter, a.page) for a in SeriesLibrary.load(tmp_path / "series").accepted("ch3")] == pages("ch3")


@pytest.mark.parametrize("ref", ["OUTSIDE", "../outside.png", "references/never-added.png", "/etc/passwd",
                                 "SERIES/references/../../outside.png", "ARCHIVE"])
def test_set_choice_refuses_a_ref_outside_the_library(tmp_path, ref):
    outside = _png(tmp_path / "outside.png", (1, 2, 3))
    library = _library(tmp_path)
    library.add_reference(ImageSource(outside))
    ref = (ref.replace("OUTSIDE", str(outside)).replace("SERIES", str(library.folder))
           .replace("ARCHIVE", f"{library.folder}/refs.cbz!a.png"))
    with pytest.raises(InputError, match="not a file of the series library"):
        library.set_choice(Target(ref), "pin")
    assert library.choices().is_empty()


def test_set_choice_takes_the_absolute_ref_retrieval_reports_and_clears_it(tmp_path):
    library = _library(tmp_path)
    library.add_reference(ImageSource(_png(tmp_path / "a.png", (1, 2, 3))))
    [source] = library.reference_sources()
    library.set_choice(Target(source.ref, "BR"), "pin")
    assert library.choices().pins == [Target(source.ref, "BR")]
    library.set_choice(Target(source.ref, "BR"), None)
    assert library.choices().is_empty()


def test_remove_reference_deletes_its_copy_and_its_pins(tmp_path):
    library = _library(tmp_path)
    keep = library.add_reference(ImageSource(_png(tmp_path / "keep.png", (1, 1, 1))))
    gone = library.add_reference(ImageSource(_png(tmp_path / "gone.png", (2, 2, 2))))
    library.set_choice(Target(gone), "pin")
    library.remove_reference(gone)
    assert not (library.folder / gone).exists() and (library.folder / keep).exists()
    assert [s.path.name for s in library.reference_sources()] == [Path(keep).name]
    assert library.choices().is_empty()


# --- the CLI ----------------------------------------------------------------------------------------

def _list_json(capsys, folder: Path) -> dict:
    capsys.readouterr()
    assert main(["series", "list", str(folder), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_new_add_list_and_errors(tmp_path, capsys):
    series = tmp_path / "series"
    refs = tmp_path / "refs"
    _png(refs / "1.png", (255, 0, 0))
    _png(refs / "2.png", (0, 255, 0))
    archive = tmp_path / "sheet.cbz"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("sheet.png", _png(tmp_path / "sheet.png", (0, 0, 255)).read_bytes())

    assert main(["series", "new", str(series), "--name", "Hero"]) == 0
    assert main(["series", "add", str(series), str(refs), str(archive)]) == 0
    listed = _list_json(capsys, series)
    assert listed["name"] == "Hero" and listed["chapters"] == []
    assert [r["original"] for r in listed["references"]] == ["1.png", "2.png", "sheet.png"]
    assert listed["accepted"] == [] and listed["pins"] == [] and listed["rejects"] == []
    assert main(["series", "list", str(series)]) == 0
    text = capsys.readouterr().out
    assert "Hero" in text and "sheet.png" in text

    assert main(["series", "new", str(series)]) == 2
    assert "colorflow: error:" in capsys.readouterr().err
    assert main(["series", "list", str(tmp_path / "none")]) == 2
    assert "no series library" in capsys.readouterr().err
    assert main(["series", "add", str(series)]) == 2  # nothing to add
    assert "nothing to add" in capsys.readouterr().err


def _chapter_project(folder: Path, colors: dict[str, tuple[int, int, int] | None]) -> ChapterProject:
    """A chapter project with colored results recorded (no model run): None = a page not colored yet."""
    project = ChapterProject(folder=folder)
    project.sync_pages([(name, f"/chapter/{name}") for name in colors])
    for index, (name, color) in enumerate(colors.items()):
        if color is not None:
            file = _png(folder / f"{index + 1:03d}_{Path(name).stem}.png", color)
            project.record_variation(name, file, "key", {"seed": 1}, replace=None)
    project.save()
    return project


def test_cli_add_chapter_with_accept_all_copies_its_accepted_pages_and_links_the_chapter(tmp_path, capsys):
    series = tmp_path / "series"
    assert main(["series", "new", str(series)]) == 0
    ch1 = tmp_path / "ch1"
    _chapter_project(ch1, {"1.png": (200, 0, 0), "2.png": (0, 200, 0), "3.png": None})

    assert main(["series", "add", str(series), "--chapter", str(ch1), "--accept", "all"]) == 0
    project = ChapterProject.load(ch1)
    assert [p.accepted for p in project.pages] == [1, 1, None]
    assert project.series == {"folder": str(series.resolve()), "chapter": "ch1"}
    listed = _list_json(capsys, series)
    assert listed["chapters"] == ["ch1"]
    assert [(a["chapter"], a["page"]) for a in listed["accepted"]] == [("ch1", "1.png"), ("ch1", "2.png")]
    library = SeriesLibrary.load(series)
    colors = [Image.open(a.source.path).convert("RGB").getpixel((3, 3)) for a in library.accepted()]
    assert colors == [(200, 0, 0), (0, 200, 0)]

    ch2 = tmp_path / "ch2"
    _chapter_project(ch2, {"1.png": (0, 0, 90), "2.png": (0, 90, 0)})
    assert main(["series", "add", str(series), "--chapter", str(ch2), "--chapter-name", "Chapter 2",
                 "--accept", "2.png"]) == 0
    library = SeriesLibrary.load(series)
    assert library.chapters == ["ch1", "Chapter 2"]
    assert [(a.chapter, a.page) for a in library.accepted("Chapter 2")] == [("ch1", "1.png"), ("ch1", "2.png")]
    assert [(a.chapter, a.page) for a in library.accepted()][-1] == ("Chapter 2", "2.png")


def test_cli_accept_of_a_page_that_is_not_colored_changes_nothing(tmp_path, capsys):
    series = tmp_path / "series"
    assert main(["series", "new", str(series)]) == 0
    ch1 = tmp_path / "ch1"
    _chapter_project(ch1, {"1.png": (200, 0, 0), "2.png": None})
    project_before = (ch1 / "colorflow-project.json").read_bytes()
    series_before = (series / SERIES_FILE).read_bytes()
    capsys.readouterr()
    for page in ("2.png", "9.png"):
        assert main(["series", "add", str(series), "--chapter", str(ch1), "--accept", page]) == 2
        assert page in capsys.readouterr().err
    assert (ch1 / "colorflow-project.json").read_bytes() == project_before
    assert (series / SERIES_FILE).read_bytes() == series_before
    assert not (series / "accepted").exists()


def test_put_back_returns_to_a_snapshot_its_lists_and_files_for_undo(tmp_path):
    library = _library(tmp_path)
    kept = library.add_reference(ImageSource(_png(tmp_path / "kept.png", (1, 1, 1))))
    moved = library.add_reference(ImageSource(_png(tmp_path / "moved.png", (2, 2, 2))))
    library.set_choice(Target(moved, "TL"), "reject")
    before, moved_bytes = library.entries(), (library.folder / moved).read_bytes()

    library.remove_reference(moved)  # a move to the chapter: the library drops it
    added = library.add_reference(ImageSource(_png(tmp_path / "new.png", (3, 3, 3))))
    library.register_chapter("ch9")
    library.put_back(before, {moved: moved_bytes})

    assert [s.read_bytes() for s in library.reference_sources()] == [(library.folder / kept).read_bytes(), moved_bytes]
    assert library.choices().rejects == [Target(str(library.folder / moved), "TL")]
    assert library.chapters == [] and not (library.folder / added).exists()
    with pytest.raises(InputError, match="not a file of the series library"):  # only files the snapshot lists
        library.put_back(before, {"references/other.png": moved_bytes})


def test_save_takes_the_folders_lock_and_is_refused_while_another_job_holds_it(tmp_path):
    from engine.core.errors import ProjectLockedError
    from engine.io.projectlock import ProjectLock

    library = _library(tmp_path)
    before = library.path.read_bytes()
    library.register_chapter("ch1")
    with ProjectLock(library.folder):
        with pytest.raises(ProjectLockedError, match="in use"):
            library.save()
    assert library.path.read_bytes() == before
    library.save()
    assert SeriesLibrary.load(library.folder).chapters == ["ch1"]
    assert not (library.folder / ".colorflow.lock").exists()


def test_cli_add_chapter_again_follows_the_chapters_acceptances(tmp_path, capsys):
    series = tmp_path / "series"
    assert main(["series", "new", str(series)]) == 0
    ch1 = tmp_path / "ch1"
    _chapter_project(ch1, {"1.png": (200, 0, 0), "2.png": (0, 200, 0)})
    assert main(["series", "add", str(series), "--chapter", str(ch1), "--accept", "all"]) == 0
    project = ChapterProject.load(ch1)
    project.unaccept("2.png")  # e.g. colored again in the app: no longer the accepted result
    project.save()

    assert main(["series", "add", str(series), "--chapter", str(ch1)]) == 0
    library = SeriesLibrary.load(series)
    assert [(a.chapter, a.page) for a in library.accepted()] == [("ch1", "1.png")]
    assert sorted(p.name for p in (series / "accepted" / "ch1").iterdir()) == ["1.png"]


def test_cli_add_chapter_given_as_the_cbz_colorize_wrote_uses_its_project_beside_it(tmp_path, capsys):
    series = tmp_path / "series"
    assert main(["series", "new", str(series)]) == 0
    _chapter_project(tmp_path / "vol1-ch3.colorflow", {"1.png": (200, 0, 0)})
    assert main(["series", "add", str(series), "--chapter", str(tmp_path / "vol1-ch3.cbz"), "--accept", "1.png"]) == 0
    library = SeriesLibrary.load(series)
    assert library.chapters == ["vol1-ch3"]
    assert [(a.chapter, a.page) for a in library.accepted()] == [("vol1-ch3", "1.png")]
    assert ChapterProject.load(tmp_path / "vol1-ch3.colorflow").series["chapter"] == "vol1-ch3"
