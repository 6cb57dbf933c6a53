"""A chapter run in a series (issue 25): a new chapter retrieves from the series library's references
and earlier chapters' accepted pages, under the levels series -> chapter -> page (the narrower wins);
`colorize --series DIR --rolling-refs` links and registers the chapter and records each page's retrieval.
The fast tests use rolling_fakes (no model); one real tiny-model run goes through the command line."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from engine.cli.main import main
from engine.io.chapter import ImageSource, open_chapter
from engine.io.demo import make_demo_chapter
from engine.pipelines.chapter import colorize_chapter
from engine.project.reference_pool import build_pool
from engine.project.state import ChapterProject
from engine.rap.curation import Target
from rolling_fakes import PagesAsColored, noise_image, ramp_page, run_settings

series = pytest.importorskip("engine.project.series")  # S1's library (until it lands: these tests skip)


def picked_refs(project: ChapterProject, name: str) -> set[str]:
    record = project.page(name).picked_variation().retrieval
    return {pick["ref"] for row in record["picks"] for pick in row}


@pytest.fixture
def library(tmp_path):
    """A series library holding a reference like page 1 (a horizontal ramp, colored) and a noise one."""
    (tmp_path / "in").mkdir()
    ramp_page("h", 5).convert("RGB").save(tmp_path / "in" / "hero.png")
    noise_image(9).save(tmp_path / "in" / "noise.png")
    lib = series.SeriesLibrary.create(tmp_path / "series", "Hero")
    hero = lib.add_reference(ImageSource(tmp_path / "in" / "hero.png"))
    lib.add_reference(ImageSource(tmp_path / "in" / "noise.png"))
    lib.save()
    return lib, str(lib.folder.resolve() / hero)


@pytest.fixture
def new_chapter(tmp_path):
    (tmp_path / "ch2").mkdir()
    ramp_page("h", 1).save(tmp_path / "ch2" / "1.png")
    ramp_page("v", 2).save(tmp_path / "ch2" / "2.png")
    return open_chapter([tmp_path / "ch2"])


def test_a_new_chapter_takes_the_library_and_its_reject_and_a_chapter_pin_beats_it(library, new_chapter, tmp_path):
    lib, hero = library
    pipeline = PagesAsColored(tmp_path / "cache")
    project = ChapterProject(folder=tmp_path / "out", series={"folder": str(lib.folder), "chapter": "ch2"})
    lib.register_chapter("ch2")

    def run() -> set[str]:
        report = colorize_chapter(new_chapter, [], pipeline, project, settings=run_settings(),
                                  pool=build_pool(project, [], lib, rolling=False))
        assert report.done == ["1.png", "2.png"] and not report.failed
        return picked_refs(project, "1.png")

    assert hero in run()  # no reference of its own: the library's serve; the hero is page 1's best match
    lib.set_choice(Target(hero), "reject")  # a series-level reject applies in the chapter
    used = run()
    assert hero not in used and used <= {s.ref for s in lib.reference_sources()}
    project.pin(hero)  # the chapter's pin of the same target is narrower: it wins
    assert hero in run()
    project.set_choice(Target(hero), None)
    project.pin(hero, page="1.png")  # and a page's own pin too
    assert hero in run()


def test_earlier_chapters_accepted_pages_serve_later_ones_only(library, new_chapter, tmp_path):
    """ch1 (before) and ch3 (after ch2) each have an accepted page like ch2's page 1; only ch1's is used."""
    lib, _ = library
    for chapter in ("ch1", "ch2", "ch3"):
        lib.register_chapter(chapter)
    for chapter, seed in (("ch1", 11), ("ch3", 33)):
        path = tmp_path / chapter / "001_1.png"
        path.parent.mkdir()
        ramp_page("h", seed).convert("RGB").save(path)
        lib.add_accepted(chapter, "1.png", path)
    lib.set_choice(Target(str(lib.reference_sources()[0].path)), "reject")  # the hero: only accepted pages alike
    lib.save()
    project = ChapterProject(folder=tmp_path / "out", series={"folder": str(lib.folder), "chapter": "ch2"})
    pool = build_pool(project, [], lib, rolling=True)
    assert [e.level for e in pool.entries] == ["series", "series", "series-accepted"]
    assert (pool.entries[2].label, pool.entries[2].chapter) == ("ch1/1.png", "ch1")
    colorize_chapter(new_chapter, [], PagesAsColored(tmp_path / "cache"), project, settings=run_settings(), pool=pool)
    record = project.page("1.png").picked_variation().retrieval
    assert record["accepted_used"] == ["ch1/1.png"]
    assert picked_refs(project, "1.png") == {pool.entries[2].source.ref}


def test_colorize_with_series_and_rolling_refs_links_records_and_resumes(tmp_path, tiny_models_dir, capsys):
    pages, refs = make_demo_chapter(tmp_path / "demo", pages=2, refs=2, size=(128, 128))
    lib = series.SeriesLibrary.create(tmp_path / "series", "Demo")
    for ref in sorted(refs.iterdir()):
        lib.add_reference(ImageSource(ref))
    lib.save()
    out = tmp_path / "ch1"
    argv = ["colorize", str(pages), "--series", str(tmp_path / "series"), "--rolling-refs", "--out", str(out),
            "--models", str(tiny_models_dir), "--steps", "1", "--size", "256x256", "--input-style", "gray", "--json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["done"] == ["1.png", "2.png"]
    project = ChapterProject.load(out)
    assert project.series == {"folder": str((tmp_path / "series").resolve()), "chapter": "ch1"}
    assert series.SeriesLibrary.load(tmp_path / "series").chapters == ["ch1"]
    library_files = {s.ref for s in lib.reference_sources()}
    for name in ("1.png", "2.png"):
        record = project.page(name).picked_variation().retrieval
        assert record["work_size"] == [256, 256] and record["page_size"] == [128, 128]
        assert record["accepted_used"] == [] and picked_refs(project, name) <= library_files
    assert main([*argv, "--resume"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["done"] == [] and sorted(again["skipped"]) == ["1.png", "2.png"]
    without_series = [a for a in argv if a not in ("--series", str(tmp_path / "series"))]
    assert main([*without_series, "--resume"]) == 0  # the chapter is linked: its library serves, nothing to redo
    linked = json.loads(capsys.readouterr().out)
    assert linked["done"] == [] and sorted(linked["skipped"]) == ["1.png", "2.png"]
    (tmp_path / "series").rename(tmp_path / "moved")
    assert main([*without_series, "--resume"]) == 2  # the library moved: said, with both ways out
    error = capsys.readouterr().err
    assert str((tmp_path / "series").resolve()) in error and "--series" in error and "Link chapter" in error


@pytest.mark.parametrize("case", ["neither", "no library", "damaged library"])
def test_colorize_without_usable_references_says_so_before_any_model(case, tmp_path, one_page_chapter, capsys):
    pages, _ = one_page_chapter
    folder = tmp_path / "series"
    argv = ["colorize", str(pages), "--out", str(tmp_path / "out")]
    if case != "neither":
        folder.mkdir()
        argv += ["--series", str(folder)]
    if case == "damaged library":
        (folder / series.SERIES_FILE).write_text('{"format": "colorflow-series", "version": 1, "chapters": 3}')
    assert main(argv) == 2
    error = capsys.readouterr().err
    expected = {"neither": "no references: give --refs", "no library": "no series library there",
                "damaged library": series.SERIES_FILE}[case]
    assert expected in error, error
