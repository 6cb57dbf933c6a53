"""FID: Inception-v3 pool3 features of two image sets and the Fréchet distance of their Gaussians."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from engine.core.errors import InputError, ModelError
from engine.evaluation.weights import evaluation_weights_dir

# The same file (same bytes) is published by pytorch-fid and by torch-fidelity under two names.
INCEPTION_FILENAMES = (
    "pt_inception-2015-12-05-6726825d.pth",
    "weights-inception-2015-12-05-6726825d.pth",
)
INCEPTION_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    "pt_inception-2015-12-05-6726825d.pth"
)
INCEPTION_SIZE = "91 MB"


def torch_hub_checkpoints_dir() -> Path:
    """Where torch.hub (so pytorch-fid, torch-fidelity, torchmetrics) caches downloaded weights:
    $TORCH_HOME/hub/checkpoints, TORCH_HOME defaulting to $XDG_CACHE_HOME/torch or ~/.cache/torch.
    Worked out like torch.hub.get_dir() does, without importing torch."""
    cache = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    home = os.environ.get("TORCH_HOME", os.path.join(cache, "torch"))
    return Path(home).expanduser() / "hub" / "checkpoints"


def inception_search_dirs() -> list[Path]:
    return [evaluation_weights_dir(), torch_hub_checkpoints_dir()]


def find_inception_weights(path: str | Path | None = None) -> Path:
    """The FID Inception weights file: `path` (a file, or a folder holding it) when given, else
    the first of the known file names in ColorFlow's evaluation folder or the torch.hub cache.

    Never downloads: a missing file is a ModelError saying where to get it and where to put it.
    """
    if path is not None:
        given = Path(path).expanduser()
        if given.is_file():
            return given
        if given.is_dir():
            for name in INCEPTION_FILENAMES:
                if (given / name).is_file():
                    return given / name
            raise ModelError(f"{given}: no {INCEPTION_FILENAMES[0]} in this folder. {_how_to_get()}")
        raise ModelError(f"{given}: FID Inception weights file does not exist. {_how_to_get()}")
    for folder in inception_search_dirs():
        for name in INCEPTION_FILENAMES:
            if (folder / name).is_file():
                return folder / name
    searched = " or ".join(str(d) for d in inception_search_dirs())
    raise ModelError(f"FID needs the Inception-v3 FID weights; none found in {searched}. {_how_to_get()}")


def _how_to_get() -> str:
    return (
        f"ColorFlow never downloads them by itself: on a machine with network, download {INCEPTION_URL} "
        f"({INCEPTION_SIZE}, the file pytorch-fid, torch-fidelity and torchmetrics use) and put it in "
        f"{evaluation_weights_dir()} (or {torch_hub_checkpoints_dir()}), or give its path (fid_weights / --fid-weights)"
    )


def load_inception(weights: str | Path, device: str = "cpu"):
    """The FID Inception-v3 with the weights of `weights` loaded strictly (tensors only, never
    arbitrary pickles); a wrong or damaged file is a ModelError naming the mismatched keys."""
    from engine.evaluation.inception import build_fid_inception
    from engine.io.checkpoints import load_strict
    from engine.io.weight_files import read_state_dict

    weights = Path(weights)
    state = read_state_dict(weights)
    network = build_fid_inception()
    for key, value in network.state_dict().items():
        # Checkpoints converted before batch norm counted its batches lack these counters,
        # which evaluation never reads.
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    load_strict(network, state, f"{weights} (expected the FID Inception weights {INCEPTION_FILENAMES[0]})")
    return network.to(device).eval()


class InceptionFeatures:
    """Images (H, W, 3) uint8 RGB of any size -> (N, 2048) float64 pool3 features.

    Each image is resized to 299x299 inside the network with TensorFlow-1 bilinear sampling
    and scaled (x - 128) / 128, as torch-fidelity and torchmetrics' default FID do.
    """

    def __init__(self, weights: str | Path, device: str = "cpu", batch_size: int = 8) -> None:
        self.network = load_inception(weights, device)
        self.device = device
        self.batch_size = max(1, batch_size)

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        from engine.evaluation.inception import FEATURE_DIM

        rows: list[np.ndarray] = []
        start = 0
        with torch.inference_mode():
            while start < len(images):
                # a batch holds consecutive images of one size (resizing happens in the network)
                stop = start + 1
                while (stop < len(images) and stop - start < self.batch_size
                       and images[stop].shape == images[start].shape):
                    stop += 1
                batch = torch.from_numpy(np.stack([_check_rgb(im) for im in images[start:stop]]))
                batch = batch.permute(0, 3, 1, 2).contiguous().to(self.device)
                rows.append(self.network(batch).cpu().numpy().astype(np.float64))
                start = stop
        return np.concatenate(rows) if rows else np.zeros((0, FEATURE_DIM))


def _check_rgb(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"FID expects 8-bit RGB images (H, W, 3), got {image.dtype} {image.shape}")
    return image


def gaussian_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (divided by N - 1, as np.cov and every FID tool) of (N, D) rows."""
    features = _rows(features)
    return features.mean(axis=0), np.cov(features, rowvar=False).reshape(features.shape[1], features.shape[1])


def _rows(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise InputError(f"FID needs at least 2 images in each set, got {features.shape[0] if features.ndim else 0}")
    return features


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||² + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^½) between N(mu1, S1) and N(mu2, S2).

    S1 S2 is similar to the symmetric S1^½ S2 S1^½, so Tr((S1 S2)^½) is the sum of the square
    roots of that matrix's eigenvalues: two symmetric eigen-decompositions, stable even when
    the covariances are singular (fewer images than features), where scipy's sqrtm needs
    complex fallbacks.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise InputError(f"FID statistics differ in shape: {mu1.shape}/{sigma1.shape} vs {mu2.shape}/{sigma2.shape}")
    values, vectors = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    middle = root @ sigma2 @ root
    trace_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum())
    diff = mu1 - mu2
    return max(float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt), 0.0)


def fid_from_features(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID between two sets of feature rows (each at least 2 rows).

    With fewer images than features (N < 2048: a chapter, a small benchmark) the covariances
    have rank < N, and Tr((S1 S2)^½) equals the sum of the singular values of
    A Bᵀ / √((N1-1)(N2-1)) for the centred rows A, B: an N1 x N2 problem instead of 2048 x 2048,
    exact where the D x D route accumulates rounding error.
    """
    a, b = _rows(features_a), _rows(features_b)
    if a.shape[1] != b.shape[1]:
        raise InputError(f"FID feature sets differ in width: {a.shape[1]} vs {b.shape[1]}")
    if min(len(a), len(b)) > a.shape[1]:
        return frechet_distance(*gaussian_statistics(a), *gaussian_statistics(b))
    centred_a, centred_b = a - a.mean(axis=0), b - b.mean(axis=0)
    scale_a, scale_b = len(a) - 1, len(b) - 1
    trace_sqrt = np.linalg.svd(centred_a @ centred_b.T, compute_uv=False).sum() / np.sqrt(scale_a * scale_b)
    diff = a.mean(axis=0) - b.mean(axis=0)
    value = diff @ diff + (centred_a**2).sum() / scale_a + (centred_b**2).sum() / scale_b - 2.0 * trace_sqrt
    return max(float(value), 0.0)
