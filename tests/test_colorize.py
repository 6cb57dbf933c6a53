"""ICP: sampler settings, determinism, page-region output, interruption, chapter runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from engine.core.geometry import WorkSize
from engine.rap.canvas import build_canvas, build_mask
from engine.io.chapter import list_images, open_chapter
from engine.cli.main import main
from engine.icp.colorize import Colorizer, ColorizeSettings, Interrupted
from engine.core.errors import InputError
from engine.core.events import CancelToken, Cancelled, PageDone, Preview, Progress
from engine.pipelines.chapter import colorize_chapter
from engine.pipelines.settings import PipelineSettings
from engine.project.state import ChapterProject
from engine.gsrp.upscale import UpscaleSettings

SIZE = WorkSize(256, 384)
FAST = ColorizeSettings(steps=3, preview_every=1)


def sample_canvas(seed: int = 0) -> tuple[Image.Image, Image.Image]:
    rng = np.random.default_rng(seed)
    query = Image.fromarray(rng.integers(0, 255, (SIZE.height, SIZE.width), np.uint8)).convert("RGB")
    refs = [[Image.new("RGB", (64, 64), tuple(int(v) for v in rng.integers(0, 255, 3))) for _ in range(3)] for _ in range(4)]
    return build_canvas(query, refs, SIZE), build_mask(SIZE)


def test_official_sampler_timesteps(tiny_components):
    from diffusers import UniPCMultistepScheduler

    scheduler = UniPCMultistepScheduler.from_config(tiny_components.scheduler_config)
    scheduler.set_timesteps(10)
    assert scheduler.timesteps.tolist() == [999, 899, 799, 699, 599, 500, 400, 300, 200, 100]
    assert scheduler.config.solver_order == 2 and scheduler.config.predict_x0


def test_same_seed_same_output_different_seed_different(tiny_components):
    colorizer = Colorizer(tiny_components)
    canvas, mask = sample_canvas()
    a = np.asarray(colorizer(canvas, mask, SIZE, FAST))
    b = np.asarray(colorizer(canvas, mask, SIZE, FAST))
    c = np.asarray(colorizer(canvas, mask, SIZE, ColorizeSettings(steps=3, seed=1)))
    assert a.shape == (SIZE.height, SIZE.width, 3)
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 1.0


def test_mask_channel_is_zero_on_the_page_and_one_on_the_references(tiny_components):
    colorizer = Colorizer(tiny_components)
    canvas, mask = sample_canvas()
    generator = torch.Generator().manual_seed(0)
    conditioning = colorizer.conditioning(canvas, mask, SIZE, generator)
    mask_channel = conditioning[0, 4]
    s = tiny_components.vae_scale
    y0, x0 = SIZE.height // 2 // s, SIZE.width // 2 // s
    page = mask_channel[y0 + 1 : y0 + SIZE.height // s - 1, x0 + 1 : x0 + SIZE.width // s - 1]
    assert page.abs().max() < 1e-6  # 0 where the page is to be colored
    assert mask_channel[0, 0] == 1 and mask_channel[-1, -1] == 1  # 1 on the references


def _decode_whole_canvas(components, latents):
    """Reference: diffusers' own decode of the whole canvas latent, postprocessed by diffusers."""
    from diffusers.image_processor import VaeImageProcessor

    with torch.no_grad():
        decoded = components.vae.decode(latents / components.vae.config.scaling_factor).sample
    return VaeImageProcessor().postprocess(decoded, output_type="pil")[0]


