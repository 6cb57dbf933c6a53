"""Model-free stand-ins for the rolling-reference and series tests: an embedder whose similarities
are known by construction, pages built from ramps, and a pipeline whose "colorization" is the page."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from engine.core.events import ignore
from engine.core.options import RunSettings
from engine.pipelines.page import ColorFlowPipeline
from engine.pipelines.settings import pipeline_settings
from engine.preprocess.page import PagePreparer
from engine.rap.embedding import EmbeddingCache
from engine.rap.retrieval import Retriever

SIZE = 256  # pages and working size 256x256: no letterbox, every crop is the page's own pixels


class CorrelationEmbedder:
    """Unit vectors of a mean-free 8x8 gray thumbnail: their dot product is the thumbnails' Pearson
    correlation. Every crop of a ramp correlates ~1 with any crop of a ramp in the same direction
    and ~0 with a ramp at right angles, whatever the crop's position."""

    encoder_id = "thumbnail-8x8-correlation"
    images_embedded = 0

    def embed(self, images) -> np.ndarray:
        rows = np.stack([np.asarray(im.convert("L").resize((8, 8), Image.BOX), np.float32).ravel() for im in images])
        rows -= rows.mean(axis=1, keepdims=True)
        return rows / (np.linalg.norm(rows, axis=1, keepdims=True) + 1e-6)


def ramp_page(direction: str, detail_seed: int, detail: int = 6) -> Image.Image:
    """A gray page: a ramp ("h": dark left to light right, "v": dark top to light bottom) plus a small
    detail of its own (blocks of +-`detail` levels), so that two pages of one direction are alike but
    a page is most like itself."""
    ramp = np.linspace(20, 235, SIZE, dtype=np.float32)
    base = np.tile(ramp, (SIZE, 1)) if direction == "h" else np.tile(ramp[:, None], (1, SIZE))
    blocks = np.random.default_rng(detail_seed).integers(-detail, detail + 1, (8, 8)).astype(np.float32)
    texture = np.kron(blocks, np.ones((SIZE // 8, SIZE // 8), np.float32))
    return Image.fromarray(np.clip(base + texture, 0, 255).astype(np.uint8), "L")


def noise_image(seed: int) -> Image.Image:
    """A colored reference like no page: random blocks (correlates ~0 with the ramps)."""
    blocks = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), np.uint8)
    return Image.fromarray(blocks).resize((SIZE, SIZE), Image.NEAREST)


class PagesAsColored(ColorFlowPipeline):
    """The real preparation (gray) and retrieval (the correlation embedder); ICP + GSRP replaced by
    the page itself as RGB, so a colored page looks to retrieval like its gray page."""

    def __init__(self, cache: Path) -> None:
        super().__init__(Retriever(CorrelationEmbedder(), EmbeddingCache(cache / "embeddings")), None, None,
                         models_id="fake", preparer=PagePreparer(None, cache / "g"))
        self.colored: list[str] = []

    def color(self, page, retrieval, prepared, settings, *, emit=ignore, cancel=None) -> Image.Image:
        self.colored.append(page.source.name)
        return page.image.convert("RGB")


def run_settings():
    return pipeline_settings(RunSettings(models="tiny", steps=1, size=f"{SIZE}x{SIZE}", seed=7, input_style="gray"))
