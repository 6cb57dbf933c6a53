"""The chapter loop keeps the GPU busy: page n+1's CPU work (decode, G, retrieval, canvas) runs on a
helper thread while page n is in diffusion, with the same bytes as the sequential run; events and
project writes stay on the calling thread; cancel and a failing page behave as before."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from engine.core.events import CancelToken, Cancelled, Notice, PageDone, PageFailed, Preview, Progress
from engine.core.options import RunSettings
from engine.io.chapter import list_images, open_chapter
from engine.io.demo import make_demo_chapter
from engine.pipelines.chapter import colorize_chapter
from engine.pipelines.chapter_pages import PREFETCH_THREAD
from engine.pipelines.settings import pipeline_settings
from engine.preprocess.page import PagePreparer
from engine.project.state import ChapterProject

PAGES = ["1.png", "2.png", "3.png"]
WRITTEN = ["001_1.png", "002_2.png", "003_3.png"]


def settings(procedure: str = "ours", **more):
    chosen = {"models": "tiny", "steps": 1, "size": "256x256", "seed": 7, "input_style": "gray", **more}
    return pipeline_settings(RunSettings(procedure=procedure, **chosen))


@pytest.fixture
def chapter(tmp_path):
    pages, refs = make_demo_chapter(tmp_path / "demo", pages=3, refs=3, size=(200, 200))
    return open_chapter(pages), list_images([refs])


def slow_retrieval(pipeline, seconds: float = 0.25):
    """Each retrieval on the helper thread takes `seconds` longer (as a large page's would): a page's
    preparation then surely lasts past the start of the page before's ICP when they overlap."""
    retrieve = pipeline.retrieve

    def slower(*args, **kwargs):
        if threading.current_thread().name.startswith(PREFETCH_THREAD):
            time.sleep(seconds)
        return retrieve(*args, **kwargs)

    pipeline.retrieve = slower
    return pipeline


def run(chapter, pipeline, folder, run_settings, **kwargs):
    """colorize_chapter, its events (with the thread each came from) and the bytes of every page written."""
    pages, refs = chapter
    events = []
    sink = kwargs.pop("emit", None)

    def emit(event):
        events.append((event, threading.current_thread()))
        if sink is not None:
            sink(event)

    project = ChapterProject(folder=folder)
    report = colorize_chapter(pages, refs, pipeline, project, settings=run_settings, emit=emit, **kwargs)
    written = {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}
    return report, events, written


def overlapping(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def interval(report, page: str, stage: str) -> tuple[float, float]:
    found = [(start, end) for name, kind, start, end in report.intervals if (name, kind) == (page, stage)]
    assert len(found) == 1, (page, stage, report.intervals)
    return found[0]


def assert_one_page_after_another(report, pages=PAGES) -> None:
    for before, after in zip(pages, pages[1:]):  # the next page's preparation starts once the page before is written
        assert interval(report, after, "prepare")[0] >= interval(report, before, "write")[1]
        assert not overlapping(interval(report, after, "prepare"), interval(report, before, "ICP"))


@pytest.mark.parametrize("procedure", ["ours", "official"])
def test_overlapped_run_writes_the_bytes_of_the_sequential_run(chapter, make_tiny_pipeline, tmp_path, procedure):
    """Same PNG bytes with and without overlap; with it (ours) page n+1's preparation overlaps page
    n's ICP, the official procedure (global-RNG draws in ICP and GSRP) runs one page after another
    (two pages show it)."""
    pages = PAGES if procedure == "ours" else PAGES[:2]
    runs = {}
    for overlap in (False, True):
        pipeline = slow_retrieval(make_tiny_pipeline(tmp_path / "cache", screen=False))  # embeddings made once
        runs[overlap] = run(chapter, pipeline, tmp_path / f"out-{overlap}", settings(procedure), overlap=overlap,
                            only=set(pages))
    (sequential, _, alone), (overlapped, events, written) = runs[False], runs[True]
    assert overlapped.done == pages and not overlapped.failed
    assert list(written) == WRITTEN[:len(pages)] and written == alone
    assert {thread for _, thread in events} == {threading.main_thread()}  # events only from the calling thread
    assert_one_page_after_another(sequential, pages)
    if procedure == "official":
        assert_one_page_after_another(overlapped, pages)
        return
    for before, after in zip(PAGES, PAGES[1:]):
        assert overlapping(interval(overlapped, after, "prepare"), interval(overlapped, before, "ICP"))
    for name in PAGES:  # each page's own stages stay in order
        prepare, icp, gsrp, write = (interval(overlapped, name, s) for s in ("prepare", "ICP", "GSRP", "write"))
        assert prepare[1] <= icp[0] <= icp[1] <= gsrp[0] <= gsrp[1] <= write[0] <= write[1]


@pytest.mark.slow
def test_screenstyle_pass_beside_icp_gives_the_bytes_of_the_sequential_run(chapter, make_tiny_pipeline, tmp_path):
    """No G cache in the overlapped run: pass 2 runs the ScreenStyle pass again (seeded draws from the
    global RNG, saved and restored around it) on the helper thread while the page before is in ICP."""
    sequential = make_tiny_pipeline(tmp_path / "cache-sequential")  # G of pass 1 cached for pass 2
    _, _, alone = run(chapter, sequential, tmp_path / "out-sequential", settings(input_style="screen"), overlap=False)
    overlapped = make_tiny_pipeline(tmp_path / "cache-overlapped")
    overlapped.preparer = PagePreparer(overlapped.preparer.networks, None, memory_items=0)
    report, _, written = run(chapter, overlapped, tmp_path / "out-overlapped", settings(input_style="screen"))
    assert overlapped.preparer.passes_run == 2 * len(PAGES)
    assert overlapping(interval(report, PAGES[1], "prepare"), interval(report, PAGES[0], "ICP"))
    assert list(written) == WRITTEN and written == alone


def test_ours_draws_nothing_from_the_global_rng(chapter, make_tiny_pipeline, tmp_path):
    """Why the ScreenStyle pass of the next page (seeded global-RNG draws) may run beside ours' ICP
    and GSRP: they use their own generators, so the global RNG state is the same after a page."""
    pages, refs = chapter
    pipeline = make_tiny_pipeline(tmp_path / "cache", screen=False)
    run_settings = settings()
    page = pages.load_page(0)
    prepared = pipeline.prepare(page, run_settings.inputs)
    retrieval = pipeline.retrieve(page, refs, ChapterProject(folder=tmp_path / "p").choices_for(page.source.name),
                                  prepared)
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    pipeline.color(page, retrieval, prepared, run_settings)
    assert torch.equal(torch.get_rng_state(), before)


def test_cancel_during_the_first_page_writes_nothing_more_and_leaves_no_thread(chapter, make_tiny_pipeline, tmp_path):
    """The cancel comes while the helper prepares page 2: the run returns once the helper has stopped."""
    cancel, busy = CancelToken(), []
    pipeline = make_tiny_pipeline(tmp_path / "cache", screen=False)
    retrieve = pipeline.retrieve

    def slow(page, *args, **kwargs):
        if threading.current_thread().name.startswith(PREFETCH_THREAD) and page.source.name == PAGES[1]:
            busy.append(True)
            while not cancel.cancelled:  # still at it when the cancel comes, and a while after
                time.sleep(0.01)
            time.sleep(0.5)
        return retrieve(page, *args, **kwargs)

    def on_event(event):
        if isinstance(event, Progress) and event.stage == "ICP" and event.page == PAGES[0]:
            assert busy == [True]  # page 2 is being prepared
            cancel.cancel()

    pipeline.retrieve = slow
    report, events, written = run(chapter, pipeline, tmp_path / "out", settings(steps=2), emit=on_event,
                                  cancel=cancel)
    assert report.cancelled and report.done == [] and written == {}
    assert [e.page for e, _ in events if isinstance(e, Cancelled)] == [PAGES[0]]
    assert [e.step for e, _ in events if isinstance(e, Progress) and e.stage == "ICP"] == [1]
    assert not [p.name for p in (tmp_path / "out").iterdir() if p.suffix in (".png", ".tmp")]
    assert [p.status for p in ChapterProject.load(tmp_path / "out").pages] == ["pending"] * 3
    assert not [t.name for t in threading.enumerate() if t.name.startswith(PREFETCH_THREAD)]


def test_a_page_failing_on_the_helper_thread_fails_alone(chapter, make_tiny_pipeline, tmp_path):
    """The second retrieval of page 2 (pass 2, on the helper thread) raises: that page is reported
    failed, from the calling thread, and the page after it is colored."""
    pipeline = make_tiny_pipeline(tmp_path / "cache", screen=False)
    retrieve, calls = pipeline.retrieve, []

    def flaky(page, *args, **kwargs):
        calls.append((page.source.name, threading.current_thread().name))
        if page.source.name == PAGES[1] and len([c for c in calls if c[0] == PAGES[1]]) == 2:
            raise RuntimeError("a bug in one page (simulated)")
        return retrieve(page, *args, **kwargs)

    pipeline.retrieve = flaky
    report, events, written = run(chapter, pipeline, tmp_path / "out", settings())
    assert report.done == [PAGES[0], PAGES[2]]
    assert report.failed == {PAGES[1]: "RuntimeError: a bug in one page (simulated)"}
    assert [e.page for e, _ in events if isinstance(e, PageFailed)] == [PAGES[1]]
    assert [e.page for e, _ in events if isinstance(e, PageDone)] == [PAGES[0], PAGES[2]]
    assert {thread for _, thread in events} == {threading.main_thread()}
    assert [n for n, thread in calls[len(PAGES):] if thread.startswith(PREFETCH_THREAD)] == PAGES
    assert list(written) == [WRITTEN[0], WRITTEN[2]]
    assert ChapterProject.load(tmp_path / "out").page(PAGES[1]).status == "failed"


def levels(image) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image)) if isinstance(image, bytes) else image, np.int16)


