"""One page through preprocess -> RAP -> ICP -> GSRP on loaded models; the loaders that build them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from PIL import Image

from engine.core.errors import InputError
from engine.core.events import CancelToken, EventSink, Preview, Progress, ignore
from engine.core.options import LINE_ART_STYLES, OutputSize, Procedure
from engine.io.chapter import ImageSource, PageImage
from engine.models.sources import ModelPaths
from engine.pipelines.settings import InputSettings, PipelineSettings
from engine.core.geometry import WorkSize, choose_work_size, restore_page
from engine.rap.curation import Choices
from engine.rap.retrieval import PageRetrieval, Retriever

if TYPE_CHECKING:
    import torch

    from engine.gsrp.upscale import Upscaler
    from engine.icp.colorize import Colorizer
    from engine.preprocess.page import PagePreparer, PreparedPage


def model_paths(models: ModelPaths | str) -> ModelPaths:
    """A model source as typed paths: given paths pass through, a name or folder is resolved
    (checked against its record) here, once, by whoever holds the string."""
    if isinstance(models, ModelPaths):
        return models
    from engine.models import sources

    return sources.resolve_models(models)


def prepare_page(preparer: PagePreparer, page: PageImage, inputs: InputSettings):
    """The page framed, G computed (or cached) and the query made (preprocess stage)."""
    size = choose_work_size(page.image.size, inputs.size)
    pad = None
    if inputs.style in LINE_ART_STYLES:
        from engine.preprocess.lines import line_pad_value

        pad = line_pad_value(inputs.procedure)
    return preparer.prepare(page.image, page.sha256, size, inputs.style, inputs.fit, inputs.screen_seed, pad_value=pad)


def stop_if_cancelled(cancel: CancelToken, stage: str) -> None:
    """Between stages: a cancel that came during `stage` stops the page before anything is written."""
    from engine.icp.colorize import Interrupted

    if cancel.cancelled:
        raise Interrupted(f"cancelled after {stage}")


@dataclass(frozen=True)
class ColorJob:
    """One page's inputs to ICP and GSRP (what `color` takes), for color_batch."""

    page: PageImage
    retrieval: PageRetrieval
    prepared: PreparedPage
    settings: PipelineSettings


