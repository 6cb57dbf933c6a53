"""Drift check (check-consistency): recurring regions compared by the median a*b* of their mid-tones, ΔE00."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from PIL import Image

from engine.cli.main import main
from engine.core.geometry import QUERY_PATCHES, WorkSize, box_on_page, query_boxes
from engine.evaluation.consistency import DEFAULT_THRESHOLD, check_consistency, delta_e00, region_color
from engine.project.state import ChapterProject

# --- the hand computations (independent of the module and of scikit-image) ------------------------


def srgb_to_lab(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    """IEC 61966-2-1 sRGB -> linear -> XYZ (D65 matrix, Lindbloom) -> CIELAB with the D65 white."""
    lin = [c / 255 / 12.92 if c / 255 <= 0.04045 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in rgb]
    matrix = ((0.4124564, 0.3575761, 0.1804375), (0.2126729, 0.7151522, 0.0721750), (0.0193339, 0.1191920, 0.9503041))
    x, y, z = (sum(m * c for m, c in zip(row, lin)) for row in matrix)

    def f(t: float) -> float:
        return t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29

    fx, fy, fz = f(x / 0.95047), f(y / 1.0), f(z / 1.08883)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def ciede2000(lab1, lab2) -> float:
    """CIEDE2000 written out from Sharma, Wu & Dalal (2005), eqs. (1)-(22), kL = kC = kH = 1."""
    (l1, a1, b1), (l2, a2, b2) = lab1, lab2
    c_bar = (math.hypot(a1, b1) + math.hypot(a2, b2)) / 2
    g = 0.5 * (1 - math.sqrt(c_bar ** 7 / (c_bar ** 7 + 25 ** 7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = math.hypot(a1p, b1), math.hypot(a2p, b2)
    h1p = 0.0 if a1p == b1 == 0 else math.degrees(math.atan2(b1, a1p)) % 360
    h2p = 0.0 if a2p == b2 == 0 else math.degrees(math.atan2(b2, a2p)) % 360
    dl, dc = l2 - l1, c2p - c1p
    if c1p * c2p == 0:
        dh = 0.0
    elif abs(h2p - h1p) <= 180:
        dh = h2p - h1p
    else:
        dh = h2p - h1p - 360 if h2p - h1p > 180 else h2p - h1p + 360
    dH = 2 * math.sqrt(c1p * c2p) * math.sin(math.radians(dh / 2))
    l_bar, cp_bar = (l1 + l2) / 2, (c1p + c2p) / 2
    if c1p * c2p == 0:
        h_bar = h1p + h2p
    elif abs(h1p - h2p) <= 180:
        h_bar = (h1p + h2p) / 2
    else:
        h_bar = (h1p + h2p + 360) / 2 if h1p + h2p < 360 else (h1p + h2p - 360) / 2
    cos = lambda deg: math.cos(math.radians(deg))  # noqa: E731
    t = 1 - 0.17 * cos(h_bar - 30) + 0.24 * cos(2 * h_bar) + 0.32 * cos(3 * h_bar + 6) - 0.20 * cos(4 * h_bar - 63)
    d_theta = 30 * math.exp(-(((h_bar - 275) / 25) ** 2))
    r_c = 2 * math.sqrt(cp_bar ** 7 / (cp_bar ** 7 + 25 ** 7))
    s_l = 1 + 0.015 * (l_bar - 50) ** 2 / math.sqrt(20 + (l_bar - 50) ** 2)
    s_c, s_h = 1 + 0.045 * cp_bar, 1 + 0.015 * cp_bar * t
    r_t = -math.sin(math.radians(2 * d_theta)) * r_c
    return math.sqrt((dl / s_l) ** 2 + (dc / s_c) ** 2 + (dH / s_h) ** 2 + r_t * (dc / s_c) * (dH / s_h))


@pytest.mark.parametrize("lab1, lab2, expected", [  # Sharma, Wu & Dalal (2005), Table 1, pairs 1, 7, 11, 13, 17, 25
    ((50, 2.6772, -79.7751), (50, 0, -82.7485), 2.0425),
    ((50, 0, 0), (50, -1, 2), 2.3669),
    ((50, 2.49, -0.001), (50, -2.49, 0.0009), 7.1792),
    ((50, 2.49, -0.001), (50, -2.49, 0.0011), 7.2195),
    ((50, 2.5, 0), (73, 25, -18), 27.1492),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
])
def test_hand_ciede2000_matches_the_published_pairs(lab1, lab2, expected):
    assert ciede2000(lab1, lab2) == pytest.approx(expected, abs=1e-4)
    assert ciede2000(lab2, lab1) == pytest.approx(expected, abs=1e-4)


def test_hand_srgb_to_lab_on_known_colours():
    assert srgb_to_lab((255, 255, 255)) == pytest.approx((100, 0, 0), abs=0.01)
    assert srgb_to_lab((255, 0, 0)) == pytest.approx((53.24, 80.09, 67.20), abs=0.02)  # the usual sRGB red


# --- building projects of generated colored pages ----------------------------------------------

WORK, PAGE = [256, 256], [384, 384]  # the page is 1.5x the working frame, no letterbox
TL_BOX, BR_BOX = (0, 0, 288, 288), (96, 96, 384, 384)  # query boxes (0,0,192,192), (64,64,256,256) x 1.5
ORANGE, BLUE = (200, 120, 60), (70, 110, 190)
HERO = "/refs/hero.png"


def draw_page(path, base, *, recolor=None, ink_offset=0, size=PAGE) -> None:
    """A colored page: flat mid-tone color, white paper margins, a grid of black ink lines."""
    w, h = size
    pixels = np.empty((h, w, 3), np.uint8)
    pixels[:] = base
    if recolor is not None:
        (x0, y0, x1, y1), color = recolor
        pixels[y0:y1, x0:x1] = color
    pixels[:12], pixels[-12:], pixels[:, :12], pixels[:, -12:] = 255, 255, 255, 255
    for at in range(ink_offset, max(w, h), 24):
        pixels[at:at + 3], pixels[:, at:at + 3] = 0, 0
    Image.fromarray(pixels).save(path)


def record(tl_ref: str | None, br_ref: str | None, index: int, work=WORK) -> dict:
    """A retrieval record whose rank-1 picks are `tl_ref`'s TL patch (TL region) and `br_ref`'s BR patch;
    TR and BL picks are the page's own references (no group). Patch boxes as retrieval cuts them."""
    def picks(ref, patch):
        box = list(query_boxes(WorkSize(*work))[QUERY_PATCHES.index(patch)])
        return [{"ref": ref, "patch": patch, "box": box}, {"ref": HERO, "patch": "full", "box": None}]

    return {"work_size": work, "page_size": PAGE, "content_box": [0, 0, *work], "accepted_used": [],
            "picks": [picks(tl_ref or f"/refs/own{index}.png", "TL"), picks(f"/refs/tr{index}.png", "TR"),
                      picks(f"/refs/bl{index}.png", "BL"), picks(br_ref or f"/refs/own{index}.png", "BR")]}


