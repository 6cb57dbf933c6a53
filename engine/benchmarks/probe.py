"""Speed probe: one generated demo page colored with real models on this machine, timed per stage and stored."""

from __future__ import annotations

import datetime
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.core.errors import ColorFlowError
from engine.core.events import CancelToken, EventSink, Progress, ignore
from engine.models.speed import STAGES, store_probe

PROBE_REFERENCES = 2  # colored references of the generated probe chapter


def run_probe(
    models: str = "official",
    device: str = "auto",
    steps: int = 10,
    size=None,  # "WxH" or a WorkSize; None: the official size for the page
    emit: EventSink = ignore,
    cancel: CancelToken | None = None,
    store: bool = True,
) -> dict[str, Any]:
    """Color one generated page with `models` on `device` (the default pipeline: ScreenStyle
    pass, RAP, ICP, GSRP, keep-ink) and return the seconds per stage and per page; with `store`
    it becomes the last probe of that model source. Every cache (ScreenStyle G, reference
    embeddings) starts empty, so nothing measured was computed before; being the first page of
    the run, it also carries the one-time warm-up of the kernels (a rough figure, on the high
    side). Model loading is timed apart and not part of the per-page figure."""
    import torch

    from engine.io.demo import make_demo_chapter
    from engine.core.devices import describe_device, pick_device
    from engine.core.options import RunSettings
    from engine.io.chapter import list_images, open_chapter
    from engine.models.loading import default_dtype
    from engine.pipelines.chapter import colorize_chapter
    from engine.pipelines.page import load_pipeline
    from engine.project.state import ChapterProject
    from engine.core.geometry import choose_work_size
    from engine.pipelines.settings import pipeline_settings

    cancel = cancel or CancelToken()
    settings = pipeline_settings(RunSettings(steps=steps, size=str(size) if size else None))
    resolved = pick_device(device)
    with tempfile.TemporaryDirectory(prefix="colorflow-probe-") as folder:
        work = Path(folder)
        chapter_dir, refs_dir = make_demo_chapter(work / "demo", pages=1, refs=PROBE_REFERENCES)
        emit(Progress("load", 0, 1, "speed probe"))
        start = time.perf_counter()
        pipeline = load_pipeline(models, resolved, cache_dir=work / "cache")
        load_s = time.perf_counter() - start
        emit(Progress("load", 1, 1, "speed probe"))
        chapter = open_chapter([chapter_dir])
        work_size = choose_work_size(chapter.load_page(0).image.size, settings.size)
        project = ChapterProject.open_or_create(work / "out")
        report = colorize_chapter(chapter, list_images([refs_dir]), pipeline, project, settings=settings, emit=emit,
                                  cancel=cancel)
    if report.cancelled or cancel.cancelled:
        raise ColorFlowError("speed probe cancelled; nothing stored")
    if report.failed:
        raise ColorFlowError(f"speed probe page failed: {next(iter(report.failed.values()))}")
    stages = {stage: round(report.timings.get(stage, 0.0), 3) for stage in STAGES}
    result = {
        "models": models,
        "device": resolved if resolved != "cuda" else f"cuda:{torch.cuda.current_device()}",
        "device_name": describe_device(resolved),
        "dtype": str(default_dtype(resolved)).replace("torch.", ""),
        "steps": steps,
        "size": str(work_size),
        "stages_s": stages,
        "page_s": round(sum(stages.values()), 3),
        "load_s": round(load_s, 3),
        "measured": datetime.datetime.now().isoformat(timespec="seconds"),
        "torch": torch.__version__,
    }
    if store:
        store_probe(result)
    return result
