"""Issue 25's foundation: levels series -> chapter -> page (the narrower wins), region pins in the
project, accepted pages and each result's retrieval record in the project file (format 5)."""

import json

import pytest

from engine.core.errors import InputError, ProjectFileError
from engine.project.state import ChapterProject
from engine.project.store import PROJECT_FILE
from engine.rap.curation import Choices, Curation, RegionPin, Target

A, B = Target("/refs/a.png"), Target("/refs/b.png", "TL")


def test_the_narrowest_level_with_a_say_decides_for_the_same_target():
    # The issue: "levels: series -> chapter -> page; the narrower level wins".
    series = Choices(pins=[A], rejects=[B])
    curation = Curation()
    assert curation.effective("p1", series).pins == [A] and curation.effective("p1", series).rejects == [B]
    curation.set(A, "reject")  # the chapter rejects what the series pins: rejected in this chapter
    curation.set(B, "pin", page="p1")  # one page pins what the series rejects: pinned on that page only
    p1, p2 = curation.effective("p1", series), curation.effective("p2", series)
    assert p1.pins == [B] and p1.rejects == [A]
    assert p2.pins == [] and set(p2.rejects) == {A, B}
    curation.set(A, "pin", page="p2")
    assert curation.effective("p2", series).pins == [A]


def test_region_pins_page_slots_over_chapter_slots():
    chapter_pin = RegionPin("/refs/a.png", (0.0, 0.0, 0.5, 0.5), "TL", 1)
    other_slot = RegionPin("/refs/a.png", (0.5, 0.5, 1.0, 1.0), "BR", 2)
    page_pin = RegionPin("/refs/b.png", (0.1, 0.2, 0.3, 0.4), "TL", 1)
    curation = Curation()
    curation.set_region(chapter_pin)
    curation.set_region(other_slot)
    curation.set_region(page_pin, page="p1")
    assert curation.effective("p1").regions == [page_pin, other_slot]
    assert curation.effective("p2").regions == [chapter_pin, other_slot]
    curation.clear_region("TL", 1, page="p1")
    assert curation.effective("p1").regions == [chapter_pin, other_slot] and "p1" not in curation.pages


@pytest.mark.parametrize("box, query, rank", [((0.5, 0, 0.4, 1), "TL", 1), ((0, 0, 1.2, 1), "TL", 1),
                                              ((0, 0, 1, 1), "centre", 1), ((0, 0, 1, 1), "TL", 4)])
def test_a_region_pin_outside_the_image_or_the_canvas_is_refused(box, query, rank):
    with pytest.raises(ValueError):
        RegionPin("/refs/a.png", box, query, rank)


def test_pixel_box_by_hand():
    # 0.25..0.75 of 200 px = 50..150; 0.1..0.3 of 90 px = 9..27
    assert RegionPin("/r.png", (0.25, 0.1, 0.75, 0.3), "BR", 3).pixel_box(200, 90) == (50, 9, 150, 27)


def _colored(tmp_path, pages=("1.png", "2.png")):
    project = ChapterProject(folder=tmp_path / "out")
    project.folder.mkdir()
    project.sync_pages([(name, f"/c/{name}") for name in pages])
    for index, name in enumerate(pages):
        (project.folder / f"00{index}.png").write_bytes(b"png")
        project.record_variation(name, project.folder / f"00{index}.png", "k", {"seed": 0}, replace=None)
    return project


RECORD = {"work_size": [256, 384], "page_size": [500, 750], "content_box": [0, 0, 256, 384],
          "picks": [[{"ref": "/refs/a.png", "patch": "TL", "box": [0, 0, 192, 288]}], [], [],
                    [{"ref": "/refs/b.png", "patch": "region", "box": [1, 2, 30, 40]}]],
          "accepted_used": ["2.png"]}


def test_accept_round_trip_and_what_clears_it(tmp_path):
    project = _colored(tmp_path)
    project.set_status("2.png", "failed", "boom")
    with pytest.raises(InputError, match="only a colored page"):
        project.accept("2.png")
    assert project.accept("1.png") == 1
    project.set_region_pin(RegionPin("/refs/b.png", (0.1, 0.1, 0.9, 0.9), "BR", 2), page="1.png")
    project.record_variation("2.png", project.folder / "001.v2.png", "k2", {"seed": 1, "retrieval": RECORD},
                             replace=None)
    project.series = {"folder": str(tmp_path / "series"), "chapter": "ch01"}
    project.save()
    saved = json.loads((project.folder / PROJECT_FILE).read_text())
    assert saved["version"] == 5 and saved["pages"][0]["accepted"] == 1 and "accepted" not in saved["pages"][1]
    again = ChapterProject.load(project.folder)
    assert again.to_json() == project.to_json()
    assert again.accepted_pages() == [("1.png", (project.folder / "000.png").resolve())]
    assert again.page("2.png").variations[-1].retrieval == RECORD
    assert again.choices_for("1.png").regions == [RegionPin("/refs/b.png", (0.1, 0.1, 0.9, 0.9), "BR", 2)]
    assert again.series == {"folder": str(tmp_path / "series"), "chapter": "ch01"}
    # A plain run colors the accepted result over: that result is gone, so is the acceptance.
    again.record_variation("1.png", again.folder / "000.png", "k3", {"seed": 0}, replace=1)
    assert again.page("1.png").accepted is None and again.accepted_pages() == []


@pytest.mark.parametrize("change, field", [
    (lambda d: d["pages"][0].update(accepted=9), "accepted"),
    (lambda d: d["pages"][0].update(accepted="1"), "accepted"),
    (lambda d: d["curation"]["chapter"].update(regions=[{"ref": "/r.png", "box": [0, 0, 2, 1], "query": "TL"}]),
     "box"),
    (lambda d: d["curation"]["chapter"].update(regions=[{"ref": "/r.png", "box": [0, 0, 1, 1], "query": "TL"}] * 2),
     "same query region"),
    (lambda d: d["pages"][0]["variations"][0].update(retrieval={"picks": []}), "retrieval"),
    (lambda d: d.update(series={"folder": 3, "chapter": "c"}), "series"),
])
def test_damaged_v5_fields_are_refused_naming_the_field(tmp_path, change, field):
    project = _colored(tmp_path)
    project.accept("1.png")
    project.save()
    data = json.loads((project.folder / PROJECT_FILE).read_text())
    change(data)
    (project.folder / PROJECT_FILE).write_text(json.dumps(data))
    with pytest.raises(ProjectFileError, match=field):
        ChapterProject.load(project.folder)
