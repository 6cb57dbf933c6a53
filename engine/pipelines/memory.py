"""Per-stage peak memory at a working size (weights resident + peak live activations, from meta-device forwards) and the --max-vram choice.

The figures come from meta_forward.measure (seconds at official size, torch needed). They are looked
up, in order, in memory, in the table shipped for the official sizes (resources/models/
memory-estimates.json, written by scripts/memory_table.py: `models list` and the Model manager need
no torch for those), in the per-user cache, and only then computed and cached.

Which weights are on the device at a stage's peak follows the placement (see `resident`):
- "cpu": every model, always (RAM; nothing is offloaded on the CPU);
- "gpu": every model from loading on; the CLIP image encoder leaves before ICP (release_retrieval);
- "gpu" with low_vram: ScreenStyle (and CLIP for retrieval) stay; each diffusion model comes when it
  runs and leaves as engine/models/loading.py install_offload says, phase by phase of ICP.
The line-art styles (sketch, sketch-shading) are estimated for their own family (architecture
"pixart-official" in the table, meta_forward_pixart.py): the line extractor instead of ScreenStyle, the
PixArt transformer, its guide, the VAE and the fusion net; never T5 (its prompt embeddings are cached).
Low VRAM follows icp/pixart_components.install_pixart_offload (PIXART_OFFLOADED).
Not counted: the CUDA context and kernel workspaces (some 0.3-1 GiB), allocator caching and
fragmentation, images and tensors on the host.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

from engine.core.errors import InputError
from engine.core.geometry import OFFICIAL_SIZES, WorkSize
from engine.core.options import LINE_ART_STYLES

ESTIMATE_VERSION = 1  # bump when what is measured changes: shipped tables and caches are then unused
GIB = 2**30
ICP_PHASES = ("encode", "text", "guide", "unet", "decode")  # as meta_forward.ICP_PHASES
SCREENSTYLE = ("rgb_to_screen", "screen_decoder")
DIFFUSION = ("text_encoder", "unet", "guide", "vae", "fusion")
# Low-VRAM offload (install_offload): the diffusion models on the device at each moment. The VAE
# comes for the conditioning encode and stays to the end of the page; the text encoder leaves when
# the UNet first runs (so the guide's first step still has it); the guide leaves after the last
# step; the UNet when the VAE decodes; GSRP runs the VAE with the fusion network.
OFFLOADED = {"encode": ("vae",), "text": ("vae", "text_encoder"), "guide": ("vae", "text_encoder", "guide"),
             "unet": ("vae", "guide", "unet"), "decode": ("vae",), "GSRP": ("vae", "fusion")}
PLACEMENTS = ("gpu", "cpu")
# The line-art family (install_pixart_offload): the transformer leaves when the VAE decodes, the guide
# after the last step; from the second step on both are there while the other runs.
PIXART_PHASES = ("encode", "guide", "transformer", "decode")  # as meta_forward_pixart.PIXART_PHASES
PIXART_DIFFUSION = ("transformer", "guide", "vae", "fusion")
PIXART_OFFLOADED = {"encode": ("vae",), "guide": ("vae", "guide", "transformer"),
                    "transformer": ("vae", "guide", "transformer"), "decode": ("vae",), "GSRP": ("vae", "fusion")}
PIXART_PREFIX = "pixart-"  # the table's architecture of the line-art family: "pixart-official", "pixart-tiny"


def family_architecture(architecture: str, input_style: str) -> str:
    """The table's architecture name of the models that color `input_style` pages."""
    return f"{PIXART_PREFIX}{architecture}" if str(input_style) in LINE_ART_STYLES else architecture


