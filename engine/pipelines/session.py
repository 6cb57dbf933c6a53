"""EngineSession: the models of one app session, loaded lazily in the worker thread.

The GUI's worker calls these methods from its single thread; settings arrive as arguments,
never read from global config, so the same session serves any job the GUI queues.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from engine.core.options import AUTO_STYLE, RunSettings
from engine.io.chapter import Chapter, ImageSource
from engine.rap.curation import Choices
from engine.core.events import CancelToken, EventSink, ignore
from engine.project.state import ChapterProject
from engine.pipelines.ray_session import SessionWorkers
from engine.pipelines.variations import VariationRequest
from engine.rap.retrieval import PageRetrieval


def _freeze_loaded_objects() -> None:
    """Move everything alive now (libraries, loaded models) out of the garbage collector's
    reach: a full collection over them took 0.3 s per pass here, a stall the GUI's main thread
    shares (measured with gc.callbacks during a chapter run). Later objects are collected as usual."""
    import gc

    gc.freeze()


def _styled(settings: RunSettings, style: str | None) -> RunSettings:
    """`settings` for pages of one input style (`style`, else the settings' own, which must not be auto)."""
    if style is None:
        if settings.input_style == AUTO_STYLE:
            raise ValueError("input style auto is chosen per page: give the page's style")
        return settings
    return replace(settings, input_style=style)


@dataclass
class EngineSession:
    """Loads the retriever and the three-stage pipeline on first use, reuses them after: one
    pipeline per model set (SD for screen and gray, PixArt with the sketch/ or shading/ weights),
    one preparer per input style."""

    _pipelines: dict[tuple, Any] = field(default_factory=dict)
    _retrievers: dict[tuple, Any] = field(default_factory=dict)
    _preparers: dict[tuple, Any] = field(default_factory=dict)
    _model_paths: dict[str, Any] = field(default_factory=dict)
    _families: dict[tuple, Any] = field(default_factory=dict)  # FamilyPipelines, kept across runs
    ray: SessionWorkers = field(default_factory=SessionWorkers)  # the Ray workers of runs with `ray` set

    def close(self) -> None:
        """Stop what holds resources outside this process (the Ray workers)."""
        self.ray.close()

    def model_paths(self, settings: RunSettings):
        """The model source resolved (checked against its record) once per session, then shared
        by every loader."""
        if settings.models not in self._model_paths:
            from engine.models.sources import resolve_models

            self._model_paths[settings.models] = resolve_models(settings.models)
        return self._model_paths[settings.models]

    def preparer(self, settings: RunSettings, style: str | None = None):
        settings = _styled(settings, style)
        key = (settings.models, settings.device, settings.cache_dir, settings.input_style)
        if key not in self._preparers:
            from engine.core.devices import pick_device
            from engine.pipelines.page import load_preparer

            self._preparers[key] = load_preparer(
                self.model_paths(settings), pick_device(settings.device), settings.cache_dir, settings.input_style
            )
        return self._preparers[key]

    def inputs(self, settings: RunSettings, style: str | None = None):
        from engine.pipelines.settings import pipeline_settings

        return pipeline_settings(_styled(settings, style)).inputs

    def retriever(self, settings: RunSettings):
        key = (settings.models, settings.device, settings.cache_dir)
        if key not in self._retrievers:
            from engine.core.devices import pick_device
            from engine.pipelines.page import load_retriever

            self._retrievers[key] = load_retriever(self.model_paths(settings), pick_device(settings.device),
                                                   settings.cache_dir)
            _freeze_loaded_objects()
        return self._retrievers[key]

    def pipeline(self, settings: RunSettings, style: str | None = None):
        """The pipeline of the model set that colors `style` (the settings' own when None)."""
        from engine.pipelines.families import model_set

        settings = _styled(settings, style)
        # --max-vram decides from the working size and decode region, so they reload only with a limit
        limit = (settings.max_vram, settings.size, settings.decode) if settings.max_vram is not None else None
        key = (settings.models, settings.device, settings.low_vram, settings.cache_dir, model_set(settings.input_style),
               settings.vae_tiling, limit)
        if key not in self._pipelines:
            from engine.core.devices import pick_device
            from engine.pipelines.page import load_pipeline

            run = self.inputs(settings)  # the working size, checked
            self._pipelines[key] = load_pipeline(
                self.model_paths(settings), pick_device(settings.device), low_vram=settings.low_vram,
                retriever=self.retriever(settings), preparer=self.preparer(settings), vae_tiling=settings.vae_tiling,
                max_vram=settings.max_vram, work_size=run.size, decode=settings.decode, input_style=settings.input_style,
            )
            _freeze_loaded_objects()
        return self._pipelines[key]

    def retrieve_page(
        self, chapter: Chapter, index: int, references: Sequence[ImageSource], *, choices: Choices, settings: RunSettings,
        style: str | None = None,
    ) -> PageRetrieval:
        """RAP for one page prepared with `style` (the page's own; the settings' when None; cached
        embeddings make repeats instant)."""
        from engine.core.errors import ColorFlowError

        source = chapter.sources[index]
        if source.ref in chapter.errors:
            raise ColorFlowError(chapter.errors[source.ref])
        from engine.pipelines.page import prepare_page

        page = chapter.load_page(index)
        prepared = prepare_page(self.preparer(settings, style), page, self.inputs(settings, style))
        return self.retriever(settings).retrieve(page, references, choices, prepared.work_size, prepared)

    def colorize(
        self,
        chapter: Chapter,
        references: Sequence[ImageSource],
        project: ChapterProject,
        *,
        settings: RunSettings,
        pages: set[str] | None,
        emit: EventSink = ignore,
        cancel: CancelToken | None = None,
        again: VariationRequest | None = None,
        pool=None,
        executor=None,
    ):
        """RAP -> ICP -> GSRP for the given pages (all when None); returns the ChapterReport. With
        `again`, each page gets a new variation beside its others (global settings untouched); with a
        `pool` (reference_pool.build_pool), pages are retrieved from it under the series' choices. With an
        `executor` (ray_executor.RayExecutor, entered), or `settings.ray` set (the session's own workers, kept
        across runs: ray_session), the pages are colored on Ray workers; this process prepares and writes them."""
        from engine.core.events import Progress
        from engine.pipelines.chapter import colorize_chapter
        from engine.pipelines.settings import pipeline_settings

        from engine.pipelines.families import FamilyPipelines
        from engine.pipelines.page import models_id_of

        run = pipeline_settings(settings)  # before any model loads: a bad choice costs nothing
        page_label = next(iter(pages)) if pages and len(pages) == 1 else None
        if executor is None and settings.ray is not None:
            from engine.pipelines.ray_pass import check_ray_settings

            check_ray_settings(run)  # before any worker starts
            executor = self.ray.executor(settings, run, emit, page_label)
        elif settings.ray is None:
            self.ray.close()  # Ray turned off in the settings: its workers stop

        def load(style):  # a model set on first use, kept for the next runs
            loaded = len(self._pipelines)
            if not self._pipelines:
                emit(Progress("loading models", 0, 1, page_label))
            pipeline = self.pipeline(settings, style)
            if len(self._pipelines) > loaded and pipeline.memory_note:  # what --max-vram chose, once per load
                from engine.core.events import Notice

                emit(Notice(pipeline.memory_note, page_label))
            return pipeline

        # One FamilyPipelines across runs: it knows which model set is on the GPU
        limit = (settings.max_vram, settings.size, settings.decode) if settings.max_vram is not None else None
        key = (settings.models, settings.device, settings.low_vram, settings.cache_dir, settings.vae_tiling, limit)
        if key not in self._families:
            retriever = self.retriever(settings)
            paths = self.model_paths(settings)
            self._families[key] = FamilyPipelines(load, lambda style: self.preparer(settings, style), retriever,
                                                  lambda style: models_id_of(paths, retriever, style))
        families = self._families[key]
        families.restart(load)  # this run's events; a set that failed to load is tried again
        return colorize_chapter(chapter, references, families, project, settings=run, emit=emit, cancel=cancel,
                                resume=True, only=pages, again=again, pool=pool, executor=executor)
