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
    # A models DIR: per input style, the recorded sha256s of the files that style's models read
    # ((style, folder_record.FolderCheck.content_id_of(...)) pairs); () for the presets (official
    # files are pinned, tiny ones generated here).
    content_ids: tuple[tuple[str, str], ...] = ()
    # The PixArt-alpha base (line-art styles only): DIR/pixart/, or the hub snapshot for `official`;
    # None where the source has none.
    pixart: Path | None = None

    @property
    def content_id(self) -> str:
        """"" for a preset; for a models DIR every style's content id, in one string."""
        return ";".join(f"{style}={content}" for style, content in self.content_ids)

    def roots(self) -> dict[str, Path]:
        """The layout's roots by their folder name in a models DIR (pixart only where there is one)."""
        return {"sd15": Path(self.sd15), "colorflow": Path(self.colorflow),
                **({PIXART_SUBDIR: Path(self.pixart)} if self.pixart is not None else {})}

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


# The files that only one model set reads, by their path in the layout (DIR/...): SD1.5 with GraySD
# (and the ScreenStyle pass) for screen and gray pages, the PixArt-alpha base with a line-art folder and
# the line extractor for sketch and sketch-shading pages. Every other file of colorflow/ (the retrieval
# encoder, notes) counts for every style.
_SD_FILES = ("sd15/", "colorflow/GraySD/", "colorflow/ScreenStyle/")
STYLE_FILES = {"screen": _SD_FILES, "gray": _SD_FILES,
               **{style: (f"{PIXART_SUBDIR}/", f"colorflow/{sub}/", f"colorflow/{Path(LINE_EXTRACTOR_FILE).parent}/")
                  for style, sub in LINE_ART_SUBDIRS.items()}}
_SET_ONLY = tuple(sorted({prefix for prefixes in STYLE_FILES.values() for prefix in prefixes}))


T5_WEIGHTS = (f"{PIXART_SUBDIR}/text_encoder/", ".safetensors")  # folder and suffix of T5's weight shards


def style_reads(style: str, relative: str) -> bool:
    """Whether the models of input style `style` read the file at `relative` (its path in a models DIR)
    for coloring. T5's weight shards never count: they are read once, for the prompt embeddings, which
    are cached by T5's config, shard index and tokenizer (icp/text_embeddings.py, counted here), so
    deleting the shards afterwards leaves every page's resume key as it was."""
    if relative.startswith(T5_WEIGHTS[0]) and relative.endswith(T5_WEIGHTS[1]):
        return False
    own = STYLE_FILES[str(style)]
    return relative.startswith(own) or (relative.startswith("colorflow/") and not relative.startswith(_SET_ONLY))


def fingerprint_models(paths: ModelPaths, style: str = "screen") -> str:
    """A cheap id of the model files that pages of `style` are colored with (style_reads): the roots
    they read, then each file's relative path, size and mtime (ns), and for a models DIR the content
    id of those files in its record. Changes when one of them is replaced, retrained in place or
    touched, or when a root points elsewhere; reads no file, so GBs of weights cost only a stat each.
    Files of another model set never count: downloading or changing the PixArt base (line art)
    leaves the id of screen and gray pages as it was, and the SD1.5 files that of line-art pages.

    Every other non-hidden file counts (weights, configs, tokenizer files): a spurious change only
    costs a recompute, a missed one a stale page. Hidden entries (e.g. the ".cache" download
    metadata of a local hub folder) are skipped. stat follows the hub cache's symlinks to its blobs.
    """
    digest = hashlib.sha256()
    for name, root in paths.roots().items():
        if not any(prefix.startswith(f"{name}/") for prefix in (*STYLE_FILES[str(style)], "colorflow/")):
            continue  # a root this style never reads
        digest.update(f"root\t{root}\n".encode())
        if not root.is_dir():
            continue
        files = []
        for path in root.rglob("*"):
            relative = path.relative_to(root)
            if any(part.startswith(".") for part in relative.parts) or not path.is_file():
                continue
            if style_reads(style, f"{name}/{relative.as_posix()}"):
                files.append((relative.as_posix(), path.stat()))
        for file, stat in sorted(files, key=lambda item: item[0]):
            digest.update(f"{file}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    content = dict(paths.content_ids).get(str(style))
    if content:  # a byte changed with the mtime put back still changes the id
        digest.update(f"content\t{content}\n".encode())
    return digest.hexdigest()[:20]


def official_models(emit: EventSink = ignore) -> ModelPaths:
    """The official preset: snapshot folders in the Hugging Face cache (HF_HOME respected).

    Never touches the network: a missing file is a ModelError naming each file, its size
    and the command that fetches it (`colorflow models download`). The PixArt-alpha base (line-art
    styles only) is its snapshot folder when any of it is downloaded, else None.
    """
    from engine.models.line_art import official_pixart_root
    from engine.models.pins import official_roots

    return ModelPaths(*official_roots(emit), pixart=official_pixart_root())


TINY_MARKER = ".complete"
TINY_VERSION = 5  # 5: the PixArt family (DIR/pixart/, colorflow/sketch|shading/, LE/erika.pth)
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
                     "and GSRP network; ScreenStyle; not the line-art PixArt family), keys and shapes as the official "
                     "checkpoints, fp16 on disk, "
                     "filled with random values by `colorflow models make-random` (seed {seed}). For measuring "
                     "speed and memory only: the colors are meaningless. The tokenizer has the official file "
                     "names and vocabulary size (49408) but a generated vocabulary, not CLIP's.\n",
    "tiny": "Tiny models with random weights, built by `colorflow models make-tiny`: every code path runs "
            "(the line-art styles' PixArt family included), the colors are meaningless. Use --models official "
            "for real colors.\n",
}