class ColorFlowPipeline:
    """The stages for one page (preprocess, RAP, ICP, GSRP) on loaded models; the chapter loop
    is in chapter.py."""

    def __init__(self, retriever: Retriever, colorizer: Colorizer, upscaler: Upscaler, *, models_id: str,
                 preparer: PagePreparer | None = None) -> None:
        from engine.preprocess.page import PagePreparer

        self.retriever, self.colorizer, self.upscaler = retriever, colorizer, upscaler
        self.preparer = preparer or PagePreparer()  # without ScreenStyle networks: "gray" only
        self.models_id = models_id
        self.memory_note: str | None = None  # what --max-vram chose (load_pipeline)
        self.timings = {"ScreenStyle": 0.0, "RAP": 0.0, "ICP": 0.0, "GSRP": 0.0}

    def prepare(self, page: PageImage, inputs: InputSettings):
        start = time.perf_counter()
        try:
            return prepare_page(self.preparer, page, inputs)
        finally:
            self.timings["ScreenStyle"] += time.perf_counter() - start

    def retrieve(self, page: PageImage, references: Sequence[ImageSource], choices: Choices, prepared) -> PageRetrieval:
        start = time.perf_counter()
        try:
            return self.retriever.retrieve(page, references, choices, prepared.work_size, prepared)
        finally:
            self.timings["RAP"] += time.perf_counter() - start

    def color(
        self,
        page: PageImage,
        retrieval: PageRetrieval,
        prepared,
        settings: PipelineSettings,
        *,
        emit: EventSink = ignore,
        cancel: CancelToken | None = None,
    ) -> Image.Image:
        """ICP then GSRP, then the output size (see PipelineSettings): color_batch of this one page.
        Raises colorize.Interrupted when cancelled (within one denoising step, or at the next stage)."""
        return self.color_batch([ColorJob(page, retrieval, prepared, settings)], emit=emit, cancel=cancel)[0]

    def color_batch(self, jobs: Sequence[ColorJob], *, emit: EventSink = ignore,
                    cancel: CancelToken | None = None) -> list[Image.Image]:
        """ICP of the jobs' pages in one denoising call (Colorizer.colorize_batch: one working size,
        procedure "ours", sampler settings equal but the seed; one page: the one-page loop, either
        procedure), then GSRP and the output size page by page as for one page (GSRP's fusion
        BatchNorm uses per-call statistics, so it is never batched). Progress for every page.
        InputError before any model work for pages that cannot share a batch; colorize.Interrupted
        when cancelled (within one denoising step, or at the next stage): no page is returned."""
        import contextlib

        from engine.core.rng import official_seeding

        if not jobs:
            return []
        cancel = cancel or CancelToken()
        names = [job.page.source.name for job in jobs]
        sizes = {job.retrieval.work_size for job in jobs}
        if len(sizes) > 1:
            listed = ", ".join(f"{name} {job.retrieval.work_size}" for name, job in zip(names, jobs))
            raise InputError(f"the pages of a batch share one working size: {listed}")

        def on_step(info) -> bool:
            for index, name in enumerate(names):
                emit(Progress("ICP", info.step, info.total, name))
                preview = info.previews[index] if info.previews else info.preview
                if preview is not None:
                    emit(Preview(name, preview))
            return not cancel.cancelled

        # Official (one page only): one global RNG stream seeded like fix_random_seeds, drawn by
        # ICP's conditioning samples and then by the GSRP sample.
        first = jobs[0].settings
        official = first.procedure == Procedure.OFFICIAL and len(jobs) == 1
        rng = official_seeding(first.colorize.seed, self.upscaler.device) if official else contextlib.nullcontext()
        finals = []
        try:
            with rng:
                start = time.perf_counter()
                if len(jobs) == 1:
                    retrieval = jobs[0].retrieval
                    colored = [self.colorizer(retrieval.canvas, retrieval.mask, retrieval.work_size,
                                              first.colorize, on_step)]
                else:
                    colored = self.colorizer.colorize_batch(
                        [job.retrieval.canvas for job in jobs], [job.retrieval.mask for job in jobs],
                        jobs[0].retrieval.work_size, [job.settings.colorize for job in jobs], on_step)
                self.timings["ICP"] += time.perf_counter() - start
                for index, (job, name, image) in enumerate(zip(jobs, names, colored)):
                    start = time.perf_counter()
                    emit(Progress("GSRP", 0, 1, name))
                    # A cancel during the last step or the decode, or during the previous page's GSRP.
                    stop_if_cancelled(cancel, "GSRP" if index else "ICP")
                    frame = self.upscaler(image, job.prepared.frame, job.settings.upscale)
                    finals.append(finish_page(frame, job.page.image, job.prepared.frame_fit,
                                              output_size=job.settings.output_size, keep_ink=job.settings.keep_ink,
                                              line_art=job.prepared.style in LINE_ART_STYLES))
                    stop_if_cancelled(cancel, "GSRP")  # GSRP is one pass: a cancel during it drops its output
                    emit(Progress("GSRP", 1, 1, name))
                    self.timings["GSRP"] += time.perf_counter() - start
        finally:
            offload = self.colorizer.components.offload
            if offload is not None:
                offload.offload()  # the pages are done: every model back to the CPU
        return finals

    def use_lowest_memory(self) -> list[str]:
        """After an out-of-memory error: tiled VAE, and model offload on an accelerator."""
        from engine.models.loading import use_lowest_memory

        return use_lowest_memory(self.colorizer.components)

    def release_retrieval(self) -> None:
        """Free the CLIP encoder's GPU memory before diffusion."""
        self.retriever.release_encoder()


def finish_page(frame: Image.Image, page: Image.Image, frame_fit, *, output_size: OutputSize,
                keep_ink: bool, line_art: bool = False) -> Image.Image:
    """The GSRP frame to the output: "page" cuts the page out and restores its own size;
    "gsrp" cuts the page out at 1.5x the working size. With keep-ink, lightness comes from
    the original page (resized to the output when it differs); on a line-art page its ink is
    multiplied over the colors instead (gsrp.upscale.multiply_ink)."""
    from engine.gsrp.upscale import keep_ink as apply_keep_ink, multiply_ink

    if output_size == OutputSize.PAGE:
        final = restore_page(frame, frame_fit)
    else:
        final = frame.crop(frame_fit.content_box)
    if keep_ink:
        ink = page if page.size == final.size else page.resize(final.size, Image.BICUBIC)
        final = multiply_ink(final, ink) if line_art else apply_keep_ink(final, ink)
    return final


def models_id_of(paths: ModelPaths, retriever: Retriever, style: str = "screen") -> str:
    """The models part of the resume key of a page of input style `style`: the files its model set
    reads (paths, sizes, mtimes; a models DIR's recorded sha256s too: models.sources.fingerprint_models),
    so weights replaced in place count as new models, even with their mtime put back, while another
    set's files (the PixArt base for a gray page) never count; and the retrieval encoder."""
    from engine.models import fingerprint_models

    return f"{fingerprint_models(paths, style)}|{retriever.embedder.encoder_id}"


