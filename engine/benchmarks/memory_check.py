"""The memory estimate against a measured CPU run: each stage's peak RSS above the process before any model loaded.

`measure_stage_rss` runs in a fresh process (scripts/measure_memory.py starts one per size): it
imports every library a run uses, reads the resident set size (the baseline), loads the pipeline
on the CPU and colors one generated page through the chapter loop with the stage recorder of
bench pages (Linux: each stage's own peak RSS, VmHWM reset at its start). A stage's measured
figure is its peak RSS minus the baseline: the weights of every loaded model plus what the stage
had alive, which is what the CPU estimate (engine/pipelines/memory.py, placement "cpu") adds up.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

MIB = 2**20


def _import_libraries() -> None:
    """What loading and running import lazily, imported before the baseline is read."""
    import accelerate.hooks  # noqa: F401
    import diffusers  # noqa: F401
    import peft  # noqa: F401
    import skimage.color  # noqa: F401
    import torch  # noqa: F401
    from diffusers import AutoencoderKL, UNet2DConditionModel, UniPCMultistepScheduler  # noqa: F401
    from transformers import CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection  # noqa: F401

    import engine.gsrp.upscale  # noqa: F401
    import engine.icp.colorize  # noqa: F401
    import engine.models.loading  # noqa: F401
    import engine.pipelines.chapter  # noqa: F401
    import engine.preprocess.screenstyle  # noqa: F401
    import engine.rap.embedding  # noqa: F401


def loaded_weight_bytes(pipeline) -> int:
    """Bytes of the parameters and buffers of every model the pipeline holds (each tensor once)."""
    c = pipeline.colorizer.components
    modules = [c.unet, c.guide, c.vae, c.text_encoder, c.fusion, pipeline.retriever.embedder.model]
    networks = pipeline.preparer.networks
    if networks is not None:
        modules += [networks.rgb_to_screen, networks.decoder]
    seen: dict[int, int] = {}
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            seen[id(tensor)] = tensor.numel() * tensor.element_size()
    return sum(seen.values())


def measure_stage_rss(models: str, size: str, *, steps: int = 1) -> dict:
    """{"baseline_mib", "weights_mib", "stages": {stage: peak RSS above the baseline, MiB}} of one
    generated page colored on the CPU at `size` (meant for a fresh process: module doc)."""
    _import_libraries()
    from engine.benchmarks.stage_timing import MemoryMeter, StageRecorder, instrument
    from engine.core.options import RunSettings
    from engine.io.chapter import list_images, open_chapter
    from engine.io.demo import make_demo_chapter
    from engine.pipelines.chapter import colorize_chapter
    from engine.pipelines.page import load_pipeline, model_paths
    from engine.pipelines.settings import pipeline_settings
    from engine.project.state import ChapterProject

    meter = MemoryMeter("cpu")
    if not meter.resettable:
        raise RuntimeError("needs Linux's resettable peak RSS (/proc/self/clear_refs)")
    settings = pipeline_settings(RunSettings(steps=steps, size=size, seed=0))
    paths = model_paths(models)
    with tempfile.TemporaryDirectory(prefix="colorflow-memory-") as folder:
        work = Path(folder)
        chapter, refs = make_demo_chapter(work / "data", pages=1, refs=1)
        baseline = meter.now()
        pipeline = load_pipeline(paths, "cpu", cache_dir=work / "cache")
        weights = loaded_weight_bytes(pipeline)
        recorder = StageRecorder(meter)
        instrument(pipeline, recorder)
        report = colorize_chapter(open_chapter([chapter]), list_images([refs]), pipeline,
                                  ChapterProject.open_or_create(work / "out"), settings=settings,
                                  overlap=False)  # stage after stage: each stage's own peak
        if report.failed:
            raise RuntimeError(f"the page failed: {report.failed}")
    stages: dict[str, float] = {}
    for cells in recorder.pages.values():
        for stage, cell in cells.items():
            stages[stage] = max(stages.get(stage, 0.0), cell["peak_mib"] - baseline / MIB)
    return {"size": size, "baseline_mib": baseline / MIB, "weights_mib": weights / MIB, "stages": stages}
