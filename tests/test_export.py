"""Exports: CBZ round trip, OpenRaster layers, PSD layers, atomic replacement."""

from __future__ import annotations

import re
import zipfile
from xml.etree import ElementTree

import numpy as np
import pytest
from natsort import natsorted
from PIL import Image

from engine.io.chapter import open_chapter
from engine.io.export import color_layer, export_cbz, export_ora, export_psd


def pages(n: int) -> list[tuple[str, Image.Image]]:
    return [(f"{i}.png", Image.new("RGB", (40 + i, 60), (i * 20, 100, 200))) for i in range(1, n + 1)]


def test_cbz_round_trips_through_the_chapter_reader(tmp_path):
    items = pages(11)  # 11 > 9: order must not become 1, 10, 11, 2 ...
    path = export_cbz(items, tmp_path / "out.cbz", "Chapter <1> & co")
    chapter = open_chapter(path)
    assert len(chapter.sources) == 11 and not chapter.errors
    widths = [chapter.load_page(i).image.size[0] for i in range(11)]
    assert widths == [41 + i for i in range(11)]
    with zipfile.ZipFile(path) as archive:
        info = ElementTree.fromstring(archive.read("ComicInfo.xml"))
    assert info.findtext("Title") == "Chapter <1> & co"
    assert info.findtext("PageCount") == "11"
    assert "ColorFlow" in info.findtext("Notes")


@pytest.mark.parametrize("count, digits", [(12, 3), (105, 3), (1000, 4)])
def test_cbz_page_names_sort_in_reading_order_as_plain_strings_and_naturally(tmp_path, count, digits):
    # Readers differ: many sort member names as plain strings (byte order), others naturally.
    # Zero-padded numbers of one width give the reading order under both.
    items = [(f"{i}.png", Image.new("L", (1, 1))) for i in range(1, count + 1)]
    with zipfile.ZipFile(export_cbz(items, tmp_path / "out.cbz", "c")) as archive:
        names = [n for n in archive.namelist() if n != "ComicInfo.xml"]
    assert len(names) == count
    assert all(re.fullmatch(rf"\d{{{digits}}}_\d+\.png", n) for n in names), names[:12]
    reading_order = [f"{i}.png" for i in range(1, count + 1)]
    assert [n.split("_", 1)[1] for n in sorted(names)] == reading_order
    assert [n.split("_", 1)[1] for n in natsorted(names)] == reading_order
    assert [int(n.split("_", 1)[0]) for n in sorted(names)] == list(range(1, count + 1))


def test_failed_export_leaves_existing_file_untouched(tmp_path, monkeypatch):
    path = export_cbz(pages(2), tmp_path / "out.cbz", "c")
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("engine.io.export._png_bytes", broken)
    with pytest.raises(OSError):
        export_cbz(pages(3), path, "c")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.cbz"]


def ink_and_color():
    ink = Image.new("L", (64, 48), 255)
    ink.paste(0, (10, 10, 20, 40))
    ink.paste(128, (30, 10, 50, 40))
    colored = Image.new("RGB", (64, 48), (220, 120, 60))
    colored.paste((0, 0, 0), (10, 10, 20, 40))
    colored.paste((110, 60, 30), (30, 10, 50, 40))
    return ink, colored


def test_ora_has_stack_and_both_layers(tmp_path):
    ink, colored = ink_and_color()
    path = export_ora(colored, ink, tmp_path / "page.ora")
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist()[0] == "mimetype"
        assert archive.read("mimetype") == b"image/openraster"
        stack = ElementTree.fromstring(archive.read("stack.xml"))
        layers = stack.findall("./stack/layer")
        assert [l.get("name") for l in layers] == ["Ink", "Color"]
        assert layers[0].get("composite-op") == "svg:multiply"
        for layer in layers:
            with archive.open(layer.get("src")) as handle:
                assert Image.open(handle).size == (64, 48)
        assert stack.get("w") == "64" and stack.get("h") == "48"


def test_psd_opens_with_two_layers_that_recompose_the_page(tmp_path):
    from psd_tools import PSDImage
    from psd_tools.constants import BlendMode

    ink, colored = ink_and_color()
    path = export_psd(colored, ink, tmp_path / "page.psd")
    document = PSDImage.open(path)
    layers = list(document)
    assert [l.name for l in layers] == ["Color", "Ink"]
    assert layers[1].blend_mode == BlendMode.MULTIPLY
    assert document.size == (64, 48)
    color = np.asarray(layers[0].topil().convert("RGB"), float)
    recomposed = color * np.asarray(ink, float)[..., None] / 255
    assert np.abs(recomposed - np.asarray(colored, float)).max() <= 2


def test_color_layer_times_ink_gives_the_colored_page():
    ink, colored = ink_and_color()
    layer = np.asarray(color_layer(colored, ink), float)
    recomposed = layer * np.asarray(ink, float)[..., None] / 255
    assert np.abs(recomposed - np.asarray(colored, float)).max() <= 2