def measure_any(architecture: str, size: WorkSize, dtype: str, *, vae_tiling: bool = False,
                decode: str = "canvas") -> dict[str, dict[str, int]]:
    """The meta-device figures of either family (meta_forward.measure, meta_forward_pixart.measure_pixart)."""
    if architecture.startswith(PIXART_PREFIX):
        from engine.pipelines.meta_forward_pixart import measure_pixart

        return measure_pixart(architecture.removeprefix(PIXART_PREFIX), size, dtype, vae_tiling=vae_tiling,
                              decode=decode)
    from engine.pipelines.meta_forward import measure

    return measure(architecture, size, dtype, vae_tiling=vae_tiling, decode=decode)


@dataclass(frozen=True)
class StagePeak:
    """A stage's estimated peak: the weights on the device then, and the live activations."""

    stage: str
    weights: int
    activations: int
    phase: str | None = None  # ICP: the phase of the peak

    @property
    def total(self) -> int:
        return self.weights + self.activations


@dataclass(frozen=True)
class MemoryEstimate:
    """The peak of every stage at one working size, dtype and placement."""

    size: str
    dtype: str
    placement: str  # "gpu" (any accelerator) or "cpu"
    low_vram: bool
    vae_tiling: bool
    decode: str
    stages: tuple[StagePeak, ...]

    @property
    def peak(self) -> int:
        return max(stage.total for stage in self.stages)

    def as_dict(self) -> dict:
        return {"size": self.size, "dtype": self.dtype, "placement": self.placement, "low_vram": self.low_vram,
                "vae_tiling": self.vae_tiling, "decode": self.decode, "peak_gib": round(self.peak / GIB, 3),
                "stages": {s.stage: {"weights_gib": round(s.weights / GIB, 3), "activations_gib":
                                     round(s.activations / GIB, 3), "total_gib": round(s.total / GIB, 3),
                                     **({"phase": s.phase} if s.phase else {})} for s in self.stages}}

    def stage_text(self) -> str:
        return ", ".join(f"{s.stage} {s.total / GIB:.2f}" for s in self.stages)


def table_key(architecture: str, size: WorkSize, dtype: str, vae_tiling: bool, decode: str) -> str:
    return f"v{ESTIMATE_VERSION}|{architecture}|{size}|{dtype}|tiling={int(vae_tiling)}|decode={decode}"


def _library_versions() -> str:
    import importlib.metadata

    return ",".join(f"{name} {importlib.metadata.version(name)}" for name in ("torch", "diffusers", "transformers"))


@lru_cache(maxsize=None)
def _shipped() -> dict:
    from engine.core.resources import model_config

    try:
        return model_config("memory-estimates")["entries"]
    except (FileNotFoundError, KeyError):
        return {}


def _cache_path():
    from engine.core.paths import cache_dir

    return cache_dir() / "memory-estimates.json"


