"""Several pages in one denoising call (Colorizer.colorize_batch, ColorFlowPipeline.color_batch):
the same pixels as each page alone, within fp32 tolerance; refusals before any model work; cancel.

Tolerance, from what batching can change: every page's random draws come from its own seed streams
(the same values as alone), GroupNorm/attention/UniPC act per sample, so only the blocking of the
fp32 GEMMs and convolutions over a larger batch changes the order of float sums (relative error
~1e-6). Through 2 steps and the decode that moves a pixel by far less than one uint8 level, so a
value sitting on a rounding edge may move by 1: max |difference| <= 1 level, and at least 99% of
the values equal. Swapped noises (255 levels) or conditionings (28), CFG rows interleaved (8) or
features paired with the wrong rows (233) fail it (each tried once on this code).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from engine.core.errors import InputError
from engine.core.events import CancelToken, Preview, Progress
from engine.core.geometry import WorkSize
from engine.gsrp.upscale import UpscaleSettings
from engine.icp.colorize import Colorizer, ColorizeSettings, Interrupted
from engine.io.chapter import ImageSource, PageImage
from engine.pipelines.page import ColorJob
from engine.pipelines.settings import PipelineSettings
from engine.rap.canvas import build_canvas, build_mask
from engine.rap.curation import Choices

SIZE = WorkSize(128, 192)
SETTINGS = ColorizeSettings(steps=2, preview_every=1)


def within_fp32_tolerance(batched: Image.Image, alone: Image.Image) -> None:
    a, b = np.asarray(batched, np.int16), np.asarray(alone, np.int16)
    assert a.shape == b.shape
    difference = np.abs(a - b)
    assert difference.max() <= 1, f"max difference {difference.max()} levels"
    assert (difference == 0).mean() >= 0.99, f"only {(difference == 0).mean():.3f} of the values equal"


def sample_canvas(seed: int, size: WorkSize = SIZE) -> tuple[Image.Image, Image.Image]:
    rng = np.random.default_rng(seed)
    query = Image.fromarray(rng.integers(0, 255, (size.height, size.width), np.uint8)).convert("RGB")
    refs = [[Image.new("RGB", (64, 64), tuple(int(v) for v in rng.integers(0, 255, 3))) for _ in range(3)]
            for _ in range(4)]
    return build_canvas(query, refs, size), build_mask(size)


def test_a_batch_of_two_pages_matches_each_page_colored_alone(tiny_components):
    colorizer = Colorizer(tiny_components)
    (canvas_a, mask), (canvas_b, _) = sample_canvas(0), sample_canvas(1)
    settings = [dataclasses.replace(SETTINGS, seed=11), dataclasses.replace(SETTINGS, seed=22)]
    steps, previews = [], []

    def record(info):
        steps.append(info.step)
        previews.append(info.previews)

    batched = colorizer.colorize_batch([canvas_a, canvas_b], [mask, mask], SIZE, settings, record)
    alone = [colorizer(canvas_a, mask, SIZE, settings[0]), colorizer(canvas_b, mask, SIZE, settings[1])]
    assert len(batched) == 2
    for page_batched, page_alone in zip(batched, alone):
        within_fp32_tolerance(page_batched, page_alone)
    # The two pages are far apart, so an exchange of their noises or canvases could not pass.
    assert np.abs(np.asarray(alone[0], np.int16) - np.asarray(alone[1], np.int16)).mean() > 10
    assert steps == [1, 2]  # one callback per step for the whole batch, with a preview per page
    assert all(len(p) == 2 and all(isinstance(im, Image.Image) for im in p) for p in previews)


class Forbidden(nn.Module):
    """A model that fails when used: the refusals below must come before any model work."""

    def __init__(self, config=None) -> None:
        super().__init__()
        self.config = config

    def forward(self, *args, **kwargs):
        raise AssertionError("a model ran before the inputs were checked")

    def __getattr__(self, name):
        if name in ("config", "training") or name.startswith("_"):
            return super().__getattr__(name)
        raise AssertionError(f"a model was used ({name}) before the inputs were checked")


@pytest.fixture
def no_models(tiny_components):
    components = dataclasses.replace(
        tiny_components, unet=Forbidden(), unet_runner=None, guide=Forbidden(), text_encoder=Forbidden(),
        vae=Forbidden(tiny_components.vae.config), vae_runner=None,
    )
    return Colorizer(components)


def test_mismatched_pages_and_the_official_procedure_are_refused_before_model_work(no_models):
    canvas, mask = sample_canvas(0)
    other_canvas, other_mask = sample_canvas(1, WorkSize(128, 256))
    two = [dataclasses.replace(SETTINGS, seed=1), dataclasses.replace(SETTINGS, seed=2)]
    with pytest.raises(InputError, match="one working size"):
        no_models.colorize_batch([canvas, other_canvas], [mask, other_mask], SIZE, two)
    with pytest.raises(InputError, match="official"):
        official = [dataclasses.replace(s, procedure="official") for s in two]
        no_models.colorize_batch([canvas, canvas], [mask, mask], SIZE, official)
    with pytest.raises(InputError, match="steps"):
        no_models.colorize_batch([canvas, canvas], [mask, mask], SIZE, [two[0], dataclasses.replace(two[1], steps=3)])
    with pytest.raises(InputError, match="guidance"):
        no_models.colorize_batch([canvas, canvas], [mask, mask], SIZE,
                                 [two[0], dataclasses.replace(two[1], guidance_scale=5.0)])
    with pytest.raises(InputError, match="prompt"):
        no_models.colorize_batch([canvas, canvas], [mask, mask], SIZE, [two[0], dataclasses.replace(two[1], prompt="x")])


def test_cancel_during_step_one_raises_interrupted(tiny_components):
    colorizer = Colorizer(tiny_components)
    canvas, mask = sample_canvas(0)
    steps = []

    def stop(info):
        steps.append(info.step)
        return False

    with pytest.raises(Interrupted):
        colorizer.colorize_batch([canvas, canvas], [mask, mask], SIZE,
                                 [dataclasses.replace(SETTINGS, steps=10, seed=s) for s in (1, 2)], stop)
    assert steps == [1]


class FixedICP:
    """A colorizer that returns a given ICP image (the loaded models still there for offload)."""

    def __init__(self, image: Image.Image, components) -> None:
        self.image, self.components = image, components

    def __call__(self, *args, **kwargs) -> Image.Image:
        return self.image


@pytest.fixture(scope="module")
def jobs(make_tiny_pipeline, tmp_path_factory):
    """Two demo pages prepared and retrieved by the tiny pipeline (gray input), seeds 3 and 4."""
    from engine.io.demo import make_demo_chapter

    folder = tmp_path_factory.mktemp("batch")
    pipeline = make_tiny_pipeline(folder / "cache", screen=False)
    chapter, refs = make_demo_chapter(folder / "demo", pages=2, refs=2)
    references = [ImageSource(p) for p in sorted(refs.iterdir())]
    made = []
    for seed, path in zip((3, 4), sorted(chapter.iterdir())):
        page = PageImage(ImageSource(path), Image.open(path).convert("L"), f"{seed}" * 64)
        settings = PipelineSettings(dataclasses.replace(SETTINGS, seed=seed), UpscaleSettings(seed=seed),
                                    size=SIZE, input_style="gray")
        prepared = pipeline.prepare(page, settings.inputs)
        made.append(ColorJob(page, pipeline.retrieve(page, references, Choices(), prepared), prepared, settings))
    return pipeline, made


def test_color_batch_gives_each_page_as_color_does_with_progress_for_every_page(jobs, monkeypatch):
    """ICP within fp32 tolerance of each page alone; GSRP and the output size then exactly as
    `color` on that ICP image (GSRP turns a 1-level ICP difference into a few levels, so the final
    pages are compared through it, not to a looser tolerance)."""
    pipeline, made = jobs
    upscaler, icp_images = pipeline.upscaler, []

    def recording_upscaler(colored, *args):
        icp_images.append(colored)
        return upscaler(colored, *args)

    monkeypatch.setattr(pipeline, "upscaler", recording_upscaler)
    events = []
    batched = pipeline.color_batch(made, emit=events.append)
    batched_icp = list(icp_images)
    names = [job.page.source.name for job in made]
    assert len(batched) == len(batched_icp) == 2
    for job, icp in zip(made, batched_icp):
        icp_images.clear()
        pipeline.color(job.page, job.retrieval, job.prepared, job.settings)
        within_fp32_tolerance(icp, icp_images[0])
    components = pipeline.colorizer.components
    for job, icp, final in zip(made, batched_icp, batched):
        monkeypatch.setattr(pipeline, "colorizer", FixedICP(icp, components))
        assert final.size == job.page.image.size
        assert np.array_equal(np.asarray(final), np.asarray(pipeline.color(job.page, job.retrieval, job.prepared,
                                                                              job.settings)))
    progress = [(e.stage, e.step, e.page) for e in events if isinstance(e, Progress)]
    assert progress == [("ICP", 1, names[0]), ("ICP", 1, names[1]), ("ICP", 2, names[0]), ("ICP", 2, names[1]),
                        ("GSRP", 0, names[0]), ("GSRP", 1, names[0]), ("GSRP", 0, names[1]), ("GSRP", 1, names[1])]
    assert sorted(e.page for e in events if isinstance(e, Preview)) == sorted(names * 2)


def test_color_batch_refuses_pages_of_different_working_sizes_before_model_work(jobs):
    pipeline, made = jobs
    other = dataclasses.replace(made[1], retrieval=dataclasses.replace(made[1].retrieval, work_size=WorkSize(128, 256)))
    events = []
    with pytest.raises(InputError, match="one working size"):
        pipeline.color_batch([made[0], other], emit=events.append)
    assert events == []


def test_color_batch_cancelled_during_step_one_returns_no_page(jobs):
    pipeline, made = jobs
    cancel, events = CancelToken(), []

    def sink(event):
        events.append(event)
        if isinstance(event, Progress) and event.stage == "ICP":
            cancel.cancel()

    with pytest.raises(Interrupted):
        pipeline.color_batch(made, emit=sink, cancel=cancel)
    assert [(e.stage, e.step) for e in events if isinstance(e, Progress)] == [("ICP", 1), ("ICP", 1)]
