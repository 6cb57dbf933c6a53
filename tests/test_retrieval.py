"""RAP retrieval: top-3 selection, pins and rejects, canvas content, embedding cache."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.core.geometry import QUERY_PATCHES, WorkSize
from engine.rap.canvas import PLACEMENT, cell_box
from engine.io.chapter import list_images, open_chapter
from engine.rap.curation import Choices, Curation, Target
from engine.io.demo import make_demo_chapter
from engine.rap.embedding import EmbeddingCache
from engine.rap.retrieval import Candidate, Retriever, select_picks


def candidates(n_refs: int) -> list[Candidate]:
    return [Candidate(f"r{r}", p, None) for r in range(n_refs) for p in ("full", "TL", "TR", "BL", "BR")]


def test_select_top3_descending_allows_reuse_across_queries():
    cands = candidates(2)
    scores = np.tile(np.linspace(0.1, 1.0, len(cands)), (4, 1))
    picks = select_picks(scores, cands)
    assert all([p.candidate for p in row] == [cands[9], cands[8], cands[7]] for row in picks)
    assert all(row[0].score >= row[1].score >= row[2].score for row in picks)


def test_select_rejects_whole_reference_and_single_patch():
    cands = candidates(3)
    rng = np.random.default_rng(0)
    scores = rng.random((4, len(cands)))
    choices = Choices(rejects=[Target("r1"), Target("r2", "TL")])
    for row in select_picks(scores, cands, choices):
        assert len(row) == 3
        for pick in row:
            assert pick.candidate.ref != "r1"
            assert (pick.candidate.ref, pick.candidate.patch) != ("r2", "TL")


def test_pin_takes_first_slot_at_its_best_query_even_with_low_score():
    cands = candidates(3)
    scores = np.full((4, len(cands)), 0.9)
    scores[:, 10:15] = 0.1  # r2 scores lowest everywhere...
    scores[2, 12] = 0.3  # ...least badly for query BL with its TR patch
    unpinned = select_picks(scores, cands)
    assert all(p.candidate.ref != "r2" for row in unpinned for p in row)
    picks = select_picks(scores, cands, Choices(pins=[Target("r2")]))
    assert picks[2][0].candidate == cands[12] and picks[2][0].pinned
    assert all(p.candidate.ref != "r2" for q in (0, 1, 3) for p in picks[q])


def test_pins_spill_over_when_a_query_is_full_and_the_narrower_level_wins():
    cands = candidates(5)
    scores = np.zeros((4, len(cands)))
    scores[0] = 1.0  # every pin matches TL best
    pins = [Target(f"r{r}", "full") for r in range(5)]
    picks = select_picks(scores, cands, Choices(pins=pins))
    placed = {p.candidate.ref for row in picks for p in row if p.pinned}
    assert placed == {f"r{r}" for r in range(5)}
    assert sum(p.pinned for p in picks[0]) == 3
    # Levels series -> chapter -> page, the narrower level wins (issue 25): the page's pin beats the
    # chapter's reject of the same target, on that page only.
    curation = Curation()
    curation.set(Target("r0"), "reject")
    curation.set(Target("r0"), "pin", page="p1")
    effective = curation.effective("p1")
    assert Target("r0") in effective.pins and Target("r0") not in effective.rejects
    assert Target("r0") in curation.effective("p2").rejects


def test_pins_come_first_in_the_order_the_user_pinned_them():
    cands = candidates(5)
    # Hand-made scores: at TL, r4 > r3 > ... unpinned; the pins r1, r0, r2 score below all of them.
    scores = np.full((4, len(cands)), 0.05)
    for r, value in enumerate((0.30, 0.20, 0.25, 0.80, 0.90)):
        scores[0, 5 * r] = value  # each reference's "full" patch, at query TL only
    order = ["r1", "r2", "r0"]  # pinned in this order; by score it would be r2, r1, r0 (or r0 first ascending)
    picks = select_picks(scores, cands, Choices(pins=[Target(r, "full") for r in order]))
    assert [p.candidate.ref for p in picks[0]] == order
    assert all(p.pinned for p in picks[0])
    # Without pins, the same query patch takes the top-3 by score, descending.
    assert [p.candidate.ref for p in select_picks(scores, cands)[0]] == ["r4", "r3", "r0"]
    # One pin: it leads, the two best unpinned follow by score.
    one = select_picks(scores, cands, Choices(pins=[Target("r2", "full")]))[0]
    assert [p.candidate.ref for p in one] == ["r2", "r4", "r3"] and [p.pinned for p in one] == [True, False, False]


@pytest.fixture
def chapter_and_refs(tmp_path):
    chapter_dir, refs_dir = make_demo_chapter(tmp_path / "data", pages=3, refs=6)
    return open_chapter(chapter_dir), list_images([refs_dir])


def _cell_matches(canvas: Image.Image, patch: Image.Image, size: WorkSize, row: int, col: int) -> bool:
    x0, y0, x1, y1 = cell_box(size, row, col)
    expected = np.asarray(patch.resize((x1 - x0, y1 - y0), Image.BICUBIC), np.int16)
    return np.abs(np.asarray(canvas.crop((x0, y0, x1, y1)), np.int16) - expected).max() == 0


def test_pinned_reference_appears_in_canvas_despite_lower_score(tiny_embedder, chapter_and_refs, tmp_path):
    chapter, refs = chapter_and_refs
    retriever = Retriever(tiny_embedder, EmbeddingCache(tmp_path / "cache"))
    page = chapter.load_page(0)
    plain = retriever.retrieve(page, refs)
    used = {p.candidate.ref for row in plain.picks for p in row}
    unused = [r.ref for r in refs if r.ref not in used]
    assert unused, "with 6 references and 12 slots, some reference is left out"
    target = unused[0]
    pinned = retriever.retrieve(page, refs, Choices(pins=[Target(target)]))
    hits = [(q, rank, p) for q, row in enumerate(pinned.picks) for rank, p in enumerate(row) if p.candidate.ref == target]
    assert len(hits) == 1
    query, rank, pick = hits[0]
    assert rank == 0 and pick.pinned
    assert pick.score < min(p.score for p in plain.picks[query])  # it would not have made it
    row, col = PLACEMENT[QUERY_PATCHES[query]][0]
    patch = retriever.reference_patch(pick.candidate, pinned.work_size)
    assert _cell_matches(pinned.canvas, patch, pinned.work_size, row, col)


def test_rejected_reference_never_appears_in_any_canvas(tiny_embedder, chapter_and_refs, tmp_path):
    chapter, refs = chapter_and_refs
    retriever = Retriever(tiny_embedder, EmbeddingCache(tmp_path / "cache"))
    top = retriever.retrieve(chapter.load_page(0), refs).picks[0][0].candidate.ref
    curation = Curation()
    curation.set(Target(top), "reject")
    for index, name in enumerate(chapter.page_names):
        result = retriever.retrieve(chapter.load_page(index), refs, curation.effective(name))
        for q, row in enumerate(result.picks):
            assert len(row) == 3
            for rank, pick in enumerate(row):
                assert pick.candidate.ref != top
                cell = PLACEMENT[QUERY_PATCHES[q]][rank]
                patch = retriever.reference_patch(pick.candidate, result.work_size)
                assert _cell_matches(result.canvas, patch, result.work_size, *cell)


def test_second_retrieval_embeds_nothing_and_new_reference_embeds_five(
    tiny_embedder, chapter_and_refs, tmp_path
):
    chapter, refs = chapter_and_refs
    pages = [chapter.load_page(i) for i in range(len(chapter.sources))]
    first = Retriever(tiny_embedder, EmbeddingCache(tmp_path / "cache"))
    results = [first.retrieve(p, refs[:5]) for p in pages]
    assert first.reference_images_embedded == 5 * 5  # once per chapter, not per page
    assert first.query_images_embedded == 4 * len(pages)

    before = tiny_embedder.images_embedded
    reopened = Retriever(tiny_embedder, EmbeddingCache(tmp_path / "cache"))  # fresh memory
    again = [reopened.retrieve(p, refs[:5]) for p in pages]
    assert tiny_embedder.images_embedded == before
    assert reopened.reference_images_embedded == 0 and reopened.query_images_embedded == 0
    assert [r.to_json() for r in again] == [r.to_json() for r in results]

    reopened.retrieve(pages[0], refs)  # one reference added
    assert reopened.reference_images_embedded == 5
    assert tiny_embedder.images_embedded == before + 5


def test_damaged_cache_entry_is_recomputed(tiny_embedder, chapter_and_refs, tmp_path):
    chapter, refs = chapter_and_refs
    page = chapter.load_page(0)
    Retriever(tiny_embedder, EmbeddingCache(tmp_path / "cache")).retrieve(page, refs[:1])
    files = sorted((tmp_path / "cache").rglob("*_ref_*.npz"))
    assert len(files) == 1
    files[0].write_bytes(b"garbage")
    retriever = Retriever(tiny_embedder, EmbeddingCache(tmp_path / "cache"))
    retriever.retrieve(page, refs[:1])
    assert retriever.reference_images_embedded == 5


def test_unreadable_reference_is_skipped_with_warning(tiny_embedder, chapter_and_refs, tmp_path):
    chapter, refs = chapter_and_refs
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    retriever = Retriever(tiny_embedder)
    result = retriever.retrieve(chapter.load_page(0), [*refs[:2], *list_images([bad])])
    assert any("bad.png" in w for w in result.warnings)
    assert {p.candidate.ref for row in result.picks for p in row} <= {r.ref for r in refs[:2]}


def test_retrieval_is_deterministic_and_json_has_contract_fields(tiny_embedder, chapter_and_refs):
    chapter, refs = chapter_and_refs
    page = chapter.load_page(1)
    a = Retriever(tiny_embedder).retrieve(page, refs)
    b = Retriever(tiny_embedder).retrieve(page, refs)
    assert a.to_json() == b.to_json()
    data = a.to_json()
    assert data["work_size"] == [512, 800] and data["canvas_size"] == [1024, 1600]
    assert len(data["query_boxes"]) == 4 and all(len(row) == 3 for row in data["picks"])
    assert set(data["picks"][0][0]) >= {"ref", "box", "score"}
    assert np.asarray(a.canvas).shape == (1600, 1024, 3)


def test_rejecting_everything_leaves_cells_white_with_a_warning(tiny_embedder, chapter_and_refs):
    chapter, refs = chapter_and_refs
    choices = Choices(rejects=[Target(r.ref) for r in refs[1:]] + [Target(refs[0].ref, p) for p in ("TL", "TR", "BL")])
    result = Retriever(tiny_embedder).retrieve(chapter.load_page(0), refs, choices)
    assert all(len(row) == 2 for row in result.picks)  # only "full" and "BR" of refs[0] remain
    assert any("fewer than 3" in w for w in result.warnings)
    x0, y0, x1, y1 = cell_box(result.work_size, *PLACEMENT["TL"][2])
    assert np.asarray(result.canvas.crop((x0, y0, x1, y1))).min() == 255


def test_a_cached_reference_is_still_refused_when_its_format_is_not_allowed(tiny_embedder, chapter_and_refs, tmp_path):
    """Embeddings cached under an EPS file's sha256 (as a version that still decoded EPS would have
    left them) must not let the file through: its header is checked on every run."""
    import hashlib

    from hostile_files import eps
    from engine.core.geometry import reference_boxes
    from engine.rap.retrieval import _boxes_array

    chapter, refs = chapter_and_refs
    page = chapter.load_page(0)
    cache = EmbeddingCache(tmp_path / "cache")
    size = Retriever(tiny_embedder, cache).retrieve(page, refs[:2]).work_size
    disguised = tmp_path / "eps.png"
    disguised.write_bytes(eps(tmp_path / "never-written"))
    block = np.ones((5, tiny_embedder.embed([Image.new("RGB", (8, 8))]).shape[1]), np.float32)
    cache.put(tiny_embedder.encoder_id, hashlib.sha256(disguised.read_bytes()).hexdigest(), str(size), "ref",
              _boxes_array(reference_boxes(size)), block)
    result = Retriever(tiny_embedder, cache).retrieve(page, [*refs[:2], *list_images([disguised])])
    assert any("eps.png" in w and "PostScript" in w for w in result.warnings), result.warnings
    assert {p.candidate.ref for row in result.picks for p in row} <= {r.ref for r in refs[:2]}