def _read_cache() -> dict:
    try:
        data = json.loads(_cache_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


_measured: dict[str, dict] = {}


def measured(architecture: str, size: WorkSize, dtype: str, *, vae_tiling: bool = False,
             decode: str = "canvas") -> dict[str, dict[str, int]]:
    """The raw figures (meta_forward.measure) from the first place that has them (module doc)."""
    key = table_key(architecture, size, dtype, vae_tiling, decode)
    if key in _measured:
        return _measured[key]
    found = _shipped().get(key)
    cache_key = f"{key}|{_library_versions()}"
    if found is None:
        found = _read_cache().get(cache_key)
    if found is None:
        from diffusers.utils import logging as diffusers_logging

        from engine.io.fileio import atomic_write_json

        diffusers_logging.set_verbosity_error()  # ModelMixin.to(dtype) warns about fp32-pinned modules even with none
        found = measure_any(architecture, size, dtype, vae_tiling=vae_tiling, decode=decode)
        try:
            atomic_write_json(_cache_path(), {**_read_cache(), cache_key: found})
        except OSError:
            pass  # an unwritable cache only costs a recompute
    _measured[key] = found
    return found


def resident(stage: str, phase: str | None, placement: str, low_vram: bool, screenstyle: bool = True,
             line_art: bool = False) -> tuple[str, ...]:
    """The models whose weights are on the device during a stage (and ICP phase); module doc.
    `screenstyle`: whether the ScreenStyle networks are loaded (input style "screen"); `line_art`: the
    line-art family (its line extractor, no ScreenStyle)."""
    preprocess = ("line_extractor",) if line_art else SCREENSTYLE if screenstyle else ()
    diffusion, offloaded = (PIXART_DIFFUSION, PIXART_OFFLOADED) if line_art else (DIFFUSION, OFFLOADED)
    if placement == "cpu":
        return (*preprocess, "image_encoder", *diffusion)
    retrieval = ("image_encoder",) if stage in ("ScreenStyle", "Lines", "RAP") else ()
    if not low_vram:
        return (*preprocess, *retrieval, *diffusion)
    return (*preprocess, *retrieval, *offloaded.get(phase or stage, ()))


def estimate(size: WorkSize | str, dtype: str = "float16", *, placement: str = "gpu", low_vram: bool = False,
             vae_tiling: bool = False, decode: str = "canvas", architecture: str = "official",
             input_style: str = "screen") -> MemoryEstimate:
    """Each stage's peak at `size` (module doc). `architecture`: "official" or "tiny" (the models'
    sizes; models_architecture tells a model source's). Input style "gray" loads and runs no
    ScreenStyle networks: no ScreenStyle stage. The line-art styles: their own family (module doc), a
    "Lines" stage (the line extractor) first."""
    size = WorkSize.parse(size) if isinstance(size, str) else size
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    line_art = str(input_style) in LINE_ART_STYLES
    figures = measured(family_architecture(architecture, input_style), size, dtype, vae_tiling=vae_tiling,
                       decode=str(decode))
    weights, activations = figures["weights"], figures["activations"]

    screenstyle = str(input_style) == "screen"

    def peak(stage: str, phase: str | None = None) -> StagePeak:
        held = sum(weights[name] for name in resident(stage, phase, placement, low_vram, screenstyle, line_art))
        return StagePeak(stage, held, activations[phase or stage], phase)

    stages = [peak("Lines")] if line_art else [peak("ScreenStyle")] if screenstyle else []
    phases = PIXART_PHASES if line_art else ICP_PHASES
    stages += [peak("RAP"), max((peak("ICP", p) for p in phases), key=lambda s: s.total), peak("GSRP")]
    return MemoryEstimate(str(size), dtype, placement, low_vram and placement != "cpu", vae_tiling, str(decode),
                          tuple(stages))


SUMMARY = (("GPU fp16", dict(dtype="float16", placement="gpu")),
           ("GPU fp16, low VRAM", dict(dtype="float16", placement="gpu", low_vram=True)),
           ("CPU fp32 (RAM)", dict(dtype="float32", placement="cpu")))
NOT_COUNTED = ("weights + activations from meta-device forwards; not counted: the CUDA context (~0.5 GiB), "
               "allocator caching, and on the CPU the process itself (~0.5 GiB of libraries)")


def summary(size: WorkSize | str, architecture: str = "official",
            input_style: str = "screen") -> list[tuple[str, MemoryEstimate]]:
    """What `models list` and the Model manager show: a GPU in fp16, with low VRAM, and the CPU in fp32."""
    return [(label, estimate(size, architecture=architecture, input_style=input_style, **choice))
            for label, choice in SUMMARY]


def summary_lines(size: WorkSize | str, architecture: str = "official", input_style: str = "screen") -> list[str]:
    """One line per SUMMARY row: the overall peak and each stage's, in GiB."""
    rows = summary(size, architecture, input_style)
    width = max(len(label) for label, _ in rows)
    return [f"{label:<{width}}  peak {found.peak / GIB:5.2f} GiB  ({found.stage_text()})" for label, found in rows]


def models_architecture(models) -> str:
    """"tiny" for the tiny models (the tiny preset or make-tiny), else "official" (the official
    checkpoints, make-random and trained models share the official architecture)."""
    from engine.models.sources import random_weights_kind

    return "tiny" if random_weights_kind(models) == "tiny" else "official"


# --max-vram ----------------------------------------------------------------------------------

CHOICES = ((False, False), (False, True), (True, False), (True, True))  # (offload, tiling), least costly first


def choice_words(low_vram: bool, vae_tiling: bool) -> str:
    return {(False, False): "no memory measure needed", (False, True): "VAE tiling",
            (True, False): "model offload", (True, True): "model offload and VAE tiling"}[(low_vram, vae_tiling)]


@dataclass(frozen=True)
class MemoryPlan:
    """What --max-vram chose: offload and tiling, and the estimate that fits the limit."""

    limit_gib: float
    low_vram: bool
    vae_tiling: bool
    estimate: MemoryEstimate  # at the largest working size the run may use

    def line(self) -> str:
        return (f"max VRAM {self.limit_gib:g} GiB: {choice_words(self.low_vram, self.vae_tiling)} (estimated peak "
                f"{self.estimate.peak / GIB:.1f} GiB at {self.estimate.size}, {self.estimate.dtype})")


def _largest(estimates: Iterable[MemoryEstimate]) -> MemoryEstimate:
    return max(estimates, key=lambda e: e.peak)


def plan_for_limit(limit_gib: float, size: WorkSize | None, dtype: str, *, low_vram: bool = False,
                   vae_tiling: bool = False, decode: str = "canvas", architecture: str = "official",
                   input_style: str = "screen") -> MemoryPlan:
    """The least costly of none, VAE tiling, model offload, both, whose estimated peak on the
    accelerator is at most `limit_gib` at `size` (None: each official size, as pages pick them),
    keeping what the user turned on already. No choice fits: an InputError before any model loads."""
    sizes = [size] if size is not None else [WorkSize(*s) for s in OFFICIAL_SIZES]

    def worst(offload: bool, tiling: bool, region: str = decode) -> MemoryEstimate:
        return _largest(estimate(s, dtype, placement="gpu", low_vram=offload, vae_tiling=tiling, decode=region,
                                 architecture=architecture, input_style=input_style) for s in sizes)

    tried = [(o, t) for o, t in CHOICES if o >= low_vram and t >= vae_tiling]
    for offload, tiling in tried:
        found = worst(offload, tiling)
        if found.peak <= limit_gib * GIB:
            return MemoryPlan(limit_gib, offload, tiling, found)
    least = worst(True, True)
    message = (f"--max-vram {limit_gib:g}: no choice fits; the least memory, model offload and VAE tiling, is "
               f"estimated at {least.peak / GIB:.1f} GiB at {least.size}, {dtype}")
    if decode != "page":
        page = worst(True, True, "page")
        fits = "fits" if page.peak <= limit_gib * GIB else "does not fit either"
        message += (f"; with --decode page (which changes the pixels) {page.peak / GIB:.1f} GiB, which {fits}")
    raise InputError(message + "; raise the limit, or choose a smaller --size")


def choose_for_limit(limit_gib: float, device: str, models, *, dtype=None, low_vram: bool = False,
                     vae_tiling: bool = False, size: WorkSize | None = None, decode: str = "canvas",
                     input_style: str = "screen") -> tuple[bool, bool, str]:
    """(low_vram, vae_tiling, the line that says so) for load_pipeline's --max-vram. On the CPU the
    limit changes nothing (it is a GPU limit; RAM is what `models list` shows for the CPU)."""
    import torch

    if torch.device(device).type == "cpu":
        return low_vram, vae_tiling, (f"max VRAM {limit_gib:g} GiB: a GPU limit, nothing changed on the CPU (RAM use: "
                                      "colorflow models list)")
    from engine.models.loading import default_dtype

    name = str(dtype or default_dtype(device)).removeprefix("torch.")
    plan = plan_for_limit(limit_gib, size, name, low_vram=low_vram, vae_tiling=vae_tiling, decode=str(decode),
                          architecture=models_architecture(models), input_style=input_style)
    return plan.low_vram, plan.vae_tiling, plan.line()
