"""bench pages --ray: pages per hour of one process vs Ray workers on the same chapter, and the scaling efficiency.

The same generated chapter is colored twice with our settings and the same chapter loop (colorize_chapter):
once in this process, once with its pages colored by Ray workers (engine.pipelines.ray_executor.RayExecutor; the
pages prepared and retrieved here, as every --ray run does). Each run has its own empty caches; model loading
and the workers' start are timed apart, not counted. Scaling efficiency = Ray pages/hour / (workers x local
pages/hour): 1.0 when each worker adds a whole process's throughput.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from engine.core.errors import ColorFlowError

def _timed_chapter(data: Path, out: Path, pipeline, settings, executor=None) -> dict[str, float]:
    """Color data/chapter with data/refs into `out`: its pages, seconds and pages per hour (every page must be done)."""
    from engine.io.chapter import list_images, open_chapter
    from engine.pipelines.chapter import colorize_chapter
    from engine.project.state import ChapterProject

    start = time.perf_counter()
    report = colorize_chapter(open_chapter([data / "chapter"]), list_images([data / "refs"]), pipeline,
                              ChapterProject.open_or_create(out), settings=settings, executor=executor)
    seconds = time.perf_counter() - start
    if report.failed:
        page, reason = next(iter(report.failed.items()))
        raise ColorFlowError(f"bench pages --ray: page {page} failed: {reason}")
    return {"pages": len(report.done), "chapter_s": seconds, "pages_per_hour": len(report.done) * 3600 / seconds}


def bench_ray(models: str, device: str, *, address: str, workers: int | None, pages: int = 6, refs: int = 3,
              steps: int = 10, size=None, input_style: str = "screen", seed: int = 0,
              warmup: bool = True) -> dict[str, Any]:
    """Local vs Ray pages per hour on one generated chapter (`pages` pages, `refs` references). With `warmup`,
    each run first colors an uncounted chapter (one page locally, one per worker on Ray)."""
    from engine.benchmarks.stages import _rounded, _settings  # bench pages' own settings of a mode, and rounding
    from engine.core.devices import describe_device, pick_device
    from engine.core.geometry import choose_work_size
    from engine.core.options import RunSettings
    from engine.io.demo import make_demo_chapter
    from engine.models.sources import random_weights_kind, random_weights_notice
    from engine.pipelines.families import load_families
    from engine.pipelines.ray_options import ray_executor

    settings = _settings("ours", steps=steps, size=size, input_style=input_style, seed=seed)
    resolved = pick_device(device)
    result: dict[str, Any] = {"models": models, "device": resolved, "device_name": describe_device(resolved),
                              "pages": pages, "references": refs, "steps": steps,
                              "size": str(choose_work_size((360, 512), size)), "input_style": input_style,
                              "address": address}
    with tempfile.TemporaryDirectory(prefix="colorflow-bench-ray-") as folder:
        work = Path(folder)
        data = make_demo_chapter(work / "data", pages=pages, refs=refs, seed=seed)[0].parent

        def pipeline(cache: str, first):
            start = time.perf_counter()
            loaded = load_families(models, resolved, cache_dir=Path(cache), work_size=settings.size,
                                   decode=settings.colorize.decode, first=first)
            return loaded, time.perf_counter() - start

        local, load_s = pipeline(work / "cache-local", settings.input_style)
        if warmup:
            warm = make_demo_chapter(work / "warm-local", pages=1, refs=1, seed=seed + 1)[0].parent
            _timed_chapter(warm, work / "warm-local-out", local, settings)
        result["local"] = {**_timed_chapter(data, work / "out-local", local, settings), "load_s": load_s}
        del local
        driver, _ = pipeline(work / "cache-ray", None)  # prepares and retrieves; the workers color
        options = RunSettings(models=models, device=device, steps=steps, size=str(settings.size) if size else None,
                              input_style=input_style, seed=seed, cache_dir=str(work / "cache-ray"), ray=address,
                              workers=workers)
        start = time.perf_counter()
        with ray_executor(options, settings) as executor:
            start_s = time.perf_counter() - start
            if warmup:
                warm = make_demo_chapter(work / "warm-ray", pages=executor.workers, refs=1, seed=seed + 1)[0].parent
                _timed_chapter(warm, work / "warm-ray-out", driver, settings, executor)
            ray = _timed_chapter(data, work / "out-ray", driver, settings, executor)
            result["ray"] = {**ray, "workers": executor.workers, "start_s": start_s}
    result["workers"] = result["ray"]["workers"]
    result["efficiency"] = result["ray"]["pages_per_hour"] / (result["workers"] * result["local"]["pages_per_hour"])
    kind = random_weights_kind(models)
    result["notes"] = [
        "pages_per_hour = pages x 3600 / chapter_s, chapter_s the whole colorize_chapter call (retrieval and each "
        "page's preparation here, the coloring, the page writes); model loading and the workers' start not counted",
        "efficiency = ray pages_per_hour / (workers x local pages_per_hour); on one machine the workers share its "
        "cores (or GPUs) with each other and with the preparation here",
        *([random_weights_notice(kind)] if kind else []),
    ]
    return _rounded(result)


def ray_text(result: dict[str, Any]) -> str:
    """The report of bench_ray as text."""
    local, ray = result["local"], result["ray"]
    where = "a local Ray" if result["address"] == "local" else f"Ray at {result['address']}"
    return "\n".join([
        f"bench pages --ray: {result['models']} models on {result['device_name']}, {result['size']}, "
        f"{result['steps']} steps, {result['pages']} page(s), {result['references']} reference(s), "
        f"input style {result['input_style']}",
        f"local (this process): {local['pages']} page(s) in {local['chapter_s']:.2f} s = "
        f"{local['pages_per_hour']:.0f} pages/hour (models loaded in {local['load_s']:.1f} s, not counted)",
        f"Ray ({where}, {ray['workers']} worker(s)): {ray['pages']} page(s) in {ray['chapter_s']:.2f} s = "
        f"{ray['pages_per_hour']:.0f} pages/hour (workers started in {ray['start_s']:.1f} s, not counted)",
        f"scaling efficiency: {result['efficiency']:.3f} = {ray['pages_per_hour']:.0f} / ({ray['workers']} x "
        f"{local['pages_per_hour']:.0f})",
        *[f"note: {note}" for note in result["notes"]],
    ])
