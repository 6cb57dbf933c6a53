"""A chapter mixing input styles: one pipeline per model set, each loaded once, at most one on the GPU.

Screen and gray pages are colored by SD1.5 with the GraySD weights; sketch and sketch-shading pages
by the PixArt-alpha base with the ColorFlow sketch/ or shading/ weights (their own guide, LoRA and
GSRP net: two model sets on one base). FamilyPipelines loads the set a page needs when the first
such page is colored, keeps it for the rest of the run, and before a page of another set runs it
moves the idle set's diffusion models to the CPU (engine.core.offload.place_models; a no-op on the
CPU). Preparation (each style's preprocessing) and retrieval (one CLIP encoder, one cache) are
shared by every set and never load a diffusion model.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from engine.core.events import EventSink, Notice, ignore
from engine.core.options import InputStyle
from engine.pipelines.page import ColorFlowPipeline, load_pipeline, load_preparer, load_retriever, models_id_of, \
    model_paths, prepare_page

if TYPE_CHECKING:
    from engine.core.geometry import WorkSize
    from engine.io.chapter import ImageSource, PageImage
    from engine.models.sources import ModelPaths
    from engine.pipelines.settings import InputSettings
    from engine.preprocess.page import PagePreparer, PreparedPage
    from engine.rap.curation import Choices
    from engine.rap.retrieval import PageRetrieval, Retriever

# The model set that colors each style (one load each per run).
MODEL_SETS = {InputStyle.SCREEN: "sd", InputStyle.GRAY: "sd", InputStyle.SKETCH: "pixart-sketch",
              InputStyle.SKETCH_SHADING: "pixart-shading"}


def model_set(style: str) -> str:
    """The name of the model set that colors pages of `style` (MODEL_SETS)."""
    return MODEL_SETS[InputStyle(style)]


class FamilyPipelines:
    """The chapter loop's pipeline when pages may differ in style: `prepare` and `retrieve` as
    ColorFlowPipeline's (each style's own preparer), `for_style(style)` the ColorFlowPipeline that
    colors that style, loaded on first use (see the module doc). `loads` counts the loads per set."""

    def __init__(self, load: Callable[[InputStyle], ColorFlowPipeline], preparer: Callable[[InputStyle], PagePreparer],
                 retriever: Retriever, models_id: str | Callable[[str], str], *,
                 set_of: Callable[[str], str] = model_set) -> None:
        self.load, self._preparer, self._set_of = load, preparer, set_of
        self.retriever, self._models_id = retriever, models_id
        self._ids: dict[str, str] = {}
        self.loads: dict[str, int] = {}
        self._loaded: dict[str, ColorFlowPipeline] = {}
        self._failed: dict[str, Exception] = {}
        self._on_device: str | None = None  # the set whose diffusion models are on its device
        self._own = {"ScreenStyle": 0.0, "RAP": 0.0}

    def restart(self, load: Callable[[InputStyle], ColorFlowPipeline]) -> None:
        """A new run: its loader (its events), and the sets whose load failed are tried again."""
        self.load = load
        self._failed.clear()
        self._ids.clear()  # the model files may have changed between runs

    def models_id_for(self, style: str) -> str:
        """The models part of the resume key of a page of `style` (its model set's files: page.models_id_of)."""
        if not callable(self._models_id):
            return self._models_id
        if str(style) not in self._ids:
            self._ids[str(style)] = self._models_id(str(style))
        return self._ids[str(style)]

    @property
    def timings(self) -> dict[str, float]:
        """Seconds per stage over every set, as ColorFlowPipeline.timings."""
        total = dict(self._own)
        for pipeline in self._loaded.values():
            for stage in ("ICP", "GSRP"):
                total[stage] = total.get(stage, 0.0) + pipeline.timings.get(stage, 0.0)
        return total

    def prepare(self, page: PageImage, inputs: InputSettings) -> PreparedPage:
        start = time.perf_counter()
        try:
            return prepare_page(self._preparer(inputs.style), page, inputs)
        finally:
            self._own["ScreenStyle"] += time.perf_counter() - start

    def retrieve(self, page: PageImage, references: Sequence[ImageSource], choices: Choices, prepared) -> PageRetrieval:
        start = time.perf_counter()
        try:
            return self.retriever.retrieve(page, references, choices, prepared.work_size, prepared)
        finally:
            self._own["RAP"] += time.perf_counter() - start

    def release_retrieval(self) -> None:
        self.retriever.release_encoder()

    def for_style(self, style: str) -> ColorFlowPipeline:
        """The pipeline of `style`'s model set, loaded once (a load that failed fails again, at once,
        for every page that needs it); the other set's diffusion models go to the CPU first."""
        name = self._set_of(style)
        if name in self._failed:
            raise self._failed[name]
        if name != self._on_device and self._on_device in self._loaded:
            self._place(self._on_device, to_cpu=True)
            self._on_device = None  # (until a set is placed: a failed load leaves none on the device)
        if name not in self._loaded:
            self.loads[name] = self.loads.get(name, 0) + 1
            try:
                self._loaded[name] = self.load(InputStyle(style))
            except Exception as exc:
                self._failed[name] = exc
                raise
        elif name != self._on_device:
            self._place(name, to_cpu=False)
        self._on_device = name
        return self._loaded[name]

    def _place(self, name: str, *, to_cpu: bool) -> None:
        from engine.core.offload import place_models

        components = self._loaded[name].colorizer.components
        place_models(components, "cpu" if to_cpu else components.device)


class OnePipeline:
    """One loaded ColorFlowPipeline as the chapter loop's pipeline: it prepares, retrieves and colors
    every page, whatever its style (its own preparer and models; a caller mixing model sets uses
    FamilyPipelines)."""

    def __init__(self, pipeline: ColorFlowPipeline) -> None:
        self.pipeline = pipeline

    def __getattr__(self, name: str):  # prepare, retrieve, retriever, release_retrieval, timings
        return getattr(self.pipeline, name)

    def models_id_for(self, style: str) -> str:
        return self.pipeline.models_id  # its own models color every page

    def for_style(self, style: str) -> ColorFlowPipeline:
        return self.pipeline


def style_preparers(models: ModelPaths | str, device: str = "cpu",
                    cache_dir: Path | None = None) -> Callable[[InputStyle], PagePreparer]:
    """Each style's preprocess stage (page.load_preparer), loaded on first use and kept."""
    preparers: dict[InputStyle, PagePreparer] = {}

    def preparer(style: InputStyle) -> PagePreparer:
        style = InputStyle(style)
        if style not in preparers:
            preparers[style] = load_preparer(models, device, cache_dir, style)
        return preparers[style]

    return preparer


def load_families(models: ModelPaths | str, device: str = "cpu", *, low_vram: bool = False,
                  cache_dir: Path | None = None, vae_tiling: bool = False, compile: bool = False,
                  max_vram: float | None = None, work_size: WorkSize | None = None, decode: str = "canvas",
                  retriever: Retriever | None = None, emit: EventSink = ignore,
                  first: str | None = None) -> FamilyPipelines:
    """FamilyPipelines on a model source with load_pipeline's options; `first` (a style) is loaded
    now, so that its models' errors come before any page runs."""
    paths = model_paths(models)
    retriever = retriever or load_retriever(paths, device, cache_dir)
    preparer = style_preparers(paths, device, cache_dir)

    def load(style: InputStyle) -> ColorFlowPipeline:
        pipeline = load_pipeline(paths, device, low_vram=low_vram, cache_dir=cache_dir, retriever=retriever,
                                 preparer=preparer(style), vae_tiling=vae_tiling, input_style=style, compile=compile,
                                 max_vram=max_vram, work_size=work_size, decode=decode)
        if pipeline.memory_note:  # what --max-vram chose, once per load
            emit(Notice(pipeline.memory_note))
        return pipeline

    families = FamilyPipelines(load, preparer, retriever, lambda style: models_id_of(paths, retriever, style))
    if first is not None:
        families.for_style(first)
    return families
