"""The optional line-art files of a model source (ColorFlow sketch/, shading/, LE/ and the PixArt-alpha base): which a style needs, which are missing, their size."""

from __future__ import annotations

from pathlib import Path

from engine.core.errors import ModelError, listed
from engine.io.storage import human_bytes
from engine.models.hub_cache import local_path, snapshot_folder
from engine.models.presets import LINE_ART_COMPONENTS, LINE_ART_TEXT_ENCODER, PresetFile, preset_files

ALL_STYLES = "all"  # both line-art styles
LINE_ART_STYLE_NAMES = ("sketch", "sketch-shading")  # engine.core.options.LINE_ART_STYLES, as plain strings
# The official pipeline's fixed prompt and negative prompt, and its T5 sequence length (reference/SKETCH.md):
# the prompt embeddings the T5 weights are needed for (engine/icp/text_embeddings.py caches them).
OFFICIAL_PROMPT, OFFICIAL_NEGATIVE, OFFICIAL_MAX_LENGTH = "manga", "", 120
DOWNLOAD_COMMAND = "colorflow models download --line-art"
T5_CACHED_DETAIL = "not needed: the prompt embeddings are cached (T5 is loaded only to compute them)"
T5_INDEX = "text_encoder/model.safetensors.index.json"
OPTIONAL_DETAIL = f"not downloaded (line-art styles only: `{DOWNLOAD_COMMAND}`)"


def line_art_files(style: str = ALL_STYLES, preset: str = "official") -> list[PresetFile]:
    """The line-art files of the preset a style needs (`all`: both styles), T5 weights included."""
    if style != ALL_STYLES and str(style) not in LINE_ART_STYLE_NAMES:
        raise ModelError(f"{style!r} is not a line-art style ({', '.join(LINE_ART_STYLE_NAMES)})")
    files = preset_files(preset, LINE_ART_COMPONENTS)
    return [f for f in files if style == ALL_STYLES or not f.styles or str(style) in f.styles]


def official_pixart_root(preset: str = "official") -> Path | None:
    """The snapshot folder of the preset's PixArt-alpha repo in the hub cache, None when nothing of it is there."""
    pixart = [f for f in preset_files(preset, LINE_ART_COMPONENTS) if f.root == "pixart"]
    return snapshot_folder(pixart[0].repo, revision=pixart[0].revision) if pixart else None


def embeddings_cached(pixart_root: Path | None, cache_dir: Path | None = None) -> bool:
    """Whether the official prompt's T5 embeddings for this PixArt base are cached (then its T5 weights
    are needed no more). False while the text-embedding cache (engine/icp/text_embeddings.py) is not
    installed or the base is absent."""
    if pixart_root is None or not (Path(pixart_root) / "text_encoder").is_dir():
        return False  # (the cache is keyed by the text encoder's files: none, no embeddings; no torch import)
    try:
        from engine.icp.text_embeddings import text_embedding_cached
    except ImportError:
        return False
    try:
        if text_embedding_cached(Path(pixart_root), OFFICIAL_PROMPT, OFFICIAL_NEGATIVE, cache_dir, OFFICIAL_MAX_LENGTH):
            return True
        import torch  # cached on a GPU in fp16 (the default above is the CPU's fp32)

        return bool(text_embedding_cached(Path(pixart_root), OFFICIAL_PROMPT, OFFICIAL_NEGATIVE, cache_dir,
                                          OFFICIAL_MAX_LENGTH, dtype=torch.float16))
    except (ModelError, TypeError):  # unreadable files, or a cache without the dtype argument: not cached
        return False


def _present_in_folder(root: Path | None, file: PresetFile) -> bool:
    """A preset file in a models DIR: there, or its weights converted to the other format."""
    if root is None:
        return False
    path = Path(root) / file.path
    alternatives = {".bin": ".safetensors", ".safetensors": ".bin", ".pth": ".safetensors"}
    return path.is_file() or (path.suffix in alternatives and path.with_suffix(alternatives[path.suffix]).is_file())


def _t5_in_folder(pixart_root: Path | None) -> bool:
    """A DIR's T5 weights as a sharded checkpoint (every shard its index names) or one file."""
    if pixart_root is None:
        return False
    folder = Path(pixart_root) / "text_encoder"
    index = Path(pixart_root) / T5_INDEX
    if index.is_file():
        import json

        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError):
            return False
        return all((folder / shard).is_file() for shard in shards)
    return (folder / "model.safetensors").is_file()


def line_art_missing(source, style: str = ALL_STYLES, cache_dir: Path | None = None) -> tuple[list[PresetFile], int]:
    """(the line-art files `style` needs that `source` lacks, their download size in bytes).

    `source`: "official" (the hub cache) or a resolved ModelPaths (a models DIR, tiny): its
    DIR/colorflow/ and DIR/pixart/ against the preset's file list. The T5 weights count only while
    the official prompt's embeddings are not cached for that PixArt base (`cache_dir`: the cache
    folder of the run, None: the user's)."""
    files = line_art_files(style)
    if isinstance(source, str):
        pixart_root = official_pixart_root(source)
        t5_files = {f for f in files if f.component == LINE_ART_TEXT_ENCODER}
        present = lambda f: local_path(f) is not None  # noqa: E731
    else:  # a DIR's T5 may be sharded otherwise: its index and the shards it names, or one file
        pixart_root = source.pixart
        roots = {"colorflow": source.colorflow, "pixart": source.pixart}
        t5_files = {f for f in files if f.component == LINE_ART_TEXT_ENCODER or f.path == T5_INDEX}
        t5_there = _t5_in_folder(pixart_root)

        def present(f: PresetFile) -> bool:
            return (t5_there or _present_in_folder(pixart_root, f)) if f in t5_files else \
                _present_in_folder(roots.get(f.root), f)
    skip_t5 = embeddings_cached(pixart_root, cache_dir)
    missing = [f for f in files if not (skip_t5 and f in t5_files) and not present(f)]
    return missing, sum(f.approx_bytes for f in missing)


def missing_line_art_message(source, style: str, missing: list[PresetFile], total: int) -> str:
    """One line: which line-art files are missing for `style`, their size and how to get them."""
    what = f"the {style} style needs {len(missing)} more model file(s) ({listed((f.path for f in missing), 2)})"
    if isinstance(source, str):
        return (f"{what}: {human_bytes(total)} to download once with `{DOWNLOAD_COMMAND} {style}` "
                f"(ColorFlow line-art networks and the PixArt-alpha base; only for line-art pages)")
    root = Path(source.colorflow).parent
    return (f"{what} in {root}: put them in its layout (pixart/, colorflow/sketch/, colorflow/shading/, "
            f"colorflow/LE/), e.g. copied from the hub cache after `{DOWNLOAD_COMMAND}` ({human_bytes(total)})")


def require_line_art(source, style: str, cache_dir: Path | None = None) -> None:
    """A ModelError naming the size and the command when `source` lacks files `style` needs;
    nothing for the gray and screen styles."""
    if str(style) not in LINE_ART_STYLE_NAMES:
        return
    missing, total = line_art_missing(source, str(style), cache_dir)
    if missing:
        raise ModelError(missing_line_art_message(source, str(style), missing, total))

