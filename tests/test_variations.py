"""Variations of a page: "Colorize again" keeps each result in its own file with the seed and
guidance it was made with, the picked one is the page's result (export uses it), resume keeps a
pick, the history is capped, and a version-2 project loads with its result as variation 1."""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from engine.core.errors import ProjectFileError
from engine.core.options import RunSettings
from engine.io.chapter import list_images, open_chapter
from engine.io.demo import make_demo_chapter
from engine.io.export import export_project
from engine.pipelines.chapter import colorize_chapter
from engine.pipelines.settings import pipeline_settings
from engine.pipelines.variations import VariationRequest
from engine.project.state import ChapterProject
from engine.project.store import BACKUP_FILE, PROJECT_FILE

SEED = 7


def run_settings(**changes):
    return pipeline_settings(RunSettings(**{"steps": 2, "seed": SEED, "size": "256x384", "input_style": "gray",
                                            **changes}))


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def stamp(path) -> tuple[int, int]:
    info = os.stat(path)  # an atomic rewrite is a new inode
    return info.st_ino, info.st_mtime_ns


@pytest.fixture
def one_page(tmp_path):
    chapter_dir, refs_dir = make_demo_chapter(tmp_path / "demo", pages=1, refs=3, size=(200, 300))
    return open_chapter(chapter_dir), list_images([refs_dir])


def test_colorize_again_keeps_both_files_and_the_picked_one_is_exported(one_page, pipeline, tmp_path):
    chapter, refs = one_page
    project = ChapterProject(folder=tmp_path / "out")
    colorize_chapter(chapter, refs, pipeline, project, settings=run_settings())
    first = project.folder / "001_1.png"
    first_stamp = stamp(first)

    report = colorize_chapter(chapter, refs, pipeline, project, settings=run_settings(), again=VariationRequest())
    assert report.done == ["1.png"]
    page = project.page("1.png")
    # the next unused seed after the run's 7 is 8; guidance and steps as the run's
    assert [(v.id, v.seed, v.guidance, v.steps) for v in page.variations] == [(1, 7, 7.5, 2), (2, 8, 7.5, 2)]
    second = project.folder / page.variations[1].file
    assert second.parent == project.folder and second.name != first.name and second.is_file()
    assert stamp(first) == first_stamp  # the first result is kept as it was
    assert np.abs(pixels(first) - pixels(second)).mean() > 1.0
    assert page.picked == 1 and project.output_path(page, "colored") == first.resolve()  # picked by the user only

    # seed 8 is a real seed: the page colored plainly with --seed 8 elsewhere gives the same pixels
    plain = ChapterProject(folder=tmp_path / "plain")
    colorize_chapter(chapter, refs, pipeline, plain, settings=run_settings(seed=8))
    assert np.array_equal(pixels(plain.folder / "001_1.png"), pixels(second))

    # with the page's own seed and another guidance: a third variation, other pixels
    colorize_chapter(chapter, refs, pipeline, project, settings=run_settings(),
                     again=VariationRequest(new_seed=False, guidance=2.0))
    third = page.variations[2]
    assert (third.id, third.seed, third.guidance) == (3, 7, 2.0)
    assert not np.array_equal(pixels(first), pixels(project.folder / third.file))
    plain = ChapterProject(folder=tmp_path / "plain-guidance")
    colorize_chapter(chapter, refs, pipeline, plain, settings=run_settings(guidance=2.0))
    assert np.array_equal(pixels(plain.folder / "001_1.png"), pixels(project.folder / third.file))
    # asked again for exactly that: nothing new to color, no fourth file
    report = colorize_chapter(chapter, refs, pipeline, project, settings=run_settings(),
                              again=VariationRequest(new_seed=False, guidance=2.0))
    assert report.skipped == ["1.png"] and len(page.variations) == 3
    assert sorted(p.name for p in project.folder.glob("*.png")) == sorted([first.name, second.name, third.file])

    project.pick_variation("1.png", 2)
    project.save()
    [cbz] = export_project(project, chapter, "cbz")
    with zipfile.ZipFile(cbz) as archive:
        [member] = [name for name in archive.namelist() if name.endswith(".png")]
        exported = np.asarray(Image.open(io.BytesIO(archive.read(member))).convert("RGB")).astype(int)
    assert np.array_equal(exported, pixels(second))
    assert export_project(project, chapter, "png") == [second.resolve()]
    assert ChapterProject.load(project.folder).page("1.png").picked == 2


def test_resume_keeps_a_picked_variation_and_redoes_it_with_its_seed_when_settings_change(one_page, pipeline, tmp_path):
    chapter, refs = one_page
    project = ChapterProject(folder=tmp_path / "out")
    colorize_chapter(chapter, refs, pipeline, project, settings=run_settings())
    colorize_chapter(chapter, refs, pipeline, project, settings=run_settings(), again=VariationRequest())
    project.pick_variation("1.png", 2)
    project.save()
    first, second = (project.folder / v.file for v in project.page("1.png").variations)
    before = stamp(first), stamp(second)

    report = colorize_chapter(chapter, refs, pipeline, project, settings=run_settings(), resume=True)
    assert report.skipped == ["1.png"] and report.done == []
    assert (stamp(first), stamp(second)) == before

    # more steps: the picked variation is made again with its own seed 8, into its own file
    report = colorize_chapter(chapter, refs, pipeline, project, settings=run_settings(steps=3), resume=True)
    assert report.done == ["1.png"]
    page = project.page("1.png")
    assert page.picked == 2 and [(v.id, v.seed, v.steps) for v in page.variations] == [(1, 7, 2), (2, 8, 3)]
    assert stamp(first) == before[0] and stamp(second) != before[1]
    plain = ChapterProject(folder=tmp_path / "plain")
    colorize_chapter(chapter, refs, pipeline, plain, settings=run_settings(seed=8, steps=3))
    assert np.array_equal(pixels(plain.folder / "001_1.png"), pixels(second))


