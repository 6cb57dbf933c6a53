"""A series library folder sent by a colleague or unpacked from an archive is untrusted, like a project file:
wrong types, paths leading outside, links, a damaged file with its .bak, a file too large, numbers JSON cannot
hold and a newer version are refused with the file and the field named, the file left as it was, nothing
outside the folder opened; names from users and archives never place a file outside it."""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from engine.cli.main import main
from engine.core.errors import InputError, ProjectFileError
from engine.io.chapter import ImageSource
from engine.project.series import SERIES_FILE, SeriesFileError, SeriesLibrary
from test_project_hostile import opened  # noqa: F401  (a fixture: every path opened from then on)

BACKUP = SERIES_FILE + ".bak"


def _png(path: Path, color=(200, 10, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 48), color).save(path)
    return path


def _saved_library(tmp_path: Path) -> Path:
    """A library with one reference, one accepted page and a pin, saved: its folder."""
    library = SeriesLibrary.create(tmp_path / "series", "Hero")
    file = library.add_reference(ImageSource(_png(tmp_path / "in" / "ref.png")))
    library.add_accepted("ch1", "1.png", _png(tmp_path / "in" / "page.png", (0, 0, 200)))
    from engine.rap.curation import Target

    library.set_choice(Target(file, "TL"), "pin")
    library.save()
    return library.folder


def _edit(folder: Path, edit) -> bytes:
    data = json.loads((folder / SERIES_FILE).read_text())
    edit(data)
    raw = json.dumps(data, indent=1).encode()
    (folder / SERIES_FILE).write_bytes(raw)
    return raw


def _refused(folder: Path, *fragments: str) -> str:
    before = (folder / SERIES_FILE).read_bytes()
    with pytest.raises(SeriesFileError) as caught:
        SeriesLibrary.load(folder)
    message = str(caught.value)
    assert isinstance(caught.value, ProjectFileError)
    assert message.startswith(f"{folder / SERIES_FILE}: "), message
    for fragment in fragments:
        assert fragment in message, message
    assert (folder / SERIES_FILE).read_bytes() == before  # left untouched
    return message


def _set(path: str, value):
    """An edit setting data[a][b]... (path 'references.0.sha256') to value."""
    def edit(data):
        keys = [int(k) if k.isdigit() else k for k in path.split(".")]
        target = data
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return edit


@pytest.mark.parametrize("path, value, field", [
    ("name", 3, "name"),
    ("chapters", "ch1", "chapters"),
    ("chapters", [1], "chapters[0]"),
    ("references", {"file": "references/ref.png"}, "references"),
    ("references.0.file", 3, "references[0].file"),
    ("references.0.sha256", 5, "references[0].sha256"),
    ("references.0.sha256", "not-a-hash", "references[0].sha256"),
    ("accepted.0.page", None, "accepted[0].page"),
    ("accepted.0.chapter", ["ch1"], "accepted[0].chapter"),
    ("curation.pins", "references/ref.png", "curation.pins"),
    ("curation.pins.0.patch", "XX", "curation.pins[0].patch"),
    ("version", "1", "version"),
    ("version", True, "version"),
])
def test_wrong_types_are_refused_naming_the_file_and_the_field(tmp_path, path, value, field):
    folder = _saved_library(tmp_path)
    _edit(folder, _set(path, value))
    _refused(folder, "damaged", f"{field}: ")


@pytest.mark.parametrize("escape", ["../outside/secret.png", "/etc/passwd", "C:/Windows/win.ini",
                                    "references\\..\\..\\outside\\secret.png", "references/../../outside/secret.png",
                                    "references/../colorflow-series.json", "accepted/ch1/../../../outside/secret.png",
                                    "references/..", "accepted/../x.png", "references/\x00.png"])
@pytest.mark.parametrize("where", ["references.0.file", "accepted.0.file", "curation.pins.0.ref"])
def test_paths_leading_outside_are_refused_and_nothing_outside_is_opened(tmp_path, opened, escape, where):
    folder = _saved_library(tmp_path)
    secret = _png(tmp_path / "outside" / "secret.png", (1, 2, 3))
    _edit(folder, _set(where, escape))
    opened.clear()
    _refused(folder, "damaged", f"{where.replace('.0.', '[0].')}: ")
    assert not [p for p in opened if p == secret or str(p) == "/etc/passwd"]


