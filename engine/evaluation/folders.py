"""evaluate_folders: pair predictions with ground truth by name and compute the chosen metrics."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

import numpy as np
from natsort import natsorted, ns
from PIL import Image

from engine.core.errors import InputError
from engine.evaluation.metrics import ALL_METRICS, METRICS, parse_metrics
from engine.evaluation.report import EvaluationReport, ImageResult

_EXIF_ORIENTATION = 0x0112
_TRANSPOSED = {5, 6, 7, 8}  # EXIF orientations that swap width and height


@dataclass(frozen=True)
class MetricModels:
    """Where the networks behind CLIP-IS, FID and AS come from (see each metric's module)."""

    clip_models: str = "official"  # model source (official|tiny|DIR) whose image_encoder/ gives CLIP-IS
    fid_weights: str | Path | None = None  # file or folder; default: evaluation folder, torch.hub cache
    aesthetic_weights: str | Path | None = None  # head file; default: evaluation folder
    aesthetic_clip: str | Path | None = None  # CLIP ViT-L/14 folder; default: HF cache
    device: str = "cpu"  # auto|cuda|mps|cpu
    batch_size: int = 8


@dataclass
class Pairing:
    """Files matched by name, in natural order, and the names found on one side only."""

    pairs: list[tuple[str, Path, Path]] = field(default_factory=list)  # (name, pred, gt)
    missing_predictions: list[str] = field(default_factory=list)
    missing_ground_truth: list[str] = field(default_factory=list)


def _images_by_name(folder: Path, role: str) -> dict[str, Path]:
    from engine.io.chapter import list_folder

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"{folder}: {role} folder does not exist")
    found: dict[str, Path] = {}
    for source in list_folder(folder):
        name = str(PurePosixPath(source.name).with_suffix(""))
        if name in found:
            raise InputError(f"{role} folder {folder}: {found[name].name} and {source.path.name} share the name {name!r}")
        found[name] = source.path
    return found


def pair_folders(pred_dir: str | Path, gt_dir: str | Path) -> Pairing:
    """Match images by relative path without extension (page 3.png predicts page 3.jpg), in natural order."""
    preds = _images_by_name(Path(pred_dir), "prediction")
    gts = _images_by_name(Path(gt_dir), "ground-truth")
    order = natsorted(set(preds) | set(gts), alg=ns.PATH | ns.IGNORECASE)
    pairing = Pairing()
    for name in order:
        if name in preds and name in gts:
            pairing.pairs.append((name, preds[name], gts[name]))
        elif name in gts:
            pairing.missing_predictions.append(name)
        else:
            pairing.missing_ground_truth.append(name)
    return pairing


def _header_size(path: Path) -> tuple[int, int]:
    """Width and height as decoded (EXIF rotation applied), read from the header only."""
    from engine.io.chapter import ImageSource, image_header

    with image_header(ImageSource(path, label=str(path))) as image:  # PageDecodeError names the path
        width, height = image.size
        try:
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
        except (OSError, ValueError, SyntaxError, EOFError, struct.error):  # PNG reads EXIF after its pixels
            orientation = 1  # a damaged file is refused, with its reason, when it is decoded
    return (height, width) if orientation in _TRANSPOSED else (width, height)


def check_sizes(pairing: Pairing) -> None:
    """Each prediction must have its ground truth's size: an InputError names the first pair that does not."""
    for name, pred, gt in pairing.pairs:
        pred_size, gt_size = _header_size(pred), _header_size(gt)
        if pred_size != gt_size:
            raise InputError(
                f"{name}: prediction {pred} is {pred_size[0]}x{pred_size[1]} but ground truth {gt} is "
                f"{gt_size[0]}x{gt_size[1]}; metrics compare images of one size"
            )


def _load_rgb(path: Path) -> Image.Image:
    from engine.io.chapter import ImageSource, load_image

    return load_image(ImageSource(path, label=str(path)), "RGB").image