def within_tolerance(batched, alone, *, most: int, equal: float, mean: float = 1.0) -> None:
    difference = np.abs(levels(batched) - levels(alone))
    assert difference.max() <= most, f"max difference {difference.max()} levels"
    assert (difference == 0).mean() >= equal, f"only {(difference == 0).mean():.5f} of the values equal"
    assert difference.mean() <= mean, f"mean difference {difference.mean():.4f} levels"


def page_events(events, name: str) -> list[tuple]:
    return [(type(e).__name__, getattr(e, "stage", None), getattr(e, "step", None)) for e, _ in events
            if getattr(e, "page", None) == name and not isinstance(e, Preview)]


def spy_on_gsrp(pipeline) -> list:
    """The ICP output of each page, as GSRP receives it."""
    upscaler, seen = pipeline.upscaler, []

    def upscale(colored, *args, **kwargs):
        seen.append(colored.copy())
        return upscaler(colored, *args, **kwargs)

    pipeline.upscaler = upscale
    return seen


def test_two_pages_a_call_match_one_page_at_a_time_within_fp32_tolerance(chapter, make_tiny_pipeline, tmp_path):
    """--batch-pages 2 over 3 pages: pages 1 and 2 in one denoising call, page 3 alone; every page
    written, with each page's events as one at a time.

    Tolerance. In a batch only the order of float sums inside the batched GEMMs and convolutions
    changes (each page's random draws come from its own seed streams, GroupNorm, attention and the
    sampler act per page: tests/test_batch_pages.py), a relative change near 1e-6: ICP's 8-bit
    output moves by one level where a value sits on a rounding edge, so at most 1 level and 99.9%
    of the values equal. GSRP then runs on each page alone, deterministic, and carries those rare
    one-level changes through the VAE into the page: still 99% of the values equal and a mean
    difference under 0.05 levels (the largest single move is the random VAE's gain, not bounded
    from first principles: 8 levels caught as a local fault). Another page's ICP output is far
    outside the ICP tolerance, another page's written page tens of levels away (checked)."""
    one = make_tiny_pipeline(tmp_path / "cache", screen=False)
    icp_alone = spy_on_gsrp(one)
    _, alone_events, alone = run(chapter, one, tmp_path / "out-alone", settings(steps=2))
    pipeline = make_tiny_pipeline(tmp_path / "cache", screen=False)
    icp_batched = spy_on_gsrp(pipeline)
    color_batch, calls = pipeline.color_batch, []

    def spy(jobs, **kwargs):
        calls.append([job.page.source.name for job in jobs])
        return color_batch(jobs, **kwargs)

    pipeline.color_batch = spy
    report, events, written = run(chapter, pipeline, tmp_path / "out-batched", settings(steps=2, batch_pages=2))
    assert calls == [PAGES[:2], PAGES[2:]]
    assert report.done == PAGES and list(written) == list(alone) == WRITTEN
    for batched, by_itself in zip(icp_batched, icp_alone, strict=True):
        within_tolerance(batched, by_itself, most=1, equal=0.999)
    for name in WRITTEN:
        within_tolerance(written[name], alone[name], most=8, equal=0.99, mean=0.05)
    with pytest.raises(AssertionError):  # two pages (one seed, other canvases) are not within it of each other
        within_tolerance(icp_alone[0], icp_alone[1], most=1, equal=0.999)
    assert np.abs(levels(alone[WRITTEN[0]]) - levels(alone[WRITTEN[1]])).mean() > 10
    for name in PAGES:
        assert page_events(events, name) == page_events(alone_events, name)
        assert page_events(events, name).count(("PageDone", None, None)) == 1
    assert interval(report, PAGES[0], "ICP")[0] == interval(report, PAGES[1], "ICP")[0]  # one call


