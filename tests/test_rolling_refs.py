"""Rolling references (issue 25): accepted pages join the reference pool, a page never retrieves
itself or an unaccepted page, each colored result records what it was retrieved from, and the resume
key changes exactly when the accepted pages a page used change. No model: the correlation embedder
of rolling_fakes makes the similarities known by construction (a page is most like itself, then like
the other pages of its ramp direction, unlike the noise reference and the other direction)."""

from __future__ import annotations

import json

import pytest

from engine.core.events import Notice
from engine.core.geometry import WorkSize
from engine.io.chapter import ImageSource, list_images, open_chapter
from engine.pipelines.chapter import colorize_chapter, retrieve_chapter
from engine.pipelines.variations import VariationRequest
from engine.project.reference_pool import build_pool
from engine.project.state import ChapterProject
from rolling_fakes import SIZE, PagesAsColored, noise_image, ramp_page, run_settings

# 1 and 3 are horizontal ramps, 2 and 4 vertical ones; each has its own detail.
PAGES = {"1.png": ("h", 1), "2.png": ("v", 2), "3.png": ("h", 3), "4.png": ("v", 4)}
KEPT = "accepted: kept; un-accept it to color it again"


@pytest.fixture
def chapter(tmp_path):
    (tmp_path / "pages").mkdir()
    (tmp_path / "refs").mkdir()
    for name, (direction, seed) in PAGES.items():
        ramp_page(direction, seed).save(tmp_path / "pages" / name)
    noise_image(9).save(tmp_path / "refs" / "noise.png")
    return open_chapter([tmp_path / "pages"]), list_images([tmp_path / "refs"])


def colored_file(project: ChapterProject, name: str) -> str:
    return str(project.folder / project.page(name).outputs["colored"])


def picked_refs(project: ChapterProject, name: str) -> list[str]:
    record = project.page(name).picked_variation().retrieval
    return [pick["ref"] for row in record["picks"] for pick in row]


def test_accepted_pages_are_picked_never_unaccepted_ones_and_the_record_and_key_say_which(chapter, tmp_path):
    pages, refs = chapter
    pipeline = PagesAsColored(tmp_path / "cache")
    project = ChapterProject(folder=tmp_path / "out")
    first = colorize_chapter(pages, refs, pipeline, project, settings=run_settings())
    assert first.done == list(PAGES)
    noise = refs[0].ref
    for name in PAGES:  # every run records its retrieval, pool or not: here the noise reference only
        record = project.page(name).picked_variation().retrieval
        assert record["work_size"] == [SIZE, SIZE] and record["page_size"] == [SIZE, SIZE]
        assert record["content_box"] == [0, 0, SIZE, SIZE] and record["accepted_used"] == []
        assert len(record["picks"]) == 4 and all(len(row) == 3 for row in record["picks"])
        assert set(picked_refs(project, name)) == {noise}
        assert {p["patch"] for row in record["picks"] for p in row} <= {"full", "TL", "TR", "BL", "BR"}
    accepted_bytes = (project.folder / project.page("1.png").outputs["colored"]).read_bytes()
    project.accept("1.png")
    own_result_of_3 = colored_file(project, "3.png")  # 3's best match by construction, not accepted

    events = []
    pipeline.colored.clear()
    second = colorize_chapter(pages, refs, pipeline, project, settings=run_settings(), emit=events.append,
                              resume=True, pool=build_pool(project, refs, None, rolling=True))
    # 3 now retrieves from accepted page 1 (its key changed); 2 and 4 use no accepted page: keys kept
    assert pipeline.colored == ["3.png"] and second.done == ["3.png"]
    assert sorted(second.skipped) == ["1.png", "2.png", "4.png"]
    assert ("1.png", KEPT) in [(e.page, e.message) for e in events if isinstance(e, Notice)]
    assert project.page("1.png").accepted == 1 and project.page("1.png").status == "done"
    assert (project.folder / project.page("1.png").outputs["colored"]).read_bytes() == accepted_bytes
    accepted_1 = colored_file(project, "1.png")
    assert set(picked_refs(project, "3.png")) == {accepted_1}  # never its own earlier result, never the noise
    assert own_result_of_3 not in picked_refs(project, "3.png")
    assert project.page("3.png").picked_variation().retrieval["accepted_used"] == ["1.png"]

    project.accept("2.png")  # what 4 is most like (besides its own result, not accepted)
    pipeline.colored.clear()
    third = colorize_chapter(pages, refs, pipeline, project, settings=run_settings(), resume=True,
                             pool=build_pool(project, refs, None, rolling=True))
    assert pipeline.colored == ["4.png"] and sorted(third.skipped) == ["1.png", "2.png", "3.png"]
    assert set(picked_refs(project, "4.png")) == {colored_file(project, "2.png")}
    assert project.page("4.png").picked_variation().retrieval["accepted_used"] == ["2.png"]
    saved = ChapterProject.load(project.folder)  # the record survives a save and a reload (schema-checked)
    assert saved.page("4.png").picked_variation().retrieval["accepted_used"] == ["2.png"]


