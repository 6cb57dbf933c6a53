"""Model sources (official hub snapshot, tiny random models, a directory) in one layout.

Layout: DIR/sd15/ (diffusers SD1.5) and DIR/colorflow/ (the ColorFlow hub repo files).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError
from .paths import cache_dir

IMAGE_ENCODER_SUBDIR = "image_encoder"
GRAYSD_SUBDIR = "GraySD"
TINY_MARKER = ".complete"
TINY_VERSION = 4


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


def fingerprint_models(paths: ModelPaths) -> str:
    """A cheap id of the model files: both roots, then each file's relative path, size and
    mtime (ns). Changes when a weight or config file is replaced, retrained in place or touched,
    or when a root points elsewhere; reads no file, so GBs of weights cost only a stat each.

    Every non-hidden file counts (weights, configs, tokenizer files): a spurious change only
    costs a recompute, a missed one a stale page. Hidden entries (e.g. the ".cache" download
    metadata of a local hub folder) are skipped. stat follows the hub cache's symlinks to its blobs.
    """
    digest = hashlib.sha256()
    for root in (paths.sd15, paths.colorflow):
        root = Path(root)
        digest.update(f"root\t{root}\n".encode())
        if not root.is_dir():
            continue
        files = []
        for path in root.rglob("*"):
            relative = path.relative_to(root)
            if any(part.startswith(".") for part in relative.parts) or not path.is_file():
                continue
            files.append((relative.as_posix(), path.stat()))
        for name, stat in sorted(files, key=lambda item: item[0]):
            digest.update(f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def make_tiny(root: Path, seed: int = 0) -> ModelPaths:
    """Write small random-weight models in the official file layout under `root`.

    Built with the real classes and saved like the official files (diffusers/transformers
    folders for SD1.5 and the image encoder, pickled tensor dicts for GraySD), so loading them
    exercises the same code as the official checkpoints. Their colors are meaningless.
    """
    import torch
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from .tiny import write_tiny_graysd, write_tiny_image_encoder, write_tiny_screenstyle, write_tiny_sd15

    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()
    root = Path(root)
    paths = ModelPaths(root / "sd15", root / "colorflow")
    torch.manual_seed(seed)
    write_tiny_sd15(paths.sd15)
    write_tiny_graysd(paths.sd15, paths.colorflow / GRAYSD_SUBDIR)
    write_tiny_image_encoder(paths.image_encoder)
    write_tiny_screenstyle(paths.colorflow)
    return paths


def tiny_models(root: Path | None = None) -> ModelPaths:
    """The tiny preset: generated once into the cache folder (atomically), reused afterwards."""
    root = Path(root) if root else cache_dir() / "tiny-models"
    marker = root / TINY_MARKER
    if not marker.exists() or marker.read_text().strip() != f"tiny models v{TINY_VERSION}":
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


def official_models() -> ModelPaths:
    """The official preset: snapshot folders in the Hugging Face cache (HF_HOME respected).

    Never touches the network: a missing file is a ModelError naming each file, its size
    and the command that fetches it (`colorflow models download`).
    """
    from .hub import official_roots

    return ModelPaths(*official_roots())


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