def new_project(folder, names) -> ChapterProject:
    project = ChapterProject(folder=folder)
    project.sync_pages([(name, f"/chapter/{name}.png") for name in names])
    return project


def add_page(project, name, base, retrieval, **draw) -> None:
    path = project.folder / f"{name}.png"
    draw_page(path, base, **draw)
    made = {"seed": 0} if retrieval is None else {"seed": 0, "retrieval": retrieval}
    project.record_variation(name, path, "key", made, replace=None)


def jittered(index: int) -> tuple[int, int, int]:
    j = (index * 5) % 7 - 3  # -3..3: the small page-to-page noise of a real run
    return ORANGE[0] + j, ORANGE[1] - j // 2, ORANGE[2] + j


@pytest.fixture(scope="module")
def ten_pages(tmp_path_factory):
    """Ten colored pages: every TL region retrieved the hero's TL patch, the BR regions of p00-p04 the
    hero's BR patch; p07's TL area was colored blue instead of orange."""
    folder = tmp_path_factory.mktemp("ten")
    names = [f"p{i:02d}" for i in range(10)]
    project = new_project(folder, names)
    for i, name in enumerate(names):
        recolor = (TL_BOX, BLUE) if i == 7 else None
        add_page(project, name, jittered(i), record(HERO, HERO if i < 5 else None, i), recolor=recolor, ink_offset=i)
    project.save()
    return folder


def test_box_on_page_by_hand():
    assert box_on_page((0, 0, 192, 192), (0, 0, 256, 256), (384, 384)) == TL_BOX
    assert box_on_page((64, 64, 256, 256), (0, 0, 256, 256), (384, 384)) == BR_BOX
    # a 256x512 page letterboxed into 256x256: content (64, 0, 192, 256) at half scale
    assert box_on_page((0, 0, 192, 192), (64, 0, 192, 256), (256, 512)) == (0, 0, 256, 384)
    assert box_on_page((64, 64, 256, 256), (64, 0, 192, 256), (256, 512)) == (0, 128, 256, 512)
    assert box_on_page((0, 0, 60, 60), (64, 0, 192, 256), (256, 512)) is None  # all in the white padding


