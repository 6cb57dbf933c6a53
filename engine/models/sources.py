"""Model sources: the common layout (DIR/sd15/ diffusers SD1.5, DIR/colorflow/ the ColorFlow hub
repo files), resolved by name — `official` (hub snapshot), `tiny` (generated random models) or a
folder — into typed paths once; a cheap fingerprint of the files."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from engine.core.errors import ModelError
from engine.core.events import EventSink, ignore
from engine.core.paths import cache_dir


IMAGE_ENCODER_SUBDIR = "image_encoder"
GRAYSD_SUBDIR = "GraySD"


@dataclass(frozen=True)
class ModelPaths:
    """Roots of one model source in the common layout."""

    sd15: Path
    colorflow: Path
    # A models DIR: its files' recorded sha256s (folder_record.FolderCheck.content_id); "" for
    # the presets (official files are pinned, tiny ones generated here).
    content_id: str = ""

    @property
    def image_encoder(self) -> Path:
        return self.colorflow / IMAGE_ENCODER_SUBDIR

    @property
    def graysd(self) -> Path:
        return self.colorflow / GRAYSD_SUBDIR


def fingerprint_models(paths: ModelPaths) -> str:
    """A cheap id of the model files: both roots, then each file's relative path, size and
    mtime (ns), and for a models DIR the content id of its record. Changes when a weight or config file is replaced, retrained in place or touched,
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
    if paths.content_id:  # a byte changed with the mtime put back still changes the id
        digest.update(f"content\t{paths.content_id}\n".encode())
    return digest.hexdigest()[:20]


def official_models(emit: EventSink = ignore) -> ModelPaths:
    """The official preset: snapshot folders in the Hugging Face cache (HF_HOME respected).

    Never touches the network: a missing file is a ModelError naming each file, its size
    and the command that fetches it (`colorflow models download`).
    """
    from engine.models.pins import official_roots

    return ModelPaths(*official_roots(emit))


TINY_MARKER = ".complete"
TINY_VERSION = 4
# Written by make_tiny into every tiny models folder, so any front end can say so.
RANDOM_WEIGHTS_NOTE = "TINY-RANDOM-WEIGHTS.txt"


def make_tiny(root: Path, seed: int = 0) -> ModelPaths:
    """Write small random-weight models in the official file layout under `root`.

    Built with the real classes and saved like the official files (diffusers/transformers
    folders for SD1.5 and the image encoder, pickled tensor dicts for GraySD), so loading them
    exercises the same code as the official checkpoints. Their colors are meaningless.
    """
    import torch
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from engine.models.tiny import write_tiny_graysd, write_tiny_image_encoder, write_tiny_screenstyle, write_tiny_sd15

    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()
    root = Path(root)
    paths = ModelPaths(root / "sd15", root / "colorflow")
    torch.manual_seed(seed)
    write_tiny_sd15(paths.sd15)
    write_tiny_graysd(paths.sd15, paths.colorflow / GRAYSD_SUBDIR)
    write_tiny_image_encoder(paths.image_encoder)
    write_tiny_screenstyle(paths.colorflow)
    (root / RANDOM_WEIGHTS_NOTE).write_text(
        "Tiny models with random weights, built by `colorflow models make-tiny`: every code path runs, "
        "the colors are meaningless. Use --models official for real colors.\n"
    )
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


def resolve_models(spec: str, tiny_root: Path | None = None, emit: EventSink = ignore) -> ModelPaths:
    """`tiny`, `official` or a directory in the common layout, checked against its record
    (folder_record: made on first use; `emit`: Progress while files are hashed, for the official
    pins as for a folder's record)."""
    if spec == "tiny":
        return tiny_models(tiny_root)
    if spec == "official":
        return official_models(emit)
    from engine.models.folder_record import require_unchanged

    paths = models_folder(spec)
    root = paths.sd15.parent
    return replace(paths, content_id=require_unchanged(root, emit))


def models_folder(spec: str) -> ModelPaths:
    """The roots of a models DIR in the common layout (resolved), not yet checked against its record."""
    root = Path(spec).expanduser().resolve()
    if not root.is_dir():
        raise ModelError(f"{root}: model directory does not exist")
    paths = ModelPaths(root / "sd15", root / "colorflow")
    if not (paths.image_encoder / "config.json").is_file():
        raise ModelError(
            f"{root}: not a ColorFlow models directory (expected colorflow/image_encoder/config.json)"
        )
    return paths


def check_models(spec: str, emit: EventSink = ignore) -> ModelPaths | None:
    """Light presence check of a model source before anything heavy is imported: official files
    downloaded (and checked against their pins, with Progress events to `emit` while files are
    hashed), a folder in the layout and unchanged since its record (made on first use, also with
    Progress events); `tiny` is always available (built on first use). Returns the checked paths,
    so the run uses them without a second check; None for `tiny` (not built here)."""
    if spec != "tiny":
        return resolve_models(spec, emit=emit)
    return None


def is_tiny(spec: str) -> bool:
    """Whether a model source is the tiny random-weight models (their colors mean nothing)."""
    if spec == "tiny":
        return True
    try:
        return (Path(spec).expanduser() / RANDOM_WEIGHTS_NOTE).is_file()
    except (OSError, ValueError):
        return False
