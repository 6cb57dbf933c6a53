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
PIXART_SUBDIR = "pixart"  # DIR/pixart/: PixArt-alpha/PixArt-XL-2-1024-MS in its diffusers layout (line art only)
# The ColorFlow hub folder of each line-art style's guide, transformer LoRA and GSRP network.
LINE_ART_SUBDIRS = {"sketch": "sketch", "sketch-shading": "shading"}
LINE_EXTRACTOR_FILE = "LE/erika.pth"  # the official line extractor, in the ColorFlow hub repo


@dataclass(frozen=True)
class ModelPaths:
    """Roots of one model source in the common layout."""

    sd15: Path
    colorflow: Path
    # A models DIR: its files' recorded sha256s (folder_record.FolderCheck.content_id); "" for
    # the presets (official files are pinned, tiny ones generated here).
    content_id: str = ""
    # The PixArt-alpha base (line-art styles only): DIR/pixart/, or the hub snapshot for `official`;
    # None where the source has none.
    pixart: Path | None = None

    @property
    def image_encoder(self) -> Path:
        return self.colorflow / IMAGE_ENCODER_SUBDIR

    @property
    def graysd(self) -> Path:
        return self.colorflow / GRAYSD_SUBDIR

    def line_art(self, style: str) -> Path:
        """The ColorFlow folder of a line-art style (colorflow/sketch/ or colorflow/shading/)."""
        return self.colorflow / LINE_ART_SUBDIRS[str(style)]

    @property
    def line_extractor(self) -> Path:
        return self.colorflow / LINE_EXTRACTOR_FILE


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
# The random-weights markers, written by make_random at the top of every models folder it writes and
# inside both roots (sd15/, colorflow/: a folder made from either still says so, and removing one is
# a change its folder record refuses), so every front end can say what the weights are.
RANDOM_WEIGHTS_NOTE = "TINY-RANDOM-WEIGHTS.txt"  # tiny models (make-tiny)
OFFICIAL_SIZE_MARKER = "RANDOM-WEIGHTS-TIMING-ONLY.txt"  # official-size random weights (make-random)
RANDOM_MARKERS = {"official-size": OFFICIAL_SIZE_MARKER, "tiny": RANDOM_WEIGHTS_NOTE}
RANDOM_NOTICES = {
    "official-size": "random weights: timing only; every network at its official size with random values, "
                     "the colors are meaningless (never the real weights)",
    "tiny": "random weights: tiny demo models, their colors and timings are meaningless",
}
_MARKER_TEXT = {
    "official-size": "random weights: timing only\n\nEvery file of the official layout at its official size "
                     "(SD1.5 UNet, VAE, text encoder and tokenizer; CLIP image encoder; GraySD guide, UNet LoRA "
                     "and GSRP network; ScreenStyle), keys and shapes as the official checkpoints, fp16 on disk, "
                     "filled with random values by `colorflow models make-random` (seed {seed}). For measuring "
                     "speed and memory only: the colors are meaningless. The tokenizer has the official file "
                     "names and vocabulary size (49408) but a generated vocabulary, not CLIP's.\n",
    "tiny": "Tiny models with random weights, built by `colorflow models make-tiny`: every code path runs, "
            "the colors are meaningless. Use --models official for real colors.\n",
}


def make_random(root: Path, size: str = "official", seed: int = 0) -> ModelPaths:
    """Write random-weight models in the official file layout under `root`, at a size: "tiny"
    (small, seconds: tests and demos) or "official" (every network at its official size, fp16 on
    disk: speed and memory only), with the marker of that kind (random_weights_kind).

    Built with the real classes and saved like the official files (diffusers/transformers
    folders for SD1.5 and the image encoder, pickled tensor dicts for GraySD), so loading them
    exercises the same code as the official checkpoints. Their colors are meaningless.
    """
    import torch
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from engine.models.tiny import RandomPool, random_size, write_graysd, write_image_encoder, write_screenstyle, write_sd15

    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()  # ModelMixin.to(dtype) warns about fp32-pinned modules even when none exist
    spec = random_size(size)
    root = Path(root)
    paths = ModelPaths(root / "sd15", root / "colorflow")
    for place in (root, paths.sd15, paths.colorflow):  # first: a build cut short is never taken for real weights
        place.mkdir(parents=True, exist_ok=True)
        for marker in RANDOM_MARKERS.values():  # a folder rebuilt at the other size says so
            (place / marker).unlink(missing_ok=True)
        (place / RANDOM_MARKERS[spec.kind]).write_text(_MARKER_TEXT[spec.kind].format(seed=seed))
    torch.manual_seed(seed)
    pool = RandomPool(seed, spec.dtype or "float32") if spec.empty_init else None
    unet, vae_config = write_sd15(paths.sd15, spec, pool)
    write_graysd(unet, vae_config, paths.graysd, spec, pool)
    del unet
    write_image_encoder(paths.image_encoder, spec, pool)
    write_screenstyle(paths.colorflow, spec)
    return paths


def make_tiny(root: Path, seed: int = 0) -> ModelPaths:
    """Small random-weight models in the official file layout (make_random at the tiny size)."""
    return make_random(root, "tiny", seed)


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


MODEL_SOURCE_NAMES = ("official", "tiny")  # the presets; any other model source is a folder


def models_folder(spec: str) -> ModelPaths:
    """The roots of a models DIR in the common layout (resolved), not yet checked against its record."""
    root = Path(spec).expanduser().resolve()
    if not root.is_dir():
        import difflib

        close = difflib.get_close_matches(spec, MODEL_SOURCE_NAMES, n=1) if Path(spec).name == spec else []
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ModelError(f"{root}: model directory does not exist; the models are 'official', 'tiny' or "
                         f"an existing models folder{hint}")
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


def random_weights_kind(models: str | Path | ModelPaths) -> str | None:
    """What random weights a model source holds, from its markers: "official-size" (make-random:
    timing and memory only), "tiny" (the tiny preset or make-tiny) or None (not random weights).
    `models`: a name ("tiny", "official"), a models DIR, or resolved ModelPaths. Every front end
    (CLI reports, bench output, the GUI banner) asks this one function."""
    if isinstance(models, ModelPaths):
        places = [models.sd15.parent, models.sd15, models.colorflow]
    elif str(models) == "tiny":
        return "tiny"
    elif str(models) == "official":
        return None
    else:
        try:
            root = Path(models).expanduser()
        except (TypeError, ValueError, RuntimeError):
            return None
        places = [root, root / "sd15", root / "colorflow"]
    for kind, marker in RANDOM_MARKERS.items():
        for place in places:
            try:
                if (place / marker).is_file():
                    return kind
            except (OSError, ValueError):
                continue
    return None


def random_weights_notice(kind: str) -> str:
    """One line for a random-weights kind: "random weights: timing only; ..." at official size."""
    return RANDOM_NOTICES[kind]


def is_tiny(spec: str) -> bool:
    """Whether a model source is the tiny random-weight models (their colors mean nothing)."""
    return random_weights_kind(spec) == "tiny"