def test_a_link_inside_the_folder_pointing_outside_is_refused_and_never_read(tmp_path, opened):
    folder = _saved_library(tmp_path)
    secret = _png(tmp_path / "outside" / "secret.png", (1, 2, 3))
    link = folder / "references" / "planted.png"
    link.symlink_to(secret)

    def plant(data):
        data["references"].append({"file": "references/planted.png", "sha256": "0" * 64, "original": "x.png"})

    _edit(folder, plant)
    opened.clear()
    message = _refused(folder, str(link), "symbolic link")
    assert "remove" in message
    assert secret not in opened


def test_a_linked_references_folder_is_refused(tmp_path, opened):
    folder = _saved_library(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    (folder / "references").rename(elsewhere)
    (folder / "references").symlink_to(elsewhere, target_is_directory=True)
    opened.clear()
    _refused(folder, "symbolic link")
    assert not [p for p in opened if elsewhere in p.parents]


def test_a_reference_swapped_for_a_link_after_adding_is_never_followed(tmp_path, opened):
    folder = _saved_library(tmp_path)
    library = SeriesLibrary.load(folder)
    [source] = library.reference_sources()
    secret = _png(tmp_path / "outside" / "secret.png", (1, 2, 3))
    source.path.unlink()
    source.path.symlink_to(secret)
    opened.clear()
    with pytest.raises(SeriesFileError, match="symbolic link"):
        library.reference_sources()
    with pytest.raises(InputError):  # a source listed before the swap: read without following the link
        source.read_bytes()
    with pytest.raises(SeriesFileError, match="symbolic link"):
        SeriesLibrary.load(folder)
    assert secret not in opened


@pytest.mark.parametrize("member", ["../../escaped.png", "/tmp/abs-escaped.png", "a/../../../escaped.png"])
def test_an_archive_member_named_to_escape_is_refused_by_the_cli_and_never_lands_outside(tmp_path, capsys, member):
    folder = _saved_library(tmp_path)
    before = (folder / SERIES_FILE).read_bytes()
    evil = tmp_path / "evil.cbz"
    with zipfile.ZipFile(evil, "w") as handle:
        handle.writestr(member, (tmp_path / "in" / "ref.png").read_bytes())
    assert main(["series", "add", str(folder), str(evil)]) == 2
    err = capsys.readouterr().err
    assert "outside the archive" in err or "absolute path" in err
    assert (folder / SERIES_FILE).read_bytes() == before
    assert sorted(p.name for p in (folder / "references").iterdir()) == ["ref.png"]

    # through the API, the same member name only names the copy, inside references/
    library = SeriesLibrary.load(folder)
    file = library.add_reference(ImageSource(evil, member))
    assert file.startswith("references/") and (folder / file).resolve().parent == (folder / "references").resolve()
    assert not (tmp_path / "escaped.png").exists() and not Path("/tmp/abs-escaped.png").exists()


@pytest.mark.parametrize("chapter, page", [("../../out", "../x.png"), ("/abs", "C:\\evil.png"), ("..", ".."),
                                           ("a/b", "sub/../../1.png"), ("", "")])
def test_chapter_and_page_names_never_place_an_accepted_page_outside(tmp_path, chapter, page):
    library = SeriesLibrary.create(tmp_path / "deep" / "series")
    colored = _png(tmp_path / "in" / "page.png")
    if not chapter:
        with pytest.raises(InputError):
            library.add_accepted(chapter, page, colored)
        return
    file = library.add_accepted(chapter, page, colored)
    path = (library.folder / file).resolve()
    assert path.is_relative_to((library.folder / "accepted").resolve()) and path.is_file()
    assert len(Path(file).parts) == 3
    library.save()
    [got] = SeriesLibrary.load(library.folder).accepted()
    assert (got.chapter, got.page) == (chapter, page)


def test_a_file_that_is_not_an_image_is_refused_and_nothing_is_copied(tmp_path):
    library = SeriesLibrary.create(tmp_path / "series")
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n")
    with pytest.raises(InputError, match="fake.png"):
        library.add_reference(ImageSource(fake))
    assert library.reference_sources() == []
    assert not (library.folder / "references").exists() or not any((library.folder / "references").iterdir())


def test_a_damaged_file_names_its_good_backup_and_how_to_restore_it_and_nothing_is_overwritten(tmp_path):
    folder = _saved_library(tmp_path)
    library = SeriesLibrary.load(folder)
    library.register_chapter("ch2")
    library.save()  # the first save is now the .bak
    good_backup = (folder / BACKUP).read_bytes()
    (folder / SERIES_FILE).write_text('{"format": "colorflow-series", "version": 1, "chapters": "x"}')
    damaged = (folder / SERIES_FILE).read_bytes()
    message = _refused(folder, "chapters: ", str(folder / BACKUP), f"rename {BACKUP} to {SERIES_FILE}")
    assert "\n" not in message
    library.register_chapter("ch3")
    with pytest.raises(ProjectFileError, match="not saved over it"):
        library.save()  # the library still open elsewhere must not save over the damaged file
    assert (folder / SERIES_FILE).read_bytes() == damaged and (folder / BACKUP).read_bytes() == good_backup

    restored = SeriesLibrary.restore_backup(folder)
    assert restored.chapters == ["ch1"] and (folder / SERIES_FILE).read_bytes() == good_backup
    [aside] = folder.glob(f"{SERIES_FILE}.damaged-*")
    assert aside.read_bytes() == damaged


def test_a_damaged_file_with_a_damaged_backup_says_so(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    (folder / SERIES_FILE).write_text("{")
    (folder / BACKUP).write_text("[]")
    _refused(folder, "not JSON", "unusable too")


def test_a_file_too_large_is_refused_before_it_is_read(tmp_path, monkeypatch):
    folder = tmp_path / "series"
    folder.mkdir()
    head = json.dumps({"format": "colorflow-series", "version": 1, "name": "x"}).encode()
    with open(folder / SERIES_FILE, "wb") as handle:
        handle.write(head + b" " * (40 * 1024**2))
    monkeypatch.setattr(json, "loads", lambda *a, **k: pytest.fail("a file over the cap was parsed"))
    started = time.perf_counter()
    _refused(folder, "too large", "MiB")
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_numbers_json_cannot_hold_are_refused(tmp_path, number):
    folder = tmp_path / "series"
    folder.mkdir()
    (folder / SERIES_FILE).write_text('{"format": "colorflow-series", "version": 1, "name": "x", "n": %s}' % number)
    _refused(folder, "damaged", number)


def test_a_newer_version_is_refused_untouched_without_backup_advice(tmp_path):
    folder = _saved_library(tmp_path)
    library = SeriesLibrary.load(folder)
    _edit(folder, _set("version", 2))
    message = _refused(folder, "newer ColorFlow")
    assert ".bak" not in message
    library.register_chapter("ch9")
    with pytest.raises(ProjectFileError, match="not saved over it"):
        library.save()
    assert json.loads((folder / SERIES_FILE).read_text())["version"] == 2


def test_a_bom_is_read_past_and_unknown_keys_survive_a_change_and_a_save(tmp_path):
    folder = _saved_library(tmp_path)

    def add_unknown(data):
        data["studio"] = {"lead": "K"}
        data["references"][0]["tags"] = ["cover"]
        data["accepted"][0]["note"] = "good"
        data["curation"]["pins"][0]["why"] = "hair"
        data["curation"]["future"] = 1

    _edit(folder, add_unknown)
    (folder / SERIES_FILE).write_bytes(b"\xef\xbb\xbf" + (folder / SERIES_FILE).read_bytes())
    library = SeriesLibrary.load(folder)
    library.register_chapter("ch2")
    library.save()
    data = json.loads((folder / SERIES_FILE).read_text())
    assert data["chapters"] == ["ch1", "ch2"] and data["studio"] == {"lead": "K"}
    assert data["references"][0]["tags"] == ["cover"] and data["accepted"][0]["note"] == "good"
    assert data["curation"]["pins"][0]["why"] == "hair" and data["curation"]["future"] == 1