def load_retriever(models: ModelPaths | str, device: str = "cpu", cache_dir: Path | None = None) -> Retriever:
    """The RAP retriever of a model source: its CLIP image encoder and the embedding cache
    (the per-user cache folder unless `cache_dir`)."""
    from engine.rap.embedding import ClipEmbedder, EmbeddingCache
    from engine.core.paths import embeddings_dir

    embedder = ClipEmbedder(model_paths(models).image_encoder, device=device)
    return Retriever(embedder, EmbeddingCache(Path(cache_dir) if cache_dir else embeddings_dir()))


def load_preparer(models: ModelPaths | str, device: str = "cpu", cache_dir: Path | None = None,
                  style: str = "screen") -> PagePreparer:
    """The preprocess stage: the ScreenStyle networks of a model source (for style "screen"), or its
    line extractor (the line-art styles), and G's cache (the per-user cache folder unless `cache_dir`)."""
    from engine.core.paths import cache_dir as user_cache_dir
    from engine.preprocess.page import PagePreparer
    from engine.preprocess.screenstyle import load_screenstyle

    networks = load_screenstyle(model_paths(models).colorflow, device) if style == "screen" else None
    line_extractor = None
    if style in LINE_ART_STYLES:
        from engine.preprocess.lines import load_line_extractor

        line_extractor = load_line_extractor(model_paths(models).line_extractor, device)
    folder = (Path(cache_dir) if cache_dir else user_cache_dir()) / "screenstyle"
    return PagePreparer(networks, folder, line_extractor=line_extractor)


def load_pipeline(
    models: ModelPaths | str,
    device: str = "cpu",
    *,
    low_vram: bool = False,
    cache_dir: Path | None = None,
    retriever: Retriever | None = None,
    preparer: PagePreparer | None = None,
    vae_tiling: bool = False,
    input_style: str = "screen",
    dtype: torch.dtype | None = None,
    compile: bool = False,
    max_vram: float | None = None,
    work_size: WorkSize | None = None,
    decode: str = "canvas",
    emit: EventSink = ignore,
) -> ColorFlowPipeline:
    """Load every stage of a model source on `device` (reusing `retriever` and `preparer` when
    the caller already has them for the same models). A name or folder is resolved once, here.
    The line-art styles (LINE_ART_STYLES) get the PixArt family (models/pixart_loading.py: its
    files checked before anything loads; `emit` hears about the T5 prompt embeddings), the others SD1.5.
    `dtype`: the diffusion models' torch dtype (default: loading.default_dtype of the device);
    `compile`: torch.compile the guided UNet step and the guide (RunSettings.compile; the SD path only).
    `max_vram` (GiB, RunSettings.max_vram): offload and tiling chosen from the memory estimate at
    `work_size` (None: every official size) and `decode` before anything loads (pipelines/memory.py);
    the choice is the pipeline's `memory_note`."""
    from engine.icp.colorize import Colorizer
    from engine.models.loading import load_diffusion
    from engine.gsrp.upscale import Upscaler

    paths = model_paths(models)
    memory_note = None
    if max_vram is not None:
        from engine.pipelines.memory import choose_for_limit

        low_vram, vae_tiling, memory_note = choose_for_limit(max_vram, device, paths, dtype=dtype, low_vram=low_vram,
                                                             vae_tiling=vae_tiling, size=work_size, decode=decode,
                                                             input_style=input_style)
    line_art = input_style in LINE_ART_STYLES
    if line_art:
        from engine.core.paths import run_text_embeddings_dir
        from engine.models.pixart_loading import check_line_art_models

        text_cache = run_text_embeddings_dir(cache_dir)  # None: the user's cache
        check_line_art_models(paths, input_style, text_cache)  # before any model loads
    retriever = retriever or load_retriever(paths, device, cache_dir)
    preparer = preparer or load_preparer(paths, device, cache_dir, input_style)
    if line_art:
        from engine.icp.pixart_colorize import PixArtColorizer
        from engine.models.pixart_loading import load_pixart_diffusion

        components = load_pixart_diffusion(paths, input_style, device, dtype=dtype, low_vram=low_vram,
                                           vae_tiling=vae_tiling, cache_dir=text_cache, emit=emit)
        colorizer = PixArtColorizer(components)
    else:
        components = load_diffusion(paths, device, dtype=dtype, low_vram=low_vram, vae_tiling=vae_tiling,
                                    compile=compile)
        colorizer = Colorizer(components)
    upscaler = Upscaler(components.vae_runner, components.fusion, components.device, components.dtype)
    pipeline = ColorFlowPipeline(retriever, colorizer, upscaler, models_id=models_id_of(paths, retriever, input_style),
                                 preparer=preparer)
    pipeline.memory_note = memory_note
    return pipeline