def test_recolored_page_ranks_first_against_another_page(ten_pages):
    report = check_consistency(ChapterProject.load(ten_pages))
    first = report.pages[0]
    assert first.page == "p07" and first.query == "TL" and tuple(first.box) == TL_BOX
    assert first.compared_page != "p07" and first.compared_query == "TL" and tuple(first.compared_box) == TL_BOX
    assert first.compared_file == f"{first.compared_page}.png"
    assert first.reference == f"{HERO}#TL"
    # by hand: p07's blue against the median a*, b* of the ten TL regions' colors, at L* = 50
    labs = [srgb_to_lab(BLUE if i == 7 else jittered(i)) for i in range(10)]
    median = (50, float(np.median([lab[1] for lab in labs])), float(np.median([lab[2] for lab in labs])))
    assert first.delta_e == pytest.approx(ciede2000(median, (50, *labs[7][1:])), abs=0.05)
    assert first.delta_e > DEFAULT_THRESHOLD
    assert all(p.delta_e < 3 for p in report.pages[1:])
    assert sorted(p.page for p in report.pages) == [f"p{i:02d}" for i in range(10)]
    assert report.groups == 2 and report.regions_left_out == 0 and report.unchecked == []


def test_delta_e00_of_two_flat_patches_matches_hand(tmp_path):
    a_rgb, b_rgb = (200, 120, 60), (185, 125, 80)
    lab_a, lab_b = srgb_to_lab(a_rgb), srgb_to_lab(b_rgb)
    hand = ciede2000((50, *lab_a[1:]), (50, *lab_b[1:]))  # only hue and chroma count: L* fixed at 50
    flat = lambda rgb: np.full((40, 40, 3), rgb, np.uint8)  # noqa: E731
    assert delta_e00(region_color(flat(a_rgb)), region_color(flat(b_rgb))) == pytest.approx(hand, abs=0.02)
    # through the whole check: three pages share the TL patch, two colored A, one B; the median is A.
    # b was colored at another working size: the hero's TL patch (cut at that size) is still the same patch
    project = new_project(tmp_path, ["a1", "a2", "b"])
    for index, (name, rgb) in enumerate((("a1", a_rgb), ("a2", a_rgb), ("b", b_rgb))):
        add_page(project, name, rgb, record(HERO, None, index, work=[320, 320] if name == "b" else WORK))
    report = check_consistency(project)
    assert [p.page for p in report.pages] == ["b", "a1", "a2"]
    assert report.pages[0].delta_e == pytest.approx(hand, abs=0.02)
    assert report.pages[1].delta_e == pytest.approx(0, abs=1e-6) and report.pages[0].compared_page == "a1"
    assert report.pages[1].compared_page == "a2"  # a1 is the median itself: matched with another page, never itself


def test_ink_and_paper_do_not_move_the_median():
    color = (150, 90, 170)
    flat = np.full((40, 40, 3), color, np.uint8)
    inked = np.concatenate([flat, np.zeros((40, 70, 3), np.uint8), np.full((40, 50, 3), 255, np.uint8)], axis=1)
    assert region_color(inked) == pytest.approx(region_color(flat), abs=1e-9)
    assert region_color(flat) == pytest.approx(srgb_to_lab(color)[1:], abs=0.02)
    mostly_ink = np.zeros((200, 200, 3), np.uint8)
    mostly_ink[:2, :2] = color  # 4 colored pixels among 40,000: too few to say anything
    assert region_color(mostly_ink) is None


