"""One page through preprocess -> RAP -> ICP -> GSRP on loaded models; the loaders that build them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from PIL import Image

from engine.core.events import CancelToken, EventSink, Preview, Progress, ignore
from engine.core.options import OutputSize, Procedure
from engine.io.chapter import ImageSource, PageImage
from engine.models.sources import ModelPaths
from engine.pipelines.settings import InputSettings, PipelineSettings
from engine.core.geometry import choose_work_size, restore_page
from engine.rap.curation import Choices
from engine.rap.retrieval import PageRetrieval, Retriever

if TYPE_CHECKING:
    from engine.gsrp.upscale import Upscaler
    from engine.icp.colorize import Colorizer
    from engine.preprocess.page import PagePreparer


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
    return preparer.prepare(page.image, page.sha256, size, inputs.style, inputs.fit, inputs.screen_seed)


def stop_if_cancelled(cancel: CancelToken, stage: str) -> None:
    """Between stages: a cancel that came during `stage` stops the page before anything is written."""
    from engine.icp.colorize import Interrupted

    if cancel.cancelled:
        raise Interrupted(f"cancelled after {stage}")


class ColorFlowPipeline:
    """The stages for one page (preprocess, RAP, ICP, GSRP) on loaded models; the chapter loop
    is in chapter.py."""

    def __init__(self, retriever: Retriever, colorizer: Colorizer, upscaler: Upscaler, *, models_id: str,
                 preparer: PagePreparer | None = None) -> None:
        from engine.preprocess.page import PagePreparer

        self.retriever, self.colorizer, self.upscaler = retriever, colorizer, upscaler
        self.preparer = preparer or PagePreparer()  # without ScreenStyle networks: "gray" only
        self.models_id = models_id
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
        """ICP then GSRP, then the output size (see PipelineSettings). Raises
        colorize.Interrupted when cancelled (within one denoising step, or at the next stage)."""
        import contextlib

        from engine.core.rng import official_seeding

        cancel = cancel or CancelToken()
        name = page.source.name

        def on_step(info) -> bool:
            emit(Progress("ICP", info.step, info.total, name))
            if info.preview is not None:
                emit(Preview(name, info.preview))
            return not cancel.cancelled

        # Official: one global RNG stream seeded like fix_random_seeds, drawn by ICP's
        # conditioning samples and then by the GSRP sample.
        official = settings.procedure == Procedure.OFFICIAL
        rng = official_seeding(settings.colorize.seed, self.upscaler.device) if official else contextlib.nullcontext()
        try:
            with rng:
                start = time.perf_counter()
                colored = self.colorizer(retrieval.canvas, retrieval.mask, retrieval.work_size, settings.colorize, on_step)
                self.timings["ICP"] += time.perf_counter() - start
                start = time.perf_counter()
                emit(Progress("GSRP", 0, 1, name))
                stop_if_cancelled(cancel, "ICP")  # a cancel during the last step or the decode
                frame = self.upscaler(colored, prepared.frame, settings.upscale)
            final = finish_page(frame, page.image, prepared.frame_fit, output_size=settings.output_size,
                                keep_ink=settings.keep_ink)
        finally:
            offload = self.colorizer.components.offload
            if offload is not None:
                offload.offload()  # the page is done: every model back to the CPU
        stop_if_cancelled(cancel, "GSRP")  # GSRP is one pass: a cancel during it drops its output
        emit(Progress("GSRP", 1, 1, name))
        self.timings["GSRP"] += time.perf_counter() - start
        return final

    def use_lowest_memory(self) -> list[str]:
        """After an out-of-memory error: tiled VAE, and model offload on an accelerator."""
        from engine.models.loading import use_lowest_memory

        return use_lowest_memory(self.colorizer.components)

    def release_retrieval(self) -> None:
        """Free the CLIP encoder's GPU memory before diffusion."""
        self.retriever.release_encoder()


def finish_page(frame: Image.Image, page: Image.Image, frame_fit, *, output_size: OutputSize,
                keep_ink: bool) -> Image.Image:
    """The GSRP frame to the output: "page" cuts the page out and restores its own size;
    "gsrp" cuts the page out at 1.5x the working size. With keep-ink, lightness comes from
    the original page (resized to the output when it differs)."""
    from engine.gsrp.upscale import keep_ink as apply_keep_ink

    if output_size == OutputSize.PAGE:
        final = restore_page(frame, frame_fit)
    else:
        final = frame.crop(frame_fit.content_box)
    if keep_ink:
        ink = page if page.size == final.size else page.resize(final.size, Image.BICUBIC)
        final = apply_keep_ink(final, ink)
    return final


def load_retriever(models: ModelPaths | str, device: str = "cpu", cache_dir: Path | None = None) -> Retriever:
    """The RAP retriever of a model source: its CLIP image encoder and the embedding cache
    (the per-user cache folder unless `cache_dir`)."""
    from engine.rap.embedding import ClipEmbedder, EmbeddingCache
    from engine.core.paths import embeddings_dir

    embedder = ClipEmbedder(model_paths(models).image_encoder, device=device)
    return Retriever(embedder, EmbeddingCache(Path(cache_dir) if cache_dir else embeddings_dir()))


def load_preparer(models: ModelPaths | str, device: str = "cpu", cache_dir: Path | None = None,
                  style: str = "screen") -> PagePreparer:
    """The preprocess stage: the ScreenStyle networks of a model source (for style "screen")
    and G's cache (the per-user cache folder unless `cache_dir`)."""
    from engine.core.paths import cache_dir as user_cache_dir
    from engine.preprocess.page import PagePreparer
    from engine.preprocess.screenstyle import load_screenstyle

    networks = load_screenstyle(model_paths(models).colorflow, device) if style == "screen" else None
    folder = (Path(cache_dir) if cache_dir else user_cache_dir()) / "screenstyle"
    return PagePreparer(networks, folder)


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
) -> ColorFlowPipeline:
    """Load every stage of a model source on `device` (reusing `retriever` and `preparer` when
    the caller already has them for the same models). A name or folder is resolved once, here."""
    from engine.icp.colorize import Colorizer
    from engine.models.loading import load_diffusion
    from engine.models import fingerprint_models
    from engine.gsrp.upscale import Upscaler

    paths = model_paths(models)
    retriever = retriever or load_retriever(paths, device, cache_dir)
    preparer = preparer or load_preparer(paths, device, cache_dir, input_style)
    components = load_diffusion(paths, device, low_vram=low_vram, vae_tiling=vae_tiling)
    colorizer = Colorizer(components)
    upscaler = Upscaler(components.vae_runner, components.fusion, components.device, components.dtype)
    # The files themselves (paths, sizes, mtimes; a models DIR's recorded sha256s too), so weights
    # replaced in place count as new models, even with their mtime put back.
    models_id = f"{fingerprint_models(paths)}|{retriever.embedder.encoder_id}"
    return ColorFlowPipeline(retriever, colorizer, upscaler, models_id=models_id, preparer=preparer)
