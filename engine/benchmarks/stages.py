"""bench_pages: per page and stage wall time and peak memory of our pipeline, --low-vram and the official procedure."""

from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from engine.benchmarks.stage_timing import (MIB, MemoryMeter, ReembeddingCache, StageRecorder, instrument,
                                           release_freed_memory)
from engine.core.errors import InputError
from engine.core.options import LINE_ART_STYLES

STAGES = ("ScreenStyle", "Lines", "RAP", "ICP", "GSRP")  # the preprocess stage: ScreenStyle, or Lines (line art)
MODES = ("ours", "low_vram", "official")
MODE_LABELS = {
    "ours": "ours (default settings)",
    "low_vram": "ours with --low-vram",
    "official": "official procedure, every reference re-embedded for every page",
}


def _settings(mode: str, *, steps: int, size, input_style: str, seed: int, options: Mapping[str, Any] | None = None):
    """The pipeline settings of a mode: the official procedure for "official", else ours; `options`:
    other RunSettings fields (a variant's overrides)."""
    from engine.core.options import Procedure, RunSettings
    from engine.pipelines.settings import pipeline_settings

    procedure = Procedure.OFFICIAL if mode == "official" else Procedure.OURS
    return pipeline_settings(RunSettings(steps=steps, size=str(size) if size else None, input_style=input_style,
                                         seed=seed, procedure=procedure, **(options or {})))