def test_unchecked_pages_and_left_out_regions(tmp_path):
    project = new_project(tmp_path, ["a", "b", "blank", "norecord", "pending", "pin1", "pin2", "pin3"])
    add_page(project, "a", ORANGE, record(HERO, None, 0))
    add_page(project, "b", ORANGE, record(HERO, None, 1))
    add_page(project, "blank", (255, 255, 255), record(HERO, None, 2))  # paper only: no color to compare
    add_page(project, "norecord", ORANGE, None)
    pins = (("pin1", [0, 0, 40, 60]), ("pin2", [0, 0, 40, 60]), ("pin3", [50, 0, 90, 60]))
    for index, (name, box) in enumerate(pins):
        pinned = record(None, None, 10 + index)  # a region pin of the hero's: the same one only with the same box
        pinned["picks"][0][0] = {"ref": HERO, "patch": "region", "box": box}
        add_page(project, name, BLUE, pinned)
    project.sync_pages([(p.name, p.source) for p in project.pages] + [("odd", "/o.png"), ("outside", "/x.png")])
    add_page(project, "odd", ORANGE, {**record(HERO, None, 20), "work_size": [100, 100]})  # not a working size
    add_page(project, "outside", ORANGE, {**record(HERO, None, 21), "content_box": [0, 0, 300, 256]})
    report = check_consistency(project)
    assert [p.page for p in report.pages] == ["a", "b", "pin1", "pin2"]
    assert report.pages[2].reference == f"{HERO}#region" and report.pages[2].compared_page == "pin2"
    assert report.regions_left_out == 1 and report.groups == 2
    why = dict(report.unchecked)
    assert set(why) == {"blank", "norecord", "pending", "pin3", "odd", "outside"}
    assert "not usable" in why["odd"] and "not inside the 256x256" in why["outside"]
    assert "retrieval record" in why["norecord"] and "not colored" in why["pending"]
    assert "ink and paper" in why["blank"] and "another page" in why["pin3"]


def test_a_recorded_file_escaping_the_folder_is_refused(tmp_path, capsys):
    outside = tmp_path / "outside.png"
    draw_page(outside, BLUE)
    folder = tmp_path / "project"
    folder.mkdir()
    project = new_project(folder, ["a", "b", "c"])
    add_page(project, "a", ORANGE, record(HERO, None, 0))
    add_page(project, "b", ORANGE, record(HERO, None, 1))
    os.symlink(outside, folder / "c.png")  # a link put in the folder after the run
    project.record_variation("c", "c.png", "key", {"seed": 0, "retrieval": record(HERO, None, 2)}, replace=None)
    report = check_consistency(project)
    assert [p.page for p in report.pages] == ["a", "b"] and all(p.delta_e == 0 for p in report.pages)
    assert "outside the project folder" in dict(report.unchecked)["c"]
    project.save()
    data = json.loads((folder / "colorflow-project.json").read_text())
    data["pages"][2]["variations"][0]["file"] = data["pages"][2]["outputs"]["colored"] = "../outside.png"
    (folder / "colorflow-project.json").write_text(json.dumps(data))
    assert main(["check-consistency", str(folder), "--json"]) == 2
    captured = capsys.readouterr()
    assert "must stay inside the project folder" in captured.err and "'../outside.png'" in captured.err
    assert captured.out == ""


def test_cli_json_shape_and_exit_codes(ten_pages, capsys):
    assert main(["check-consistency", str(ten_pages), "--json"]) == 1  # p07 is above the default threshold
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"pages", "groups", "regions_left_out", "threshold", "unchecked"}
    assert data["threshold"] == DEFAULT_THRESHOLD and data["groups"] == 2 and data["unchecked"] == []
    first = data["pages"][0]
    assert set(first) == {"page", "delta_e", "region", "box", "compared_with", "reference"}
    assert set(first["compared_with"]) == {"page", "region", "box", "file"}
    assert first["page"] == "p07" and first["region"] == "TL" and first["box"] == list(TL_BOX)
    assert first["delta_e"] == round(first["delta_e"], 2) and first["reference"] == f"{HERO}#TL"
    deltas = [p["delta_e"] for p in data["pages"]]
    assert deltas == sorted(deltas, reverse=True) and len(deltas) == 10
    above = first["delta_e"] + 0.01
    assert main(["check-consistency", str(ten_pages), "--json", "--threshold", str(above)]) == 0
    assert json.loads(capsys.readouterr().out)["threshold"] == above
    assert main(["check-consistency", str(ten_pages), "--threshold", str(first["delta_e"] - 0.01)]) == 1
    table = capsys.readouterr().out
    assert table.index("p07") < min(table.index(f"p{i:02d}") for i in range(10) if i != 7)


def test_cli_bad_usage_exits_2(tmp_path, capsys):
    assert main(["check-consistency", str(tmp_path / "none")]) == 2
    assert "no ColorFlow project" in capsys.readouterr().err
    (tmp_path / "colorflow-project.json").write_text("{ damaged")
    assert main(["check-consistency", str(tmp_path)]) == 2
    assert "colorflow-project.json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["check-consistency", str(tmp_path), "--threshold", "-1"])
    assert exit_.value.code == 2