def make_random(root: Path, size: str = "official", seed: int = 0, line_art: bool = False) -> ModelPaths:
    """Write random-weight models in the official file layout under `root`, at a size: "tiny"
    (small, seconds: tests and demos) or "official" (every network at its official size, fp16 on
    disk: speed and memory only), with the marker of that kind (random_weights_kind).

    Built with the real classes and saved like the official files (diffusers/transformers
    folders for SD1.5 and the image encoder, pickled tensor dicts for GraySD), so loading them
    exercises the same code as the official checkpoints. Their colors are meaningless.
    At official size the line-art (PixArt) family is written only with `line_art` (about 11 GB more:
    engine/models/official_pixart.py); the tiny size always writes it.
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
    tiny = spec.kind == "tiny"  # the PixArt family (line-art styles): always at the tiny size, else on request
    with_pixart = tiny or line_art
    paths = ModelPaths(root / "sd15", root / "colorflow", pixart=root / PIXART_SUBDIR if with_pixart else None)
    # First: a build cut short is never taken for real weights.
    for place in (root, paths.sd15, paths.colorflow, *([paths.pixart] if with_pixart else [])):
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
    if tiny:
        _write_tiny_line_art(paths)
    elif line_art:
        from engine.models.official_pixart import write_official_line_art

        write_official_line_art(paths, pool)
    return paths


def _write_tiny_line_art(paths: ModelPaths) -> None:
    """DIR/pixart/, colorflow/sketch/, colorflow/shading/ and colorflow/LE/erika.pth, tiny."""
    from engine.models.tiny_lines import write_line_extractor
    from engine.models.tiny_pixart import write_line_art_folder, write_pixart_base

    write_pixart_base(paths.pixart)
    for style in LINE_ART_SUBDIRS:
        write_line_art_folder(paths.line_art(style), paths.pixart)
    paths.line_extractor.parent.mkdir(parents=True, exist_ok=True)
    write_line_extractor(paths.line_extractor)


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
    return ModelPaths(root / "sd15", root / "colorflow", pixart=root / PIXART_SUBDIR)


def resolve_models(spec: str, tiny_root: Path | None = None, emit: EventSink = ignore) -> ModelPaths:
    """`tiny`, `official` or a directory in the common layout, checked against its record
    (folder_record: made on first use; `emit`: Progress while files are hashed, for the official
    pins as for a folder's record)."""
    if spec == "tiny":
        return tiny_models(tiny_root)
    if spec == "official":
        return official_models(emit)
    from functools import partial

    from engine.models.folder_record import require_unchanged

    paths = models_folder(spec)
    check = require_unchanged(paths.sd15.parent, emit)
    return replace(paths, content_ids=tuple((style, check.content_id_of(partial(style_reads, style)))
                                            for style in STYLE_FILES))


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
    pixart = root / PIXART_SUBDIR
    paths = ModelPaths(root / "sd15", root / "colorflow", pixart=pixart if pixart.is_dir() else None)
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
