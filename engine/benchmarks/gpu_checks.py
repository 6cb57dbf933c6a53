"""The GPU check's measurements (scripts/gpu_check.py): environment, fp16/fp32 agreement, one bench mode, ratios."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

# A tensor or module on the wrong device, in the words torch uses (RuntimeError messages).
DEVICE_MIXING = re.compile(r"same device|two devices|expected .{0,40}device|input type .{0,80} weight type"
                           r"|should be the same or input should be", re.IGNORECASE)
PACKAGES = ("transformers", "accelerate", "peft", "huggingface_hub", "safetensors", "numpy", "diffusers", "pillow",
            "scikit-image", "scipy", "natsort", "platformdirs")


def error_kind(exc: BaseException) -> str:
    """The error's kind from its type and message: "device_mixing", "out_of_memory" or "other"."""
    text = f"{type(exc).__name__}: {exc}"
    if DEVICE_MIXING.search(text):
        return "device_mixing"
    return "out_of_memory" if "out of memory" in text.lower() or "OutOfMemory" in text else "other"


def environment(device: str) -> dict[str, Any]:
    """Python, torch, CUDA and cuDNN versions, the GPU's name and total memory, library versions."""
    import importlib.metadata
    import platform

    import torch

    from engine.core.devices import dtype_name

    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    found = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
             "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
             "cuda_available": torch.cuda.is_available(), "gpu": None, "gpu_total_mib": None,
             "dtype": dtype_name(device), "packages": {dist: version(dist) for dist in PACKAGES}}
    if device.startswith("cuda"):
        properties = torch.cuda.get_device_properties(torch.device(device).index or 0)
        found.update(gpu=properties.name, gpu_total_mib=round(properties.total_memory / 2**20),
                     capability=f"{properties.major}.{properties.minor}")
    return found


def precision_agreement(models, device: str, *, work: Path, size: str, steps: int, seed: int = 0,
                        input_style: str = "screen") -> dict[str, Any]:
    """One generated page colored with the same seed and inputs by the pipeline in fp16 (bf16
    where fp16 fails on a CPU) and in fp32, and in fp32 once more on the same loaded models (the
    device's own nondeterminism): max and mean absolute difference of the colored page in levels."""
    import numpy as np
    import torch

    from engine.core.offload import free_memory
    from engine.core.options import RunSettings
    from engine.io.chapter import ImageSource, load_image
    from engine.io.demo import make_demo_chapter
    from engine.pipelines.page import load_pipeline
    from engine.pipelines.settings import pipeline_settings
    from engine.rap.curation import Choices

    chapter, refs = make_demo_chapter(work / "agreement", pages=1, refs=2, seed=seed)
    page = load_image(ImageSource(sorted(chapter.iterdir())[0]), "L")
    references = [ImageSource(path) for path in sorted(refs.iterdir())]
    settings = pipeline_settings(RunSettings(steps=steps, size=size, seed=seed, input_style=input_style))

    def colored(dtype: torch.dtype, times: int = 1) -> list[np.ndarray]:
        pipeline = load_pipeline(models, device, dtype=dtype, cache_dir=work / f"agreement-{dtype}")
        images = []
        for _ in range(times):
            prepared = pipeline.prepare(page, settings.inputs)
            retrieval = pipeline.retrieve(page, references, Choices(), prepared)
            images.append(np.asarray(pipeline.color(page, retrieval, prepared, settings).convert("RGB"), np.int16))
        del pipeline
        free_memory()
        return images

    reference, repeat = colored(torch.float32, times=2)
    low_dtype = torch.float16
    try:
        (low,) = colored(low_dtype)
    except Exception:  # noqa: BLE001 - fp16 unusable here (a CPU without fp16 kernels): bf16 instead
        if device != "cpu":
            raise
        low_dtype = torch.bfloat16
        (low,) = colored(low_dtype)
    difference = np.abs(low - reference)
    return {"size": size, "steps": steps, "seed": seed, "input_style": input_style, "page": list(page.image.size),
            "output": [reference.shape[1], reference.shape[0]], "reference_dtype": "float32",
            "compared_dtype": str(low_dtype).removeprefix("torch."), "max_abs_levels": int(difference.max()),
            "mean_abs_levels": round(float(difference.mean()), 4),
            "fp32_repeat_max_abs_levels": int(np.abs(repeat - reference).max())}


def bench_mode(models, device: str, mode: str, *, pages: int, refs: int, steps: int, size: str, input_style: str,
               seed: int, warmup: bool, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One mode of bench_pages: s/page and peak memory first (None where the bench timed not every
    stage: no figure made up), the whole chapter call's seconds per page (page writes included: the
    figure to compare variants by), then the bench's own figures for the mode."""
    from engine.benchmarks.stages import bench_pages, preprocess_stage

    report = bench_pages(models, device, pages=pages, refs=refs, steps=steps, size=size, input_style=input_style,
                         seed=seed, modes=(mode,), warmup=warmup, options=options)
    result = report["modes"][mode]
    page_stages = (preprocess_stage(input_style), "RAP", "ICP", "GSRP")  # a page's stages in this style
    missing = [stage for stage in page_stages if stage not in result["stages"]]
    figures = {"s_per_page": result["page_s"], "peak_mib": result["peak_mib"]} if not missing else {
        "s_per_page": None, "peak_mib": None,
        "incomplete": f"bench_pages timed no {', '.join(missing)} under these options (its stage wrappers miss "
                      "this path): only chapter_s_per_page counts"}
    return {**figures, "chapter_s_per_page": round(result["chapter_s"] / pages, 4),
            "memory_measure": report["memory_measure"], "device_name": report["device_name"],
            "options": report["options"], "notes": report["notes"],
            **{key: value for key, value in result.items() if key not in figures}}  # the bench's own, unchanged


def mode_ratios(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """ours/official and low_vram/official (bench_pages' ratios) of the modes measured."""
    from engine.benchmarks.stages import _ratios

    if "official" not in results:
        raise RuntimeError("no ratios: the official mode was not measured in this run")
    pairs = {f"{mode}/official": _ratios(results[mode], results["official"])
             for mode in ("ours", "low_vram") if mode in results}
    if not pairs:
        raise RuntimeError("no ratios: neither ours nor low_vram was measured in this run")
    return pairs


def versus(variant: Mapping[str, Any], ours: Mapping[str, Any]) -> dict[str, float | None]:
    """A variant's chapter seconds per page and peak memory as ratios to plain ours of the same run."""
    peak = variant["peak_mib"] / ours["peak_mib"] if variant["peak_mib"] and ours["peak_mib"] else None
    return {"chapter_s_per_page": round(variant["chapter_s_per_page"] / ours["chapter_s_per_page"], 3),
            "peak_mib": round(peak, 3) if peak is not None else None}