@pytest.mark.parametrize("fmt", ["cbz", "ora", "psd"])
def test_colorize_command_exports_each_format(tiny_models_dir, tmp_path, capsys, fmt):
    import json

    from engine.cli.main import main
    from engine.io.demo import make_demo_chapter

    chapter, refs = make_demo_chapter(tmp_path / "data", pages=2, refs=1)
    out = tmp_path / "out"
    code = main(["colorize", str(chapter), "--refs", str(refs), "--out", str(out), "--models",
                 str(tiny_models_dir), "--steps", "1", "--size", "256x384", "--format", fmt,
                 "--input-style", "gray", "--json"])
    assert code == 0
    exports = [tmp_path / p for p in json.loads(capsys.readouterr().out)["exports"]]
    if fmt == "cbz":
        assert [p.name for p in exports] == ["chapter-colored.cbz"]
        reopened = open_chapter(exports[0])
        assert len(reopened.sources) == 2
        assert reopened.load_page(0).image.size == (360, 512)
    else:
        assert [p.name for p in exports] == [f"001_1.{fmt}", f"002_2.{fmt}"]
        assert all(p.parent == out / "layered" and p.stat().st_size > 0 for p in exports)


def test_out_ending_in_cbz_writes_that_file_with_the_project_folder_beside_it(tiny_models_dir, tmp_path, capsys):
    from engine.cli.main import main
    from engine.io.demo import make_demo_chapter

    chapter, refs = make_demo_chapter(tmp_path / "data", pages=1, refs=1)
    target = tmp_path / "out" / "ch-colored.cbz"
    code = main(["colorize", str(chapter), "--refs", str(refs), "--out", str(target), "--models",
                 str(tiny_models_dir), "--steps", "1", "--size", "256x384", "--input-style", "gray"])
    assert code == 0
    project = tmp_path / "out" / "ch-colored.colorflow"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ch-colored.cbz", "ch-colored.colorflow"]
    assert target.is_file() and zipfile.is_zipfile(target)  # the file asked for, not a folder of that name
    assert len(open_chapter(target).sources) == 1
    assert (project / "colorflow-project.json").is_file() and (project / "001_1.png").is_file()
    said = capsys.readouterr().out
    assert str(target) in said and str(project) in said


@pytest.mark.parametrize("fmt", ["png", "ora", "psd"])
def test_out_ending_in_cbz_with_another_format_is_refused_before_anything_is_written(one_page_chapter, tmp_path,
                                                                                     capsys, fmt):
    from engine.cli.main import main

    pages, refs = one_page_chapter
    code = main(["colorize", str(pages), "--refs", str(refs), "--out", str(tmp_path / "x.cbz"), "--format", fmt,
                 "--models", str(tmp_path / "no-models")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--format" in err and ".cbz" in err and "\n" not in err.strip()
    assert not (tmp_path / "x.cbz").exists() and not (tmp_path / "x.colorflow").exists()


def _half_done_project(tmp_path):
    """A 3-page chapter whose page 2 is not colored."""
    from engine.io.chapter import open_chapter
    from engine.project.state import ChapterProject

    chapter_dir = tmp_path / "Berserk 12"
    chapter_dir.mkdir()
    for i in (1, 2, 3):
        Image.new("L", (30 + i, 40), 100).save(chapter_dir / f"{i}.png")
    chapter = open_chapter(chapter_dir)
    project = ChapterProject(folder=tmp_path / "out")
    project.sync_pages([(s.name, s.ref) for s in chapter.sources])
    project.inputs = [str(chapter_dir)]
    project.folder.mkdir(parents=True, exist_ok=True)
    for i in (1, 3):
        Image.new("RGB", (30 + i, 40), (200, 0, 0)).save(project.folder / f"00{i}_{i}.png")
        project.record_outputs(f"{i}.png", {"colored": f"00{i}_{i}.png"}, "done", "k")
    return project, chapter


def test_partial_chapter_cbz_is_refused_unless_uncolored_pages_are_included(tmp_path):
    from engine.io.export import IncompleteExport, export_project

    project, chapter = _half_done_project(tmp_path)
    with pytest.raises(IncompleteExport, match=r"1 page\(s\) not colored yet \(2.png\)"):
        export_project(project, chapter, "cbz")
    assert not list(project.folder.glob("*.cbz"))  # never a short CBZ
    [path] = export_project(project, chapter, "cbz", include_uncolored=True)
    with zipfile.ZipFile(path) as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".png"))
        assert names == ["001_1.png", "002_2.png", "003_3.png"]
        with archive.open("002_2.png") as handle:
            assert Image.open(handle).convert("RGB").getpixel((0, 0)) == (100, 100, 100)  # the original page
        info = ElementTree.fromstring(archive.read("ComicInfo.xml"))
    assert info.findtext("Manga") == "YesAndRightToLeft"
    assert info.findtext("Series") == "Berserk" and info.findtext("Number") == "12"
    assert info.findtext("PageCount") == "3"
    assert [p.get("ImageWidth") for p in info.find("Pages")] == ["31", "32", "33"]


def test_project_settings_choose_the_comic_metadata(tmp_path):
    from engine.io.export import export_project

    project, chapter = _half_done_project(tmp_path)
    project.settings.update(series="Guts", number="7", manga="Yes")
    [path] = export_project(project, chapter, "cbz", include_uncolored=True)
    with zipfile.ZipFile(path) as archive:
        info = ElementTree.fromstring(archive.read("ComicInfo.xml"))
    assert (info.findtext("Series"), info.findtext("Number"), info.findtext("Manga")) == ("Guts", "7", "Yes")


def test_written_files_have_the_users_normal_permissions(tmp_path):
    import os
    import stat

    from engine.io.fileio import atomic_write_bytes

    previous = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        export_cbz(pages(1), tmp_path / "b.cbz", "c")
    finally:
        os.umask(previous)
    for name in ("a.bin", "b.cbz"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644
