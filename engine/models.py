"""Model sources (official hub snapshot, tiny random models, a directory) in one layout.

Layout: DIR/sd15/ (diffusers SD1.5) and DIR/colorflow/ (the ColorFlow hub repo files).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError
from .paths import cache_dir

OFFICIAL_COLORFLOW_REPO = "TencentARC/ColorFlow"
OFFICIAL_SD15_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"
IMAGE_ENCODER_SUBDIR = "image_encoder"
GRAYSD_SUBDIR = "GraySD"
TINY_MARKER = ".complete"
TINY_VERSION = 2


@dataclass(frozen=True)
class ModelPaths:
    """Roots of one model source in the common layout."""

    sd15: Path
    colorflow: Path

    @property
    def image_encoder(self) -> Path:
        return self.colorflow / IMAGE_ENCODER_SUBDIR

    @property
    def graysd(self) -> Path:
        return self.colorflow / GRAYSD_SUBDIR


def make_tiny(root: Path, seed: int = 0) -> ModelPaths:
    """Write small random-weight models in the official file layout under `root`.

    Built with the real classes and saved like the official files (diffusers/transformers
    folders for SD1.5 and the image encoder, pickled tensor dicts for GraySD), so loading them
    exercises the same code as the official checkpoints. Their colors are meaningless.
    """
    import torch
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from .tiny import write_tiny_graysd, write_tiny_image_encoder, write_tiny_sd15

    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()
    root = Path(root)
    paths = ModelPaths(root / "sd15", root / "colorflow")
    torch.manual_seed(seed)
    write_tiny_sd15(paths.sd15)
    write_tiny_graysd(paths.sd15, paths.colorflow / GRAYSD_SUBDIR)
    write_tiny_image_encoder(paths.image_encoder)
    return paths


def tiny_models(root: Path | None = None) -> ModelPaths:
    """The tiny preset: generated once into the cache folder (atomically), reused afterwards."""
    root = Path(root) if root else cache_dir() / "tiny-models"
    if not (root / TINY_MARKER).exists():
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=root.parent))
        try:
            make_tiny(staging)
            (staging / TINY_MARKER).write_text(f"tiny models v{TINY_VERSION}\n")
            if root.exists():  # an older or partial build
                shutil.rmtree(root)
            os.replace(staging, root)
        except OSError:
            if not (root / TINY_MARKER).exists():
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return ModelPaths(root / "sd15", root / "colorflow")


SD15_FILES = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "tokenizer/*",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
]
COLORFLOW_FILES = [
    "GraySD/config.json",
    "GraySD/diffusion_pytorch_model.*",
    "GraySD/unet_lora.*",
    "GraySD/MultiResNetModel.*",
    f"{IMAGE_ENCODER_SUBDIR}/config.json",
    f"{IMAGE_ENCODER_SUBDIR}/model.safetensors",
]


def official_models(offline: bool = True) -> ModelPaths:
    """The official preset: hub snapshots in the Hugging Face cache (HF_HOME respected).

    Only the files the GrayImage mode needs are fetched (allow-patterns), never the whole repo.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    roots = []
    for repo, patterns in ((OFFICIAL_SD15_REPO, SD15_FILES), (OFFICIAL_COLORFLOW_REPO, COLORFLOW_FILES)):
        try:
            roots.append(Path(snapshot_download(repo, allow_patterns=patterns, local_files_only=offline)))
        except LocalEntryNotFoundError as exc:
            raise ModelError(
                f"the official model files of {repo} are not in the Hugging Face cache; "
                f"fetch them once with `colorflow models download` (needs network)"
            ) from exc
    return ModelPaths(*roots)


def resolve_models(spec: str, tiny_root: Path | None = None) -> ModelPaths:
    """`tiny`, `official` or a directory in the common layout."""
    if spec == "tiny":
        return tiny_models(tiny_root)
    if spec == "official":
        return official_models()
    root = Path(spec).expanduser().resolve()
    if not root.is_dir():
        raise ModelError(f"{root}: model directory does not exist")
    paths = ModelPaths(root / "sd15", root / "colorflow")
    if not (paths.image_encoder / "config.json").is_file():
        raise ModelError(
            f"{root}: not a ColorFlow models directory (expected colorflow/image_encoder/config.json)"
        )
    return paths