def test_a_page_never_retrieves_its_own_accepted_result(chapter, tmp_path):
    """Page 1's own accepted result is its best match by construction (1.0 against 0.97 for page 3's):
    colored again, or retrieved, it takes page 3's and never its own."""
    pages, refs = chapter
    pipeline = PagesAsColored(tmp_path / "cache")
    project = ChapterProject(folder=tmp_path / "out")
    colorize_chapter(pages, refs, pipeline, project, settings=run_settings())
    project.accept("1.png")
    project.accept("3.png")
    own, other = colored_file(project, "1.png"), colored_file(project, "3.png")
    pool = build_pool(project, refs, None, rolling=True)
    assert [ImageSource.parse(own)] == [s for s in pool.for_page("3.png") if s.ref == own]
    assert own not in [s.ref for s in pool.for_page("1.png")]

    report = colorize_chapter(pages, refs, pipeline, project, settings=run_settings(), only={"1.png"},
                              again=VariationRequest(), pool=pool)
    assert report.done == ["1.png"]
    new = project.page("1.png").variations[-1]
    used = [pick["ref"] for row in new.retrieval["picks"] for pick in row]
    assert set(used) == {other} and new.retrieval["accepted_used"] == ["3.png"]
    assert project.page("1.png").accepted == 1  # the accepted result stays the one accepted

    retrieve_chapter(pages, refs, pipeline.retriever, project, size=run_settings().size, pool=pool)
    retrieval = json.loads((project.folder / "001_1" / "retrieval.json").read_text())
    assert {pick["ref"] for row in retrieval["picks"] for pick in row} == {other}
    assert (project.page("1.png").status, project.page("1.png").accepted) == ("done", 1)  # retrieving keeps it


def test_an_unusable_accepted_file_is_a_warning_not_a_page_failure(chapter, tmp_path):
    pages, refs = chapter
    pipeline = PagesAsColored(tmp_path / "cache")
    project = ChapterProject(folder=tmp_path / "out")
    colorize_chapter(pages, refs, pipeline, project, settings=run_settings())
    project.accept("1.png")
    (project.folder / project.page("1.png").outputs["colored"]).write_bytes(b"damaged")
    events = []
    report = colorize_chapter(pages, refs, pipeline, project, settings=run_settings(), emit=events.append,
                              pool=build_pool(project, refs, None, rolling=True))
    assert report.done == ["2.png", "3.png", "4.png"] and not report.failed
    assert any("001_1.png" in w for w in report.warnings)
    assert any(isinstance(e, Notice) and "001_1.png" in e.message for e in events)
    assert set(picked_refs(project, "3.png")) == {refs[0].ref}


def test_an_accepted_page_colored_again_in_place_is_read_again(tmp_path):
    """The app keeps one retriever for hours: a page un-accepted, colored again (its file rewritten
    atomically under the same name) and accepted again must be retrieved as it is now, not as it was."""
    from engine.core.geometry import WorkSize
    from engine.io.chapter import load_image
    from engine.io.fileio import atomic_save_image
    from engine.rap.curation import Choices
    from engine.rap.embedding import EmbeddingCache
    from engine.rap.retrieval import Retriever
    from rolling_fakes import CorrelationEmbedder

    ramp_page("h", 1).save(tmp_path / "page.png")
    page = load_image(ImageSource(tmp_path / "page.png"), "L")
    accepted, noise = tmp_path / "003_3.png", tmp_path / "noise.png"
    noise_image(9).save(noise)
    atomic_save_image(ramp_page("v", 3).convert("RGB"), accepted)  # unlike the page: the noise is picked
    retriever = Retriever(CorrelationEmbedder(), EmbeddingCache(tmp_path / "embeddings"))
    sources = [ImageSource(accepted), ImageSource(noise)]

    def picked() -> set[str]:
        result = retriever.retrieve(page, sources, Choices(), WorkSize(SIZE, SIZE))
        return {p.candidate.ref for row in result.picks for p in row}

    assert picked() == {str(noise)}
    atomic_save_image(ramp_page("h", 3).convert("RGB"), accepted)  # now like the page
    assert picked() == {str(accepted)}


def test_accepted_pages_embeddings_are_cached_like_other_references(chapter, tmp_path):
    """Issue 25: "Embeddings of accepted pages are cached like other references": an accepted page is
    embedded once (its 5 patches), then read from the disk cache, also by a new process (new retriever)."""
    pages, refs = chapter
    pipeline = PagesAsColored(tmp_path / "cache")
    project = ChapterProject(folder=tmp_path / "out")
    colorize_chapter(pages, refs, pipeline, project, settings=run_settings())
    project.accept("1.png")
    pool = build_pool(project, refs, None, rolling=True)
    before = pipeline.retriever.reference_images_embedded
    retrieve_chapter(pages, refs, pipeline.retriever, project, size=WorkSize(SIZE, SIZE), pool=pool)
    assert pipeline.retriever.reference_images_embedded - before == 5  # the accepted page, its 5 patches, once
    fresh = PagesAsColored(tmp_path / "cache")  # a new process: the same disk cache, nothing in memory
    retrieve_chapter(pages, refs, fresh.retriever, project, size=WorkSize(SIZE, SIZE), pool=pool)
    assert fresh.retriever.reference_images_embedded == 0