def test_full_decode_is_the_whole_canvas_decoded_then_cropped_and_page_decode_differs(tiny_components):
    colorizer = Colorizer(tiny_components)
    canvas, mask = sample_canvas()
    captured = {}
    original = colorizer.decode_canvas

    def spy(latents, size):
        captured["latents"] = latents.clone()
        return original(latents, size)

    colorizer.decode_canvas = spy
    result = np.asarray(colorizer(canvas, mask, SIZE, FAST), np.int16)
    full_canvas = np.asarray(_decode_whole_canvas(tiny_components, captured["latents"]), np.int16)
    x, y = SIZE.width // 2, SIZE.height // 2
    assert np.array_equal(result, full_canvas[y : y + SIZE.height, x : x + SIZE.width])
    colorizer.decode_canvas = original
    region = np.asarray(colorizer(canvas, mask, SIZE, ColorizeSettings(steps=3, preview_every=1, decode="page")), np.int16)
    difference = np.abs(region - result)
    assert difference.max() > 0  # not the same pixels: the decoder sees the whole latent
    assert difference.mean() < 20  # ...but the same picture


def test_callback_interrupts_within_one_step(tiny_components):
    colorizer = Colorizer(tiny_components)
    canvas, mask = sample_canvas()
    steps = []

    def stop_after_first(info):
        steps.append(info.step)
        return False

    with pytest.raises(Interrupted):
        colorizer(canvas, mask, SIZE, ColorizeSettings(steps=10), stop_after_first)
    assert steps == [1]


def test_bad_inputs_are_rejected_before_work(tiny_components):
    colorizer = Colorizer(tiny_components)
    canvas, mask = sample_canvas()
    with pytest.raises(InputError, match="steps"):
        colorizer(canvas, mask, SIZE, ColorizeSettings(steps=0))
    with pytest.raises(InputError, match="canvas is"):
        colorizer(canvas.resize((64, 64)), mask, SIZE, FAST)


PIPELINE_SETTINGS = PipelineSettings(colorize=FAST, upscale=UpscaleSettings(), size=SIZE, input_style="gray")


@pytest.fixture
def chapter_setup(pipeline, demo_data, tmp_path):
    chapter_dir, refs_dir = demo_data
    chapter = open_chapter(chapter_dir)
    refs = list_images([refs_dir])
    project = ChapterProject(folder=tmp_path / "out")
    return chapter, refs, pipeline, project


def test_cancel_during_run_leaves_page_pending_and_no_file(chapter_setup):
    chapter, refs, pipeline, project = chapter_setup
    cancel = CancelToken()
    events = []

    def sink(event):
        events.append(event)
        if isinstance(event, Progress) and event.stage == "ICP" and event.page == "2.png":
            cancel.cancel()

    report = colorize_chapter(chapter, refs, pipeline, project, settings=PIPELINE_SETTINGS, emit=sink, cancel=cancel)
    assert report.done == ["1.png"] and report.cancelled
    icp_steps_page2 = [e.step for e in events if isinstance(e, Progress) and e.stage == "ICP" and e.page == "2.png"]
    assert icp_steps_page2 == [1]
    assert any(isinstance(e, Cancelled) and e.page == "2.png" for e in events)
    assert any(isinstance(e, Preview) for e in events)
    assert sorted(p.name for p in project.folder.glob("*.png")) == ["001_1.png"]
    saved = ChapterProject.load(project.folder)
    assert [p.status for p in saved.pages] == ["done", "pending", "pending", "pending"]


@pytest.mark.parametrize("moment", ["as GSRP starts", "during GSRP"])
def test_cancel_between_stages_writes_nothing_for_the_page(chapter_setup, moment):
    """A cancel after the last denoising step (no step callback left to see it) stops the page
    at the next stage boundary: GSRP is skipped or its output dropped, and nothing is written."""
    chapter, refs, pipeline, project = chapter_setup
    cancel = CancelToken()
    upscaler, upscaled = pipeline.upscaler, []

    def upscale(*args, **kwargs):
        upscaled.append(True)
        if moment == "during GSRP":
            cancel.cancel()  # as a click lands while the stage runs
        return upscaler(*args, **kwargs)

    pipeline.upscaler = upscale
    events = []

    def sink(event):
        events.append(event)
        if moment == "as GSRP starts" and isinstance(event, Progress) and event.stage == "GSRP":
            cancel.cancel()

    report = colorize_chapter(chapter, refs, pipeline, project, settings=PIPELINE_SETTINGS, emit=sink, cancel=cancel)
    assert report.cancelled and report.done == []
    assert upscaled == ([] if moment == "as GSRP starts" else [True])
    assert any(isinstance(e, Cancelled) and e.page == "1.png" for e in events)
    assert not any(isinstance(e, PageDone) for e in events)
    assert not [p.name for p in project.folder.iterdir() if p.suffix in (".png", ".tmp")]
    assert [p.status for p in ChapterProject.load(project.folder).pages] == ["pending"] * 4