def _summary(pages: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    stages: dict[str, dict[str, float]] = {}
    for stage in STAGES:
        cells = [p[stage] for p in pages.values() if stage in p]
        if not cells:
            continue
        total = sum(c["s"] for c in cells)
        stages[stage] = {"s": total, "s_per_page": total / len(cells)}
        for key in cells[0]:
            if key != "s":
                stages[stage][key] = max(c.get(key, 0.0) for c in cells)
    return stages


def _counters(pipeline) -> dict[str, int]:
    retriever = pipeline.retriever
    return {
        "clip_images_embedded": retriever.embedder.images_embedded,
        "clip_forward_passes": retriever.embedder.forward_passes,
        "reference_patches_embedded": retriever.reference_images_embedded,
        "query_patches_embedded": retriever.query_images_embedded,
        "screenstyle_passes": pipeline.preparer.passes_run,
        "preprocess_passes": pipeline.preparer.passes_run,  # ScreenStyle passes or line extractions
    }


def _t5_loads() -> int:
    from engine.icp.text_embeddings import encoder_loads

    return encoder_loads()


def preprocess_stage(input_style: str) -> str:
    """The preprocess stage's name in the report: Lines for the line-art styles, else ScreenStyle."""
    return "Lines" if input_style in LINE_ART_STYLES else "ScreenStyle"


def prompt_embeddings_once(models: str, device: str, folder: Path, meter: MemoryMeter) -> dict[str, float]:
    """The line-art styles' T5 prompt embeddings computed once into `folder` (a text-embeddings cache
    folder), timed and measured: the "computed once ever" cost, kept out of every mode's figures
    (each mode's cache gets a copy). Streamed block by block where T5 does not fit (text_embeddings.py)."""
    from engine.icp.text_embeddings import encoder_loads, prompt_embeddings
    from engine.models.loading import default_dtype
    from engine.models.pixart_loading import NEGATIVE_PROMPT, PROMPT
    from engine.models.sources import resolve_models

    loads = encoder_loads()
    meter.begin()
    start = time.perf_counter()
    prompt_embeddings(resolve_models(models).pixart, PROMPT, NEGATIVE_PROMPT, cache_dir=folder, device=device,
                      dtype=default_dtype(device))
    seconds = time.perf_counter() - start
    return {"s": seconds, **meter.end(), "t5_loads": encoder_loads() - loads}


def _run_mode(mode: str, models: str, device: str, work: Path, *, meter: MemoryMeter, settings, emit,
              warmup: tuple[Path, Path] | None = None, profile_top: int = 0,
              compile_models: bool = False, text_cache: Path | None = None) -> dict[str, Any]:
    """Load the models for `mode` (torch.compiled with `compile_models`: RunSettings.compile, a load-time
    option), color work/data's chapter with them, and measure it. With
    `warmup` (a chapter and its references), that chapter is colored first, unmeasured. With
    `profile_top`, the chapter is then colored once more under torch.profiler (not counted)."""
    from engine.core.errors import ColorFlowError
    from engine.core.events import ignore
    from engine.io.chapter import list_images, open_chapter
    from engine.pipelines.chapter import colorize_chapter
    from engine.pipelines.page import load_pipeline
    from engine.project.state import ChapterProject

    cache = work / f"cache-{mode}"  # empty: nothing measured was computed before
    if text_cache is not None:  # but the prompt's T5 embeddings, computed once for every mode
        import shutil

        from engine.icp.text_embeddings import CACHE_FOLDER

        shutil.copytree(text_cache, cache / CACHE_FOLDER)
    official_cache = retriever = None
    t5_loads = _t5_loads()  # T5 loads by this mode, loading included (line art: 0, the embeddings cached)
    before_load = meter.now() / MIB  # the process without this mode's models (an earlier mode's are freed)
    meter.begin()
    load_start = time.perf_counter()
    if mode == "official":
        from engine.rap.embedding import ClipEmbedder
        from engine.rap.retrieval import Retriever
        from engine.models.sources import resolve_models

        official_cache = ReembeddingCache()
        retriever = Retriever(ClipEmbedder(resolve_models(models).image_encoder, device=device), official_cache)
    pipeline = load_pipeline(models, device, low_vram=mode == "low_vram", cache_dir=cache, retriever=retriever,
                             input_style=settings.input_style, compile=compile_models)
    load_s = time.perf_counter() - load_start
    load_memory = meter.end()
    after_load = meter.now() / MIB

    def run(chapter_dir: Path, refs_dir: Path, out: Path, sink):
        # overlap=False: one stage at a time, so each stage's seconds and peak memory are its own.
        report = colorize_chapter(open_chapter([chapter_dir]), list_images([refs_dir]), pipeline,
                                  ChapterProject.open_or_create(out), settings=settings, emit=sink, overlap=False)
        if report.failed:
            page, reason = next(iter(report.failed.items()))
            raise ColorFlowError(f"bench pages: {mode}: page {page} failed: {reason}")
        return report

    if warmup is not None:
        run(*warmup, work / f"warmup-{mode}", ignore)
    before = _counters(pipeline)
    recorder = StageRecorder(meter)
    restore = instrument(pipeline, recorder, official_cache, preprocess_stage(settings.input_style))
    start = time.perf_counter()
    report = run(work / "data" / "chapter", work / "data" / "refs", work / f"out-{mode}", emit)
    chapter_s = time.perf_counter() - start
    restore()
    pages = recorder.pages
    result = {
        "label": MODE_LABELS[mode],
        "load_s": load_s,
        "memory_before_load_mib": before_load,
        "memory_after_load_mib": after_load,  # minus memory_before_load_mib: this mode's resident models
        "load_peak_mib": load_memory["peak_mib"],
        "warmup": warmup is not None,
        "chapter_s": chapter_s,
        "pages_per_hour": len(report.done) * 3600 / chapter_s,
        "page_s": sum(cell["s"] for page in pages.values() for cell in page.values()) / max(1, len(pages)),
        "stages": _summary(pages),
        "peak_mib": max((c["peak_mib"] for p in pages.values() for c in p.values()), default=0.0),
        **{key: value - before[key] for key, value in _counters(pipeline).items()},
        "text_encoder_loads": _t5_loads() - t5_loads,
        "pages": [{"page": name, "stages": stages} for name, stages in pages.items()],
    }
    if profile_top:
        from engine.benchmarks.profile import profile_pass

        result["profile"] = profile_pass(
            pipeline, lambda out: run(work / "data" / "chapter", work / "data" / "refs", out, ignore),
            work / f"profile-{mode}", device, official=mode == "official", top=profile_top)
    return result


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b > 0 else None


def _ratios(ours: dict[str, Any], official: dict[str, Any]) -> dict[str, Any]:
    time_ratios = {stage: _ratio(ours["stages"][stage]["s"], official["stages"][stage]["s"])
                   for stage in STAGES if stage in ours["stages"] and stage in official["stages"]}
    time_ratios["page"] = _ratio(ours["page_s"], official["page_s"])
    time_ratios["chapter"] = _ratio(ours["chapter_s"], official["chapter_s"])
    memory = {stage: _ratio(ours["stages"][stage]["peak_mib"], official["stages"][stage]["peak_mib"])
              for stage in time_ratios if stage in ours["stages"] and stage in official["stages"]}
    memory["peak"] = _ratio(ours["peak_mib"], official["peak_mib"])
    added = {stage: _ratio(ours["stages"][stage]["added_mib"], official["stages"][stage]["added_mib"])
             if min(ours["stages"][stage]["added_mib"], official["stages"][stage]["added_mib"]) >= 1 else None
             for stage in memory if stage in ours["stages"] and stage in official["stages"]}  # None: under 1 MiB
    return {"time": time_ratios, "peak_memory": memory, "added_memory": added,
            "clip_images_embedded": _ratio(ours["clip_images_embedded"], official["clip_images_embedded"])}


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def bench_pages(
    models: str = "official",
    device: str = "auto",
    *,
    pages: int = 2,
    refs: int = 3,
    steps: int = 10,
    size=None,
    input_style: str = "screen",
    seed: int = 0,
    modes: Sequence[str] = MODES,
    warmup: bool = True,
    threads: int | None = None,
    options: Mapping[str, Any] | None = None,
    profile: bool = False,
    profile_top: int = 8,
    emit=None,
) -> dict[str, Any]:
    """Color one generated chapter (`pages` pages, `refs` references) once per mode, in this
    process, with the same chapter loop (colorize_chapter) and fresh caches for each mode; time
    and measure memory per page and stage. With `warmup`, the first mode's models first color one
    page of other content, not counted (kernel and allocator warm-up would otherwise land on the
    first mode only). `threads`: torch's CPU threads (default: torch's choice). `options`: more
    RunSettings fields for every mode (a speed-up variant's, e.g. {"batch_pages": 2}). With `profile`,
    each mode then colors the chapter once more, uncounted, under torch.profiler: the report's
    "profile" has every mode's stages' `profile_top` operators by self time (benchmarks/profile.py).
    Returns a JSON-ready dict with every mode's stages and the ratios ours/official."""
    import torch

    from engine.io.demo import make_demo_chapter
    from engine.core.devices import describe_device, pick_device
    from engine.core.events import ignore
    from engine.core.offload import free_memory

    if pages < 1 or refs < 1:
        raise InputError("--pages and --refs must be at least 1")
    if profile and profile_top < 1:
        raise InputError("--profile-top must be at least 1")
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise InputError(f"modes must be among {', '.join(MODES)}, got {', '.join(modes) or 'none'}")
    _settings(MODES[0], steps=steps, size=size, input_style=input_style, seed=seed, options=options)  # checked first
    emit = emit or ignore
    resolved = pick_device(device)
    meter = MemoryMeter(resolved)
    baseline = meter.now() / MIB  # libraries imported, no model loaded yet
    results: dict[str, Any] = {}
    text_once: dict[str, float] | None = None
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    used_threads = torch.get_num_threads()
    try:
        with tempfile.TemporaryDirectory(prefix="colorflow-bench-pages-") as folder:
            work = Path(folder)
            make_demo_chapter(work / "data", pages=pages, refs=refs, seed=seed)
            warm = make_demo_chapter(work / "warmup", pages=1, refs=1, seed=seed + 1) if warmup else None
            text_cache = None
            if input_style in LINE_ART_STYLES:
                text_cache = work / "text-embeddings"
                text_once = prompt_embeddings_once(models, resolved, text_cache, meter)
                release_freed_memory()
            for index, mode in enumerate(dict.fromkeys(modes)):
                settings = _settings(mode, steps=steps, size=size, input_style=input_style, seed=seed, options=options)
                results[mode] = _run_mode(mode, models, resolved, work, meter=meter, settings=settings, emit=emit,
                                          warmup=warm if index == 0 else None, profile_top=profile_top if profile else 0,
                                          compile_models=bool((options or {}).get("compile", False)),
                                          text_cache=text_cache)
                gc.collect()  # this mode's models go before the next mode loads its own
                free_memory()
                release_freed_memory()  # and leave the process's RSS, so the next mode's figures start clean
    finally:
        torch.set_num_threads(previous_threads)
    from engine.core.geometry import choose_work_size
    from engine.models.sources import random_weights_kind, random_weights_notice

    notes = [
        "seconds: wall time of each stage's calls on a page, summed (ScreenStyle = the preprocess stage, "
        "also for input style gray; RAP includes the cached second retrieval of the chapter loop); "
        "chapter_s: the whole colorize_chapter call (also page writes); pages_per_hour from chapter_s; "
        "model loading (load_s) is not counted",
        f"memory: {meter.kind}; peak_mib = the highest value during the stage (process-wide, loaded "
        "models included), added_mib = that peak minus the value when the stage began",
    ]
    if not meter.cuda:
        notes.append("on the CPU, RSS is process-wide: it includes the libraries and this mode's loaded models, and "
                     "memory an earlier mode freed may stay with the process (glibc's malloc_trim hands what it can "
                     "back between modes); added_mib isolates the stage; memory_before_load_mib -> "
                     "memory_after_load_mib: RSS around this mode's model loading (the models resident), "
                     "load_peak_mib its peak")
        if "low_vram" in results:
            notes.append("on the CPU --low-vram changes nothing (offloading applies to an accelerator only)")
    kind = random_weights_kind(models)
    if kind == "tiny":
        notes.append("tiny random-weight models: timings and memory exercise the code, they say nothing about the official models")
    elif kind:  # official-size random weights: the timings and memory count, the pixels do not
        notes.append(random_weights_notice(kind))
    report: dict[str, Any] = {
        "models": models,
        "random_weights": random_weights_notice(kind) if kind else None,
        "device": resolved,
        "device_name": describe_device(resolved),
        "torch": torch.__version__,
        "pages": pages,
        "references": refs,
        "steps": steps,
        "size": str(choose_work_size((360, 512), size)),
        "input_style": input_style,
        "options": dict(options or {}),
        "warmup": warmup,
        "cpu_threads": used_threads,
        "memory_measure": meter.kind,
        "process_baseline_mib": baseline,
        "modes": results,
        "ratios": {},
        "notes": notes,
    }
    if text_once is not None:
        report["text_embeddings"] = text_once
        notes.append("line art: the prompt's T5 embeddings (text_embeddings) were computed once before the modes "
                     "(streamed block by block where T5 does not fit), timed apart and copied into each mode's cache: "
                     "ours computes them once ever; the official pipeline runs T5 on [negative, prompt] on every "
                     "call, which the official mode here does not repeat (T5-XXL is 4.7 B parameters): add "
                     "text_embeddings' seconds per page for it (less with T5 kept loaded)")
    if profile:
        from engine.benchmarks.profile import profile_note

        report["profile"] = {mode: result["profile"]["stages"] for mode, result in results.items()}
        report["profile_wall_s"] = {mode: result.pop("profile")["wall_s"] for mode, result in results.items()}
        notes.append(profile_note(resolved))
    if "official" in results:
        for mode in ("ours", "low_vram"):
            if mode in results:
                report["ratios"][f"{mode}/official"] = _ratios(results[mode], results["official"])
    return _rounded(report)
