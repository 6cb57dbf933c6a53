"""bench_speedups: one guided denoising step and one canvas decode timed per kernel choice, as ratios to a baseline.

The choices (engine/models/kernels.py): SDPA attention (the baseline, as loaded) against diffusers'
math AttnProcessor, channels_last, and torch.compile. Every figure is measured in one process,
in one run, on the same loaded models and inputs; the ratios are to the baseline of that run.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any, Callable, Iterator, Sequence

from engine.core.errors import InputError

VARIANTS = ("baseline", "channels_last", "math_attention", "compile")
VARIANT_LABELS = {
    "baseline": "as loaded: SDPA attention, contiguous (NCHW) weights, eager",
    "channels_last": "UNet, guide and VAE weights in channels_last (NHWC)",
    "math_attention": "diffusers' AttnProcessor (baddbmm + softmax + bmm) instead of SDPA: the counterfactual",
    "compile": "torch.compile of the guided UNet step and the guide (as --compile), and of the VAE decode "
               "(measured to decide whether it pays)",
}
DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16", "bfloat16": "bfloat16",
          "bf16": "bfloat16"}


def bench_size(size: Any):
    """A working size for this benchmark: a WorkSize or "WxH" text, any multiple of 32."""
    from engine.core.geometry import WorkSize

    if isinstance(size, WorkSize):
        return size
    try:
        return WorkSize(*(int(v) for v in str(size).lower().split("x")))
    except (ValueError, TypeError):
        raise InputError(f"size must be WxH in multiples of 32, e.g. 128x128, got {size!r}") from None


def _dtype(dtype: Any, device: str):
    import torch

    from engine.models.loading import default_dtype

    if dtype is None or dtype == "auto":
        return default_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype) not in DTYPES:
        raise InputError(f"dtype must be one of auto, {', '.join(sorted(set(DTYPES.values())))}, got {dtype!r}")
    return getattr(torch, DTYPES[str(dtype)])


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(run: Callable[[], Any], device, count: int) -> tuple[list[float], Any]:
    """Wall times of `count` calls of `run` (device work finished before each clock read); its last output."""
    times, output = [], None
    for _ in range(count):
        _sync(device)
        start = time.perf_counter()
        output = run()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times, output


class _Switch:
    """Switches the loaded components into a variant and back to the baseline. Compiled forwards are
    made once (kernels.compile_components, as --compile) and put back on later rounds, so each
    round reuses the compiled code instead of compiling again."""

    def __init__(self, components, backend: str | None) -> None:
        self.c, self.backend, self.compiled = components, backend, {}
        self.modules = (components.unet_runner, components.guide, components.vae_runner)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        from engine.models import kernels

        models = (self.c.unet, self.c.guide, self.c.vae)
        if name == "channels_last":
            kernels.set_channels_last(models, True)
        elif name == "math_attention":
            kernels.use_math_attention(*models)
        elif name == "compile":
            self._compile()
        try:
            yield
        finally:
            if name == "channels_last":
                kernels.set_channels_last(models, False)
            elif name == "math_attention":
                kernels.use_sdpa(*models)
            elif name == "compile":
                for module in self.modules:
                    module.__dict__.pop("forward", None)  # the class's own forward again

    def _compile(self) -> None:
        import torch

        from engine.models import kernels

        if not self.compiled:
            kernels.compile_components(self.c, self.backend)
            vae = self.c.vae_runner  # the VAE decode too, to see whether compiling it pays
            vae.forward = torch.compile(vae.forward, backend=self.backend or kernels.COMPILE_BACKEND)
            self.compiled = {module: module.forward for module in self.modules}
        for module, forward in self.compiled.items():
            module.forward = forward


def _peak_mib(device) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _measure(variants: Sequence[str], components, step, decode, device, repeats: int,
             backend: str | None) -> dict[str, dict[str, Any]]:
    """Every variant's first step and decode (compile happens there), then `repeats` rounds that
    time each variant in turn: load from other processes falls on all variants alike."""
    import torch

    switch = _Switch(components, backend)
    results: dict[str, dict[str, Any]] = {}
    for name in variants:
        try:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            with switch(name):
                first_step, _ = _timed(step, device, 1)
                first_decode, _ = _timed(decode, device, 1)
            results[name] = {"label": VARIANT_LABELS[name], "step_first_s": first_step[0],
                             "decode_first_s": first_decode[0], "step_times": [], "decode_times": [],
                             "peak_mib": _peak_mib(device)}
        except Exception as exc:  # a variant this machine cannot run (e.g. no C++ compiler for inductor)
            if name == "baseline":
                raise
            results[name] = {"label": VARIANT_LABELS[name], "error": f"{type(exc).__name__}: {exc}"[:500]}
    for _ in range(repeats):
        for name, result in results.items():
            if "error" in result:
                continue
            with switch(name):
                step_times, noise = _timed(step, device, 1)
                decode_times, image = _timed(decode, device, 1)
            result["step_times"] += step_times
            result["decode_times"] += decode_times
            result["_noise"], result["_image"] = noise.float().cpu(), image
    for name, result in results.items():
        if "error" in result:
            continue
        result["step_s"], result["decode_s"] = min(result["step_times"]), min(result["decode_times"])
        result["step_median_s"] = statistics.median(result["step_times"])
        result["decode_median_s"] = statistics.median(result["decode_times"])
        if name == "compile":  # the first call's extra time: tracing and code generation
            result["compile_step_s"] = max(0.0, result["step_first_s"] - result["step_s"])
            result["compile_decode_s"] = max(0.0, result["decode_first_s"] - result["decode_s"])
    return results


def _inputs(components, size, seed: int):
    """The step's and the decode's inputs at the canvas size: start-noise-like latents, the
    guide's 9 conditioning channels, the [negative, prompt] text embeddings and a timestep."""
    import torch

    from engine.icp.colorize import Colorizer
    from engine.icp.settings import ColorizeSettings

    scale = components.vae_scale
    shape = (1, 4, size.canvas[1] // scale, size.canvas[0] // scale)
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(shape, generator=generator).to(components.device, components.dtype)
    conditioning = torch.randn((1, 9, *shape[2:]), generator=generator).to(components.device, components.dtype)
    colorizer = Colorizer(components)
    settings = ColorizeSettings()
    with torch.inference_mode():
        text = colorizer.prompt_embeddings(settings.prompt, settings.negative_prompt)
    return colorizer, sample, conditioning, text, torch.tensor(999)


def bench_speedups(*, models: Any = "tiny", device: str = "cpu", size: Any = "256x256", dtype: Any = None,
                   repeats: int = 2, variants: Sequence[str] = VARIANTS, compile_backend: str | None = None,
                   seed: int = 0) -> dict[str, Any]:
    """Time one guided UNet denoising step (the guide at batch 1 and the UNet at CFG batch 2, as
    our procedure runs it) and one VAE decode of the whole canvas, per variant (VARIANTS): one
    first call each, then `repeats` rounds in which the variants take turns; ratios are best
    variant time / best baseline time, so below 1 is faster. `size`: the working size WxH, any
    multiple of 32 (the step and the decode run on its 2W x 2H canvas). Returns a JSON-ready dict
    (the GPU check, scripts/gpu_check.py, calls this)."""
    import numpy as np
    import torch

    from engine.core.devices import describe_device, pick_device
    from engine.icp.guide import guided_unet_forward
    from engine.models.kernels import diffusers_attentions
    from engine.models.loading import load_diffusion
    from engine.models.sources import ModelPaths, random_weights_kind, resolve_models

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise InputError(f"variants must be among {', '.join(VARIANTS)}, got {', '.join(variants) or 'none'}")
    if repeats < 1:
        raise InputError("repeats must be at least 1")
    variants = ["baseline", *(v for v in variants if v != "baseline")]
    size = bench_size(size)
    device_name = pick_device(device)
    torch_dtype = _dtype(dtype, device_name)
    paths = models if isinstance(models, ModelPaths) else resolve_models(str(models))
    load_start = time.perf_counter()
    components = load_diffusion(paths, device_name, dtype=torch_dtype, channels_last=False)
    load_s = time.perf_counter() - load_start
    target = components.device
    colorizer, sample, conditioning, text, timestep = _inputs(components, size, seed)
    batch = torch.cat([sample] * 2)

    @torch.inference_mode()
    def step():
        features = components.guide(sample, timestep, conditioning, 1.0)
        return components.unet_runner(guided_unet_forward, batch, timestep, text, features)

    @torch.inference_mode()
    def decode():
        return colorizer.decode_canvas(sample, size)

    measured = _measure(variants, components, step, decode, target, repeats, compile_backend)
    base = measured["baseline"]
    ratios: dict[str, dict[str, float]] = {}
    for name, result in measured.items():
        if "error" in result:
            continue
        noise, image = result.pop("_noise"), result.pop("_image")
        if name == "baseline":
            base_noise, base_image = noise, image
        result["step_max_abs_diff"] = float((noise - base_noise).abs().max())
        result["decode_max_level_diff"] = int(np.abs(np.asarray(image, np.int16) - np.asarray(base_image, np.int16)).max())
        ratios[name] = {"step": round(result["step_s"] / base["step_s"], 4),
                        "decode": round(result["decode_s"] / base["decode_s"], 4)}
    attention_counts = {name: len(diffusers_attentions(model))
                        for name, model in (("unet", components.unet), ("guide", components.guide),
                                            ("vae", components.vae))}
    return {
        "models": str(models), "random_weights": random_weights_kind(paths), "device": device_name,
        "device_name": describe_device(device_name), "dtype": str(torch_dtype).removeprefix("torch."),
        "size": str(size), "canvas": f"{size.canvas[0]}x{size.canvas[1]}",
        "latent": f"{sample.shape[3]}x{sample.shape[2]}", "repeats": repeats, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "load_s": load_s, "attention_modules": attention_counts,
        "variants": measured, "ratios": ratios,
        "notes": [f"ratio = variant time / baseline time in this run (below 1 = faster); times are the best of {repeats} "
                  "calls after one first call, the variants taking turns call by call (compile time = first call - best)",
                  "step = guide at batch 1 + guided UNet at CFG batch 2 (our procedure); decode = the whole "
                  "2W x 2H canvas through the VAE decoder, as ICP decodes it"],
    }


def speedups_text(result: dict[str, Any]) -> str:
    """The result as a short table with the ratios."""
    lines = [f"bench speedups: {result['models']} ({result['random_weights'] or 'weights'}) on {result['device_name']}, "
             f"{result['dtype']}, working size {result['size']} (canvas {result['canvas']}, latent {result['latent']}), "
             f"{result['threads']} threads, models loaded in {result['load_s']:.1f} s", "",
             "| Variant | step s | step ratio | decode s | decode ratio | first step s | max |diff| step | "
             "max level diff decode |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, cell in result["variants"].items():
        if "error" in cell:
            lines.append(f"| {name} | failed: {cell['error'][:120]} | | | | | | |")
            continue
        ratio = result["ratios"][name]
        lines.append(f"| {name} | {cell['step_s']:.3f} | {ratio['step']:.3f} | {cell['decode_s']:.3f} | "
                     f"{ratio['decode']:.3f} | {cell['step_first_s']:.3f} | {cell['step_max_abs_diff']:.2e} | "
                     f"{cell['decode_max_level_diff']} |")
    compiled = result["variants"].get("compile", {})
    if "compile_step_s" in compiled:
        lines += ["", f"compile: {compiled['compile_step_s']:.1f} s on the first step, "
                      f"{compiled['compile_decode_s']:.1f} s on the first decode (not in the ratios)"]
    lines += [""] + [f"{name}: {cell['label']}" for name, cell in result["variants"].items()]
    lines += [f"note: {note}" for note in result["notes"]]
    return "\n".join(lines)
