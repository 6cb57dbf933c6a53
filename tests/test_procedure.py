"""The official procedure and ours: G in the canvas, the random draws and their order, outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode

from engine.core.geometry import WorkSize
from engine.io.chapter import ImageSource, PageImage
from engine.icp.colorize import ColorizeSettings
from engine.rap.curation import Choices
from engine.pipelines.settings import PipelineSettings
from engine.core.rng import STREAMS, stream_generator, stream_seed
from engine.gsrp.upscale import UpscaleSettings

SIZE = WorkSize(256, 384)


class RandomDraws(TorchDispatchMode):
    """Records the tensor produced by every random op, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.draws: list[torch.Tensor] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name in ("randn", "normal", "normal_", "bernoulli", "bernoulli_", "rand", "uniform_"):
            self.draws.append((out if isinstance(out, torch.Tensor) else args[0]).detach().clone())
        return out


@pytest.fixture(scope="module")
def pipeline(make_tiny_pipeline, tmp_path_factory):
    """Module-wide, so the tests share G's cache (a ScreenStyle pass is the slow part)."""
    return make_tiny_pipeline(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def page_and_refs(tmp_path_factory):
    from engine.io.demo import make_demo_chapter

    folder = tmp_path_factory.mktemp("data")
    chapter, refs = make_demo_chapter(folder, pages=1, refs=2)
    path = sorted(chapter.iterdir())[0]
    image = Image.open(path).convert("L")
    page = PageImage(ImageSource(path), image, "1" * 64)
    return page, [ImageSource(p) for p in sorted(refs.iterdir())]


def settings(procedure="ours", style="gray", steps=2) -> PipelineSettings:
    official = procedure == "official"
    return PipelineSettings(
        ColorizeSettings(steps=steps, seed=5, procedure=procedure, preview_every=0),
        UpscaleSettings(seed=5, procedure=procedure), keep_ink=not official, size=SIZE,
        input_style=style, output_size="gsrp" if official else "page",
    )


def run(pipeline, page, refs, run_settings):
    prepared = pipeline.prepare(page, run_settings.inputs)
    retrieval = pipeline.retrieve(page, refs, Choices(), prepared)
    return prepared, retrieval, pipeline.color(page, retrieval, prepared, run_settings)


def test_g_is_the_page_in_the_canvas_and_the_gsrp_guide(pipeline, page_and_refs):
    page, refs = page_and_refs
    prepared = pipeline.prepare(page, settings(style="screen").inputs)
    assert prepared.frame.size == (384, 576)  # 1.5 W x 1.5 H
    retrieval = pipeline.retrieve(page, refs, Choices(), prepared)
    x, y = SIZE.width // 2, SIZE.height // 2
    centre = retrieval.canvas.crop((x, y, x + SIZE.width, y + SIZE.height))
    assert np.array_equal(np.asarray(centre), np.asarray(prepared.query))
    assert np.array_equal(np.asarray(prepared.query), np.asarray(prepared.frame.resize((256, 384), Image.BICUBIC)))
    gray = pipeline.prepare(page, settings(style="gray").inputs)
    assert np.abs(np.asarray(gray.frame, int) - np.asarray(prepared.frame, int)).mean() > 2  # G is not the page
    runs = pipeline.preparer.passes_run
    pipeline.prepare(page, settings(style="screen").inputs)
    assert pipeline.preparer.passes_run == runs  # G is cached with the page


def test_gray_input_style_gives_the_canvas_of_the_page_itself(pipeline, page_and_refs):
    page, refs = page_and_refs
    prepared = pipeline.prepare(page, settings(style="gray").inputs)
    with_style = pipeline.retrieve(page, refs, Choices(), prepared)
    page_itself = pipeline.retriever.retrieve(page, refs, Choices(), SIZE)  # no preprocessing at all
    assert np.array_equal(np.asarray(with_style.canvas), np.asarray(page_itself.canvas))
    assert with_style.to_json()["picks"] == page_itself.to_json()["picks"]


def test_official_procedure_draws_in_the_official_order(pipeline, page_and_refs):
    """docs/reference/geometry.md "Seeding": start noise from a generator seeded with the seed; then, from the
    global RNG seeded with the seed, image A's samples for both CFG copies, image B's, then the
    GSRP sample. Expected tensors computed here with plain torch calls."""
    page, refs = page_and_refs
    official = settings("official")
    prepared = pipeline.prepare(page, official.inputs)
    retrieval = pipeline.retrieve(page, refs, Choices(), prepared)
    calls = []
    handle = pipeline.colorizer.components.guide.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    try:
        with RandomDraws() as mode:
            pipeline.color(page, retrieval, prepared, official)
    finally:
        handle.remove()
    latent = (1, 4, 2 * SIZE.height // 8, 2 * SIZE.width // 8)
    start = torch.randn(latent, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(5)
    image_a, image_b = torch.randn((2, *latent[1:])), torch.randn((2, *latent[1:]))
    gsrp = torch.randn((1, 4, 576 // 8, 384 // 8))
    assert [tuple(d.shape) for d in mode.draws] == [latent, image_a.shape, image_b.shape, gsrp.shape]
    for drawn, expected in zip(mode.draws, [start, image_a, image_b, gsrp]):
        assert torch.equal(drawn, expected)
    assert calls == [2, 2]  # the guide runs on the CFG batch of 2, each step


def test_our_random_streams_never_repeat_each_other(pipeline, page_and_refs):
    page, refs = page_and_refs
    ours = settings("ours")
    prepared = pipeline.prepare(page, ours.inputs)
    retrieval = pipeline.retrieve(page, refs, Choices(), prepared)
    with RandomDraws() as mode:
        pipeline.color(page, retrieval, prepared, ours)
    draws = [d.flatten()[:4096] for d in mode.draws]
    assert len(draws) == 3  # start noise, conditioning samples, GSRP sample
    for i in range(len(draws)):
        for j in range(i + 1, len(draws)):
            shared = np.intersect1d(draws[i].numpy(), draws[j].numpy())
            assert shared.size == 0, (i, j)  # the old GSRP sample repeated the start noise
    # All four streams of a seed (ScreenStyle included) are distinct generators.
    firsts = [stream_generator(5, s).initial_seed() for s in STREAMS]
    assert len(set(firsts)) == 4 and stream_seed(5, "start-noise") == 5


def test_official_procedure_is_reproducible_and_differs_from_ours(pipeline, page_and_refs):
    page, refs = page_and_refs
    _, _, first = run(pipeline, page, refs, settings("official", "screen"))
    _, _, second = run(pipeline, page, refs, settings("official", "screen"))
    assert first.size == (384, 576)  # official output: 1.5 W x 1.5 H
    assert np.array_equal(np.asarray(first), np.asarray(second))
    _, _, ours = run(pipeline, page, refs, settings("ours", "screen"))
    assert ours.size == page.image.size
    resized = np.asarray(ours.resize(first.size), int)
    assert np.abs(resized - np.asarray(first, int)).mean() > 1


def test_stages_with_different_procedures_are_refused_before_work():
    from engine.core.errors import InputError

    with pytest.raises(InputError, match="same procedure"):
        PipelineSettings(ColorizeSettings(procedure="official"), UpscaleSettings(), keep_ink=False,
                         output_size="gsrp").check()


@pytest.mark.parametrize("page_size", [(600, 250), (257, 391), (150, 700), (1000, 1500), (333, 333)])
def test_letterboxed_frame_box_is_the_working_box_times_one_and_a_half(page_size):
    from engine.preprocess.page import frame_page

    page = Image.new("L", page_size, 0)
    framed, frame_fit, working, query_fit = frame_page(page, SIZE)
    assert framed.size == (384, 576) and working.size == (256, 384)
    assert frame_fit.content_box == tuple(round(v * 1.5) for v in query_fit.content_box)
    x0, y0, x1, y1 = frame_fit.content_box
    pixels = np.asarray(framed.convert("L"))
    assert pixels[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1].max() < 40  # the page fills its box...
    outside = np.ones(pixels.shape, bool)
    outside[y0:y1, x0:x1] = False
    assert not outside.any() or pixels[outside].min() == 255  # ...and white paper the rest