def test_a_batch_out_of_memory_colors_its_pages_one_at_a_time(chapter, make_tiny_pipeline, tmp_path):
    pipeline = make_tiny_pipeline(tmp_path / "cache", screen=False)
    color_batch, calls = pipeline.color_batch, []

    def out_of_memory(jobs, **kwargs):
        calls.append(len(jobs))
        if len(jobs) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB (simulated)")
        return color_batch(jobs, **kwargs)

    pipeline.color_batch = out_of_memory
    report, events, written = run(chapter, pipeline, tmp_path / "out", settings(batch_pages=2), only=set(PAGES[:2]))
    assert calls == [2, 1, 1]
    assert report.done == PAGES[:2] and not report.failed and list(written) == WRITTEN[:2]
    notices = [e.message for e, _ in events if isinstance(e, Notice)]
    assert notices == ["2 pages in one denoising call failed (out of memory); coloring them one at a time"]
    done = {e.page: e.info["warnings"] for e, _ in events if isinstance(e, PageDone)}
    assert all(any("colored alone" in w for w in done[n]) for n in PAGES[:2])
    assert [p.status for p in ChapterProject.load(tmp_path / "out").pages] == ["done", "done", "pending"]


def test_a_pin_made_while_the_page_before_is_in_icp_applies_to_the_next_page(chapter, make_tiny_pipeline, tmp_path):
    """As one page after another: a page is retrieved with the choices it has when its turn comes, even
    though the helper prepared it earlier (the app's curation may change while a page is in ICP)."""
    pages, refs = chapter
    project = ChapterProject(folder=tmp_path / "out")
    pipeline = make_tiny_pipeline(tmp_path / "cache", screen=False)
    retrieve, used = pipeline.retrieve, []

    def record(page, references, choices, prepared):
        used.append((page.source.name, [t.ref for t in choices.pins]))
        return retrieve(page, references, choices, prepared)

    def pin_during_page_one(event):
        if isinstance(event, Progress) and event.stage == "ICP" and event.page == PAGES[0] and not project.choices_for(
                PAGES[1]).pins:
            project.pin(refs[2].ref, page=PAGES[1])

    pipeline.retrieve = record
    report = colorize_chapter(pages, refs, pipeline, project, settings=settings(), emit=pin_during_page_one,
                              only=set(PAGES[:2]))
    assert report.done == PAGES[:2]
    # pass 1, then pass 2: page 2 prepared ahead without the pin, then again with it when its turn came
    assert used[2:] == [(PAGES[0], []), (PAGES[1], []), (PAGES[1], [refs[2].ref])]