def test_failing_page_is_reported_and_chapter_finishes(chapter_setup):
    chapter, refs, pipeline, project = chapter_setup
    original = pipeline.colorizer

    class Flaky:
        calls = 0
        components = original.components  # the loaded models, as the real colorizer exposes them

        def __call__(self, *args, **kwargs):
            Flaky.calls += 1
            if Flaky.calls == 2:
                raise RuntimeError("a bug in one page (simulated)")
            return original(*args, **kwargs)

    pipeline.colorizer = Flaky()
    events = []
    report = colorize_chapter(chapter, refs, pipeline, project, settings=PIPELINE_SETTINGS, emit=events.append)
    assert report.done == ["1.png", "3.png", "4.png"]
    assert report.failed == {"2.png": "RuntimeError: a bug in one page (simulated)"}
    assert sum(isinstance(e, PageDone) for e in events) == 3
    # Each patch was embedded once: the per-page retrieval before ICP hit the cache only.
    assert pipeline.retriever.query_images_embedded == 4 * 4
    assert pipeline.retriever.reference_images_embedded == 3 * 5


def test_cli_colorize_writes_pages_at_their_own_size(tiny_models_dir, tmp_path, capsys):
    chapter = tmp_path / "chapter"
    chapter.mkdir()
    sizes = {"1.png": (300, 450), "2.png": (451, 300), "3.png": (333, 333)}
    for name, size in sizes.items():
        Image.new("L", size, 180).save(chapter / name)
    (chapter / "4.png").write_bytes(b"not an image")
    ref = tmp_path / "ref.png"
    Image.new("RGB", (300, 450), (200, 30, 30)).save(ref)
    code = main(["colorize", str(chapter), "--refs", str(ref), "--out", str(tmp_path / "out"),
                 "--models", str(tiny_models_dir), "--steps", "2", "--size", "256x384", "--input-style", "gray", "--json"])
    assert code == 1
    report = json.loads(capsys.readouterr().out)
    assert report["done"] == ["1.png", "2.png", "3.png"] and list(report["failed"]) == ["4.png"]
    for index, (name, size) in enumerate(sizes.items()):
        output = tmp_path / "out" / f"{index + 1:03d}_{name[:-4]}.png"
        assert Image.open(output).size == size
        assert Image.open(output).mode == "RGB"


def test_offloaded_models_give_the_same_pixels(tiny_models_dir):
    """Low-VRAM offload hooks (here with the CPU as the execution device) change nothing."""
    from engine.models.loading import install_offload, load_diffusion
    from engine.models.sources import resolve_models

    paths = resolve_models(str(tiny_models_dir))
    canvas, mask = sample_canvas()
    plain = Colorizer(load_diffusion(paths, "cpu"))(canvas, mask, SIZE, ColorizeSettings(steps=2))
    components = load_diffusion(paths, "cpu")
    offload = install_offload(components)
    assert components.vae.use_tiling is False  # no VAE tiling unless asked for
    result = Colorizer(components)(canvas, mask, SIZE, ColorizeSettings(steps=2))
    assert set(offload.hooks) == {"text_encoder", "unet", "guide", "vae", "fusion"}
    assert np.array_equal(np.asarray(plain), np.asarray(result))