def evaluate_folders(
    pred_dir: str | Path,
    gt_dir: str | Path,
    metrics: str | Sequence[str] = ALL_METRICS,
    models: MetricModels = MetricModels(),
    method: str = "",
    input_style: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> EvaluationReport:
    """Compare each prediction with the ground truth of the same name.

    Everything that can be checked cheaply is checked before any network loads: metric names,
    folders, pairing, image sizes, weight files. Per-image values for CLIP-IS, PSNR, SSIM and
    AS (of the prediction); FID between the whole prediction set and the ground-truth set.
    `progress(done, total)` is called after each batch of pairs.
    """
    chosen = parse_metrics(metrics)
    pairing = pair_folders(pred_dir, gt_dir)
    if not pairing.pairs:
        raise InputError(f"no image in {pred_dir} has a ground truth of the same name in {gt_dir}")
    check_sizes(pairing)
    if "fid" in chosen and len(pairing.pairs) < 2:
        raise InputError("FID needs at least 2 image pairs")
    scorers = _load_scorers(chosen, models)

    results: list[ImageResult] = []
    pred_features: list[np.ndarray] = []
    gt_features: list[np.ndarray] = []
    total, batch = len(pairing.pairs), max(1, models.batch_size)
    for start in range(0, total, batch):
        chunk = pairing.pairs[start : start + batch]
        preds = [_load_rgb(pred) for _, pred, _ in chunk]
        gts = [_load_rgb(gt) for _, _, gt in chunk]
        pred_arrays = [np.asarray(im) for im in preds]
        gt_arrays = [np.asarray(im) for im in gts]
        rows = [ImageResult(name, str(pred), str(gt)) for name, pred, gt in chunk]
        for row, p, g in zip(rows, pred_arrays, gt_arrays):
            if p.shape != g.shape:  # headers agreed; decoded images must too
                raise InputError(f"{row.name}: prediction and ground truth differ in size ({p.shape} vs {g.shape})")
            if "psnr" in chosen:
                row.values["psnr"] = scorers["psnr"](p, g)
            if "ssim" in chosen:
                row.values["ssim"] = scorers["ssim"](p, g)
        if "clip-is" in chosen:
            for row, value in zip(rows, scorers["clip-is"](preds, gts)):
                row.values["clip-is"] = float(value)
        if "as" in chosen:
            for row, value in zip(rows, scorers["as"](preds)):
                row.values["as"] = float(value)
        if "fid" in chosen:
            pred_features.append(scorers["fid"](pred_arrays))
            gt_features.append(scorers["fid"](gt_arrays))
        results.extend(rows)
        if progress is not None:
            progress(len(results), total)

    summary: dict[str, float] = {}
    for key in chosen:
        if METRICS[key].per_image:
            summary[key] = float(np.mean([r.values[key] for r in results]))
    if "fid" in chosen:
        from engine.evaluation.fid import fid_from_features

        summary["fid"] = fid_from_features(np.concatenate(pred_features), np.concatenate(gt_features))
    return EvaluationReport(
        metrics=chosen,
        images=results,
        summary={key: summary[key] for key in ALL_METRICS if key in summary},
        method=method,
        input_style=input_style,
        pred_dir=str(pred_dir),
        gt_dir=str(gt_dir),
        missing_predictions=pairing.missing_predictions,
        missing_ground_truth=pairing.missing_ground_truth,
    )


def _load_scorers(chosen: Sequence[str], models: MetricModels) -> dict[str, Callable]:
    """Find every weight file first (a missing one fails before anything loads), then load."""
    from engine.evaluation import metrics as pixel

    scorers: dict[str, Callable] = {"psnr": pixel.psnr, "ssim": pixel.ssim}
    if not set(chosen) & {"fid", "as", "clip-is"}:
        return scorers
    fid_weights = head_weights = clip_dir = clip_models = None
    if "fid" in chosen:
        from engine.evaluation.fid import find_inception_weights

        fid_weights = find_inception_weights(models.fid_weights)
    if "as" in chosen:
        from engine.evaluation.aesthetic import find_aesthetic_clip, find_head_weights

        head_weights = find_head_weights(models.aesthetic_weights)
        clip_dir = find_aesthetic_clip(models.aesthetic_clip)
    if "clip-is" in chosen:
        from engine.models.sources import check_models

        check_models(models.clip_models)
        clip_models = models.clip_models
    from engine.core.devices import pick_device

    device = pick_device(models.device)
    if clip_models is not None:
        scorers["clip-is"] = pixel.ClipImageSimilarity(clip_models, device=device)
    if fid_weights is not None:
        from engine.evaluation.fid import InceptionFeatures

        scorers["fid"] = InceptionFeatures(fid_weights, device=device, batch_size=models.batch_size)
    if head_weights is not None:
        from engine.evaluation.aesthetic import AestheticScorer

        scorers["as"] = AestheticScorer(head_weights, clip_dir, device=device)
    return scorers
