"""Region pins (issue 25, manual correspondence): a rectangle of a reference takes one canvas cell
ahead of retrieval, pixel for pixel, at the page or chapter level; saved, undoable, in the key."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.core.geometry import WorkSize
from engine.gsrp.upscale import UpscaleSettings
from engine.icp.colorize import ColorizeSettings
from engine.io.chapter import ImageSource, PageImage, list_images, load_image
from engine.pipelines.settings import PipelineSettings
from engine.project.state import ChapterProject
from engine.rap.curation import Choices, Curation, RegionPin, Target
from engine.rap.embedding import EmbeddingCache
from engine.rap.retrieval import Candidate, Retriever

SIZE = WorkSize(256, 384)  # canvas 512 x 768, cells 128 x 192 (reference/GEOMETRY.md)
# Pasted area of a cell (row r, col c): x from c*128 + 1 to c*128 + 1 + (128 - 2), y from r*192 + 1
# to r*192 + 1 + (192 - 2): a 1-px white frame, 126 x 190 pixels of patch.
TL_RANK1 = (0 * 128 + 1, 1 * 192 + 1, 0 * 128 + 1 + 126, 1 * 192 + 1 + 190)  # TL rank 1 = (row 1, col 0)
BR_RANK3 = (3 * 128 + 1, 3 * 192 + 1, 3 * 128 + 1 + 126, 3 * 192 + 1 + 190)  # BR rank 3 = (row 3, col 3)
assert TL_RANK1 == (1, 193, 127, 383) and BR_RANK3 == (385, 577, 511, 767)


class MeanGridEmbedder:
    """Unit vectors of a 3x3 grid of mean colours: deterministic picks, no model."""

    encoder_id = "mean-grid-3x3"
    images_embedded = 0

    def embed(self, images) -> np.ndarray:
        grids = np.stack([np.asarray(im.convert("RGB").resize((3, 3), Image.BOX), np.float32).ravel()
                          for im in images]) - 127.5
        return grids / (np.linalg.norm(grids, axis=1, keepdims=True) + 1e-6)


def noise(size: tuple[int, int], seed: int, mode: str = "RGB") -> Image.Image:
    channels = 3 if mode == "RGB" else 1
    values = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), np.uint8)
    return Image.fromarray(values.squeeze(), mode)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("region-pins")
    (folder / "refs").mkdir()
    for i, size in enumerate([(200, 300), (320, 480), (256, 384)]):
        noise(size, 10 + i).save(folder / "refs" / f"ref{i}.png")
    # A character sheet, wide (3:2) while the working size is tall: a crop of its fitted copy (centre cut
    # to 2:3) would not match a crop of the original.
    noise((300, 200), 42).save(folder / "sheet.png")
    noise((180, 240), 43).save(folder / "other.png")
    noise((256, 384), 1, "L").save(folder / "page.png")
    (folder / "broken.png").write_bytes(b"not an image")
    page = load_image(ImageSource(folder / "page.png"), "L")
    return folder, page, list_images([folder / "refs"])


def retrieve(data, choices: Choices = Choices()):
    _, page, refs = data
    return Retriever(MeanGridEmbedder(), EmbeddingCache()).retrieve(page, refs, choices, SIZE)


def sheet(data) -> str:
    return str(data[0] / "sheet.png")


def expected_cell(path, pixel_box, cell) -> np.ndarray:
    """The original reference cropped at the box, resized (bicubic) into the cell: PIL, directly."""
    width, height = cell[2] - cell[0], cell[3] - cell[1]
    return np.asarray(Image.open(path).convert("RGB").crop(pixel_box).resize((width, height), Image.BICUBIC))


def test_region_pins_land_in_their_cells_pixel_for_pixel(data):
    # sheet.png is 300 x 200: box fractions -> pixels by hand. TL rank 1: (0.1, 0.2, 0.6, 0.9) ->
    # (30, 40, 180, 180); BR rank 3: (0.5, 0.0, 1.0, 0.5) -> (150, 0, 300, 100).
    pins = [RegionPin(sheet(data), (0.1, 0.2, 0.6, 0.9), "TL", 1), RegionPin(sheet(data), (0.5, 0.0, 1.0, 0.5), "BR", 3)]
    result = retrieve(data, Choices(regions=pins))
    canvas = np.asarray(result.canvas)
    for cell, box in ((TL_RANK1, (30, 40, 180, 180)), (BR_RANK3, (150, 0, 300, 100))):
        x0, y0, x1, y1 = cell
        assert (canvas[y0:y1, x0:x1] == expected_cell(data[0] / "sheet.png", box, cell)).all()
        assert (canvas[y0 - 1, x0 - 1 : x1 + 1] == 255).all() and (canvas[y1, x0 - 1 : x1 + 1] == 255).all()
        assert (canvas[y0:y1, x0 - 1] == 255).all() and (canvas[y0:y1, x1] == 255).all()  # the frame stays
    # retrieval.json shows them as what they are
    tl, br = result.to_json()["picks"][0][0], result.to_json()["picks"][3][2]
    assert tl == {"ref": sheet(data), "patch": "region", "box": [30, 40, 180, 180], "score": 0.0, "pinned": True}
    assert br == {"ref": sheet(data), "patch": "region", "box": [150, 0, 300, 100], "score": 0.0, "pinned": True}


def test_region_pins_go_ahead_of_retrieval_and_shift_it_down(data):
    plain = retrieve(data).picks
    region = Candidate(sheet(data), "region", (30, 40, 180, 180))
    one = retrieve(data, Choices(regions=[RegionPin(sheet(data), (0.1, 0.2, 0.6, 0.9), "TL", 1)])).picks
    # rank 1 taken: the displaced best pick moves to rank 2, the old rank 2 to rank 3, the old rank 3 drops
    assert [p.candidate for p in one[0]] == [region, plain[0][0].candidate, plain[0][1].candidate]
    assert one[0][0].pinned and one[0][0].score == 0.0 and one[0][1:] == plain[0][:2]
    assert one[1:] == plain[1:]  # the other query regions are untouched
    middle = retrieve(data, Choices(regions=[RegionPin(sheet(data), (0.1, 0.2, 0.6, 0.9), "TL", 2)])).picks
    assert [p.candidate for p in middle[0]] == [plain[0][0].candidate, region, plain[0][1].candidate]
    # two region pins of one query region fill their own ranks, whatever order they were placed in
    other = Candidate(str(data[0] / "other.png"), "region", (0, 0, 90, 240))  # 180 x 240: (0, 0, .5, 1)
    pins = [RegionPin(other.ref, (0.0, 0.0, 0.5, 1.0), "TL", 3), RegionPin(sheet(data), (0.1, 0.2, 0.6, 0.9), "TL", 1)]
    two = retrieve(data, Choices(regions=pins)).picks
    assert [p.candidate for p in two[0]] == [region, plain[0][0].candidate, other]


def test_a_region_pin_on_a_rejected_reference_still_applies(data):
    """Rejecting a reference drops its retrieved patches; a region pin cut from it is the user's explicit
    choice of that rectangle for that cell, so it still applies (explicit wins)."""
    ref = data[2][0].ref
    choices = Choices(rejects=[Target(ref)], regions=[RegionPin(ref, (0.0, 0.0, 0.5, 0.5), "BL", 1)])
    picks = retrieve(data, choices).picks
    assert picks[2][0].candidate == Candidate(ref, "region", (0, 0, 100, 150))  # ref0 is 200 x 300
    assert [p for row in picks for p in row if p.candidate.ref == ref] == [picks[2][0]]


def test_the_page_region_pin_beats_the_chapter_one_in_the_same_slot(data):
    curation = Curation()
    curation.set_region(RegionPin(sheet(data), (0.1, 0.2, 0.6, 0.9), "TR", 1))  # whole chapter
    curation.set_region(RegionPin(sheet(data), (0.5, 0.0, 1.0, 0.5), "BR", 2))  # whole chapter
    curation.set_region(RegionPin(str(data[0] / "other.png"), (0.0, 0.0, 0.5, 1.0), "TR", 1), page="page.png")
    mine = retrieve(data, curation.effective("page.png")).picks
    assert mine[1][0].candidate == Candidate(str(data[0] / "other.png"), "region", (0, 0, 90, 240))
    assert mine[3][1].candidate == Candidate(sheet(data), "region", (150, 0, 300, 100))  # the chapter's, slot free
    another = retrieve(data, curation.effective("another.png")).picks
    assert another[1][0].candidate == Candidate(sheet(data), "region", (30, 40, 180, 180))


def test_region_pins_survive_save_and_reopen_and_undo_gives_back_the_canvas(data, tmp_path):
    project = ChapterProject(folder=tmp_path, inputs=[str(data[0])], references=[r.ref for r in data[2]])
    project.sync_pages([("page.png", str(data[0] / "page.png"))])
    before = retrieve(data, project.choices_for("page.png")).canvas.tobytes()
    project.set_region_pin(RegionPin(sheet(data), (0.1, 0.2, 0.6, 0.9), "TL", 1), page="page.png")
    pinned = retrieve(data, project.choices_for("page.png"))
    assert pinned.canvas.tobytes() != before
    project.save()
    reopened = ChapterProject.load(tmp_path)
    assert reopened.choices_for("page.png").regions == [RegionPin(sheet(data), (0.1, 0.2, 0.6, 0.9), "TL", 1)]
    assert retrieve(data, reopened.choices_for("page.png")).canvas.tobytes() == pinned.canvas.tobytes()
    reopened.clear_region_pin("TL", 1, page="page.png")  # undo, at engine level
    assert retrieve(data, reopened.choices_for("page.png")).canvas.tobytes() == before


@pytest.mark.parametrize("name", ["broken.png", "missing.png"])
def test_an_unreadable_region_reference_is_a_warning_and_the_cell_keeps_retrieval(data, name):
    plain = retrieve(data)
    result = retrieve(data, Choices(regions=[RegionPin(str(data[0] / name), (0.0, 0.0, 0.5, 0.5), "TL", 1)]))
    assert any(name in w and "region" in w for w in result.warnings), result.warnings
    assert result.picks == plain.picks and result.canvas.tobytes() == plain.canvas.tobytes()


def test_the_resume_key_follows_the_region_pins(data):
    settings = PipelineSettings(ColorizeSettings(steps=4), UpscaleSettings(), keep_ink=True, size=SIZE)
    page = data[1]

    def key(*pins: RegionPin) -> str:
        return settings.key(page, retrieve(data, Choices(regions=list(pins))), "models")

    pin = RegionPin(sheet(data), (0.1, 0.2, 0.6, 0.9), "TL", 1)
    none, one = key(), key(pin)
    assert one != none  # added
    assert key(pin) == one  # unchanged: the same key, no recompute
    assert key(RegionPin(sheet(data), (0.2, 0.2, 0.7, 0.9), "TL", 1)) != one  # moved on the reference
    assert key(RegionPin(sheet(data), (0.1, 0.2, 0.6, 0.9), "TL", 2)) != one  # moved to another cell
    assert key() == none  # removed


def test_the_window_names_a_region_pick():
    from app.vocabulary import patch_name

    assert patch_name("/refs/sheet.png", "region") == "your region of sheet.png"


def test_the_references_panel_takes_a_region_pick(qtbot):
    """The panel reads picks as dicts (Pick.to_json): a region pick is named, and its menu and the P/R
    selectors act on its whole reference (a region is not one of the reference's 5 patches)."""
    pytest.importorskip("PySide6")
    from PySide6.QtGui import QPixmap

    from app.patch_views import SIMILARITY_BAR
    from app.reference_panel import ReferencePanel

    region = {"ref": "/refs/sheet.png", "patch": "region", "box": [30, 40, 180, 180], "score": 0.0, "pinned": True}
    retrieved = {"ref": "/refs/ref0.png", "patch": "TL", "box": [0, 0, 192, 288], "score": 0.5, "pinned": False}
    panel = ReferencePanel()
    qtbot.addWidget(panel)
    thumb = QPixmap(64, 96)
    panel.set_page_picks([[region, retrieved, retrieved]] + [[retrieved] * 3] * 3, [[thumb] * 3] * 4, {})
    said = panel.patch_buttons[("TL", 0)].toolTip()
    assert said.startswith("your region of sheet.png, pinned for the top-left region (a region pin") and "similarity" not in said
    # no similarity bar under a region pin's thumbnail (its 0 would read as a bad match): a retrieved pick's is taller
    heights = [panel.patch_buttons[("TL", rank)].iconSize().height() for rank in (0, 1)]
    assert heights[1] - heights[0] == SIMILARITY_BAR + 2
    seen = []
    panel.choice_requested.connect(lambda target, state, chapter: seen.append((target, state, chapter)))
    for action in panel.patch_menu(0, 0).actions():
        if not action.isSeparator():
            action.trigger()
    assert {t for t, _, _ in seen} == {Target("/refs/sheet.png")} and len(seen) == 6  # pin/reject/clear x page/chapter
    panel.patch_buttons[("TL", 0)].click()
    panel.extent.setCurrentIndex(0)  # "this patch"
    seen.clear()
    panel.action_buttons[0].click()
    assert [t for t, _, _ in seen] == [Target("/refs/sheet.png")]