def test_a_version_2_project_loads_with_its_result_as_variation_1(tmp_path):
    Image.new("RGB", (20, 30), (200, 10, 10)).save(tmp_path / "001_1.png")
    v2 = {"format": "colorflow-project", "version": 2, "inputs": ["/c"], "pages": [
        {"name": "1.png", "source": "/c/1.png", "status": "done", "error": None,
         "outputs": {"colored": "001_1.png", "canvas": "001_1/canvas.png"}, "settings_key": "k1"},
        {"name": "2.png", "source": "/c/2.png", "status": "pending", "outputs": {}},
    ]}
    raw = json.dumps(v2).encode()
    (tmp_path / PROJECT_FILE).write_bytes(raw)
    project = ChapterProject.load(tmp_path)
    page = project.page("1.png")
    assert [(v.id, v.file, v.settings_key, v.seed, v.guidance) for v in page.variations] == [
        (1, "001_1.png", "k1", None, None)]
    assert page.picked == 1 and page.status == "done" and page.settings_key == "k1"
    assert page.outputs == {"colored": "001_1.png", "canvas": "001_1/canvas.png"}
    assert project.page("2.png").variations == [] and project.page("2.png").picked is None
    assert (tmp_path / PROJECT_FILE).read_bytes() == raw  # loading never writes
    project.save()
    saved = json.loads((tmp_path / PROJECT_FILE).read_text())
    assert saved["version"] == 5 and saved["pages"][0]["picked"] == 1  # v2 -> v3 -> v4 (issue 24) -> v5 (issue 25)
    assert saved["pages"][0]["variations"] == [{"id": 1, "file": "001_1.png", "settings_key": "k1", "seed": None,
                                                 "guidance": None, "steps": None, "override": False}]
    assert (tmp_path / BACKUP_FILE).read_bytes() == raw  # the v2 file, for an older ColorFlow
    assert ChapterProject.load(tmp_path).to_json() == project.to_json()


def test_history_is_capped_at_8_and_the_oldest_unpicked_variation_goes_with_its_file(tmp_path):
    project = ChapterProject(folder=tmp_path)
    project.sync_pages([("1.png", "/c/1.png")])

    def add(number: int) -> None:
        name = f"001_1.v{number}.png"
        (tmp_path / name).write_bytes(b"png %d" % number)
        dropped = project.record_variation("1.png", name, f"k{number}", {"seed": number}, replace=None)
        project.save()
        project.remove_files(dropped)

    for number in range(1, 10):
        add(number)
    page = project.page("1.png")
    assert page.picked == 1  # the first result, the only one picked so far
    assert [v.id for v in page.variations] == [1, 3, 4, 5, 6, 7, 8, 9]
    assert not (tmp_path / "001_1.v2.png").exists() and (tmp_path / "001_1.v1.png").exists()
    project.pick_variation("1.png", 5)
    add(10)
    assert [v.id for v in page.variations] == [3, 4, 5, 6, 7, 8, 9, 10]
    assert not (tmp_path / "001_1.v1.png").exists()
    assert page.outputs["colored"] == "001_1.v5.png" and page.settings_key == "k5"
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(f"001_1.v{n}.png" for n in range(3, 11))


def _with_variations(**page) -> dict:
    return {"format": "colorflow-project", "version": 3, "pages": [
        {"name": "1.png", "source": "/c/1.png", "status": "done", "outputs": {"colored": "001_1.png"}, **page}]}


@pytest.mark.parametrize("page, field", [
    ({"variations": [{"id": 1, "file": "../elsewhere.png"}], "picked": None}, "pages[0].variations[0].file"),
    ({"variations": [{"id": 1, "file": "001_1.png"}], "picked": 2}, "pages[0] (page '1.png'): picked"),
    ({"variations": [{"id": 1, "file": "001_1.v2.png"}], "picked": 1}, "pages[0] (page '1.png'): picked"),
    ({"variations": [{"id": 1, "file": "001_1.png", "seed": -1}], "picked": 1}, "pages[0].variations[0].seed"),
    ({"variations": [{"id": 1, "file": "001_1.png", "guidance": "high"}], "picked": 1},
     "pages[0].variations[0].guidance"),
    ({"variations": [{"id": n, "file": f"001_1.v{n}.png"} for n in range(1, 10)], "picked": None},
     "pages[0].variations"),
])
def test_damaged_variations_are_a_project_file_error_naming_the_field(tmp_path, page, field):
    (tmp_path / PROJECT_FILE).write_text(json.dumps(_with_variations(**page)))
    with pytest.raises(ProjectFileError) as caught:
        ChapterProject.load(tmp_path)
    assert field in str(caught.value), str(caught.value)


def test_a_dropped_variation_never_deletes_through_a_link(tmp_path):
    project = ChapterProject(folder=tmp_path)
    project.sync_pages([("1.png", "/c/1.png")])
    (tmp_path / "001_1.png").write_bytes(b"picked")
    project.record_variation("1.png", "001_1.png", "k1", {}, replace=None)
    (tmp_path / "001_1.v2.png").symlink_to(tmp_path / "001_1.png")
    dropped = project.record_variation("1.png", "001_1.v2.png", "k2", {}, replace=None)
    for number in range(3, 10):
        dropped += project.record_variation("1.png", f"001_1.v{number}.png", f"k{number}", {}, replace=None)
    project.remove_files(dropped)
    assert (tmp_path / "001_1.png").read_bytes() == b"picked"
