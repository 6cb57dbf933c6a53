"""Per-image metrics: PSNR and SSIM (scikit-image) and CLIP image similarity; the metric names."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image

from engine.core.errors import InputError


@dataclass(frozen=True)
class Metric:
    """One column of the paper's Table 1."""

    key: str  # name used in --metrics and in JSON
    label: str  # column title
    higher_is_better: bool
    decimals: int  # as printed in the paper
    per_image: bool  # FID is a property of a set of images, the others of one image

    @property
    def title(self) -> str:
        return f"{self.label}{'↑' if self.higher_is_better else '↓'}"


# In the order of the paper's tables.
METRICS = {
    m.key: m
    for m in (
        Metric("clip-is", "CLIP-IS", True, 4, True),
        Metric("fid", "FID", False, 2, False),
        Metric("psnr", "PSNR", True, 2, True),
        Metric("ssim", "SSIM", True, 4, True),
        Metric("as", "AS", True, 3, True),
    )
}
ALL_METRICS = tuple(METRICS)


def parse_metrics(spec: str | Sequence[str]) -> tuple[str, ...]:
    """"psnr,ssim" or ["psnr", "ssim"] -> the chosen keys in table order; InputError for an unknown name."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [name.strip().lower() for name in names if name.strip()]
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise InputError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(ALL_METRICS)}")
    if not names:
        raise InputError(f"no metric chosen; choose from {', '.join(ALL_METRICS)}")
    return tuple(key for key in ALL_METRICS if key in names)


def as_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 from a PIL image (converted to RGB) or an array that already is one."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise InputError(f"expected an 8-bit RGB image (H, W, 3), got {array.dtype} {array.shape}")
    return array


def _pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = as_rgb_array(pred), as_rgb_array(gt)
    if pred.shape != gt.shape:
        raise InputError(f"prediction is {pred.shape[1]}x{pred.shape[0]} but ground truth is {gt.shape[1]}x{gt.shape[0]}")
    return pred, gt


def psnr(pred, gt) -> float:
    """Peak signal-to-noise ratio in dB of two 8-bit RGB images of one size.

    data_range = 255 (the 8-bit range, not the range found in the image); one MSE over all
    pixels and all three channels (skimage's peak_signal_noise_ratio on the whole array).
    Identical images give float('inf') (MSE 0): reports keep it, JSON writes it as "inf".
    """
    from skimage.metrics import peak_signal_noise_ratio

    pred, gt = _pair(pred, gt)
    if np.array_equal(pred, gt):
        return math.inf
    return float(peak_signal_noise_ratio(gt, pred, data_range=255))


def ssim(pred, gt) -> float:
    """Structural similarity of two 8-bit RGB images of one size: the mean over R, G and B of
    each channel's SSIM (skimage's structural_similarity with channel_axis=-1).

    data_range = 255, so C1 = (0.01·255)² and C2 = (0.03·255)²; skimage's defaults otherwise:
    a uniform 7x7 window, sample covariances, the mean over windows not touching the border.
    """
    from skimage.metrics import structural_similarity

    pred, gt = _pair(pred, gt)
    return float(structural_similarity(gt, pred, data_range=255, channel_axis=-1))


class ClipImageSimilarity:
    """CLIP-IS: cosine similarity of the CLIP image embeddings of prediction and ground truth.

    Uses our retrieval encoder (the `image_encoder/` of a model source, the same ClipEmbedder
    and preprocessing as RAP), so scores are comparable between our runs; the paper does not
    name the CLIP it used.
    """

    def __init__(self, models: str = "official", device: str = "cpu", embedder=None) -> None:
        if embedder is None:
            from engine.rap.embedding import ClipEmbedder
            from engine.models.sources import resolve_models

            embedder = ClipEmbedder(resolve_models(models).image_encoder, device=device)
        self.embedder = embedder

    def __call__(self, preds: Sequence[Image.Image], gts: Sequence[Image.Image]) -> np.ndarray:
        """(N,) similarities in [-1, 1] for N pairs."""
        if len(preds) != len(gts):
            raise InputError(f"{len(preds)} predictions but {len(gts)} ground-truth images")
        if not preds:
            return np.zeros(0)
        vectors = self.embedder.embed(list(preds) + list(gts)).astype(np.float64)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.sum(vectors[: len(preds)] * vectors[len(preds):], axis=1)
