"""The PixArt prompt's T5 embeddings and masks: computed once, cached on disk, T5 never loaded again.

What the official PixArt pipeline's encode_prompt does for its fixed call (prompt "manga",
negative "", max_sequence_length 120): each text cleaned, tokenised with padding="max_length",
max_length=120, truncation and the special tokens (</s> closes it), T5 run with that attention
mask; CFG batch [negative, prompt]. Caption cleaning: the official clean_caption=True needs bs4 and
ftfy; without them (as here) the pipeline falls back to text.lower().strip(), and with them the
result for "manga" and "" is the same (reference/SKETCH.md), so lower().strip() is what we do for
every prompt (for free text the full cleaner could differ: a departure for prompts other than the
official one, which the app never uses).

The cache: COLORFLOW cache folder/text-embeddings/<key>.safetensors, written atomically, keyed by
T5's config and shard index and the tokenizer files (their bytes), the cleaned prompt and negative,
max_length and the dtype; each entry records the weight shards it was computed from (names, sizes,
modification times, first and last MiB) and is not used while other shards are on disk. Once the
entry exists the shards may be deleted (`colorflow models download` skips them): T5 is needed only
until the embeddings exist. A cache file is read only if
it is a regular file (never through a link) holding exactly the two tensors of the expected
dtypes and shapes, a 0/1 prefix mask and finite values; anything else is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.core.errors import ModelError
from engine.core.events import EventSink, Notice, ignore
from engine.core.paths import TEXT_EMBEDDINGS_FOLDER
from engine.icp import t5_encoder
from engine.icp.t5_encoder import encode_streamed, encode_whole, fits, read_t5_config, weights_bytes
from engine.io.weight_files import REPAIR_HINT, read_config, require_model_file

if TYPE_CHECKING:  # torch loads only when embeddings are computed or read (this module stays light)
    import torch

CACHE_FOLDER = TEXT_EMBEDDINGS_FOLDER
CACHE_FORMAT = "colorflow-text-embeddings"
CACHE_VERSION = 2  # bump when the text path (cleaning, tokenising, encoding) changes
DEFAULT_PROMPT = "manga"  # the official app's fixed prompt
MAX_LENGTH = 120  # the official max_sequence_length
TOKENIZER_JSON = ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")
_HEADER_SLACK = 1 << 16  # bytes a cache file may have beyond its tensors (the safetensors header)


@dataclass(frozen=True)
class TextEmbeddings:
    """T5 last hidden states and attention masks, rows [negative, prompt] (CFG order)."""

    embeds: torch.Tensor  # (2, L, D)
    mask: torch.Tensor  # (2, L) int64, 1 on tokens (</s> included), 0 on padding


def encoder_loads() -> int:
    """How many times T5 weights were loaded in this process (whole or streamed)."""
    return t5_encoder.loads()


def clean_caption(text: str) -> str:
    """The official pipeline's text preprocessing where bs4/ftfy are absent: lower-cased, stripped."""
    return text.lower().strip()


def _dtype(device: str | torch.device, dtype: torch.dtype | None) -> torch.dtype:
    """fp16 on CUDA and MPS (as the official app), fp32 on the CPU, unless given."""
    import torch

    if dtype is not None:
        return dtype
    return torch.float16 if torch.device(device).type in ("cuda", "mps") else torch.float32


def _folders(pixart_root: Path) -> tuple[Path, Path]:
    root = Path(pixart_root)
    return (require_model_file(root / "text_encoder", "pixart/text_encoder (T5)"),
            require_model_file(root / "tokenizer", "pixart/tokenizer (T5)"))


WEIGHTS_SUFFIX = ".safetensors"  # T5's weight shards: needed only until the embeddings exist


def _small_files_identity(folder: Path) -> list:
    """Name and sha256 of every file of `folder` but the weight shards (configs, the shard index,
    tokenizer files: kilobytes to a megabyte, hashed whole)."""
    stamps = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.endswith(WEIGHTS_SUFFIX)):
        stamps.append([path.name, hashlib.sha256(path.read_bytes()).hexdigest()])
    return stamps


def weights_identity(folder: Path) -> str | None:
    """The weight shards of `folder` (names, sizes, modification times, first and last MiB), or None
    when none is on disk (removed once the embeddings exist: the cache entries stay valid)."""
    digest = hashlib.sha256()
    shards = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHTS_SUFFIX))
    if not shards:
        return None
    for path in shards:
        info = path.stat()
        digest.update(f"{path.name}\t{info.st_size}\t{info.st_mtime_ns}\n".encode())
        with path.open("rb") as handle:
            digest.update(handle.read(1 << 20))
            if info.st_size > 1 << 20:
                handle.seek(info.st_size - (1 << 20))
                digest.update(handle.read())
    return digest.hexdigest()[:32]


def cache_key(pixart_root: Path, prompt: str, negative: str, max_length: int, dtype: torch.dtype) -> str:
    """The cache entry's name: T5's config and shard index, the tokenizer files, the cleaned texts,
    max_length and the dtype. The weight shards are not in it (they may be gone once the entry exists);
    the entry records them and is refused when shards on disk differ (_read_cache)."""
    text_encoder, tokenizer = _folders(pixart_root)
    try:
        identity = {"format": CACHE_FORMAT, "version": CACHE_VERSION,
                    "text_encoder": _small_files_identity(text_encoder), "tokenizer": _small_files_identity(tokenizer),
                    "prompt": clean_caption(prompt), "negative": clean_caption(negative),
                    "max_length": int(max_length), "dtype": str(dtype)}
    except OSError as exc:
        raise ModelError(f"{pixart_root}: the T5 files cannot be read ({exc}); {REPAIR_HINT}") from exc
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


def _cache_folder(cache_dir: Path | None) -> Path:
    from engine.core.paths import cache_dir as user_cache

    return Path(cache_dir) if cache_dir is not None else user_cache() / CACHE_FOLDER


def _width(pixart_root: Path) -> int:
    """T5's d_model from its config.json (read as JSON: a cache hit imports no transformers)."""
    path = Path(pixart_root) / "text_encoder" / "config.json"
    width = read_config(path, "the config file of the T5 text encoder").get("d_model")
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ModelError(f"{path}: d_model is {width!r}, not a positive whole number; {REPAIR_HINT}")
    return width


def _read_cache(path: Path, key: str, length: int, width: int, dtype: torch.dtype,
                weights: str | None) -> TextEmbeddings | None:
    """The cached embeddings if the file is exactly what we write, else None (never trusted); with
    `weights` (the shards on disk), only an entry computed from those shards."""
    import torch
    from safetensors.torch import load

    expected = 2 * length * width * torch.empty((), dtype=dtype).element_size() + 2 * length * 8
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))  # a link is refused here
    except OSError:
        return None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode) or info.st_size > expected + _HEADER_SLACK or path.is_symlink():
            return None
        with os.fdopen(descriptor, "rb", closefd=False) as handle:
            data = handle.read(expected + _HEADER_SLACK + 1)
    except OSError:
        return None
    finally:
        os.close(descriptor)
    try:
        header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
        tensors = load(data)
    except Exception:  # not safetensors, truncated, damaged: recomputed
        return None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict) or metadata.get("key") != key or set(tensors) != {"embeds", "mask"}:
        return None
    if weights is not None and metadata.get("weights") != weights:  # other T5 weights than the entry's
        return None
    embeds, mask = tensors["embeds"], tensors["mask"]
    if embeds.dtype != dtype or tuple(embeds.shape) != (2, length, width):
        return None
    if mask.dtype != torch.int64 or tuple(mask.shape) != (2, length):
        return None
    counts = mask.sum(dim=1)
    prefix = (torch.arange(length).unsqueeze(0) < counts.unsqueeze(1)).long()
    if not torch.equal(mask, prefix) or bool((counts < 1).any()) or not bool(torch.isfinite(embeds).all()):
        return None
    return TextEmbeddings(embeds, mask)


def _write_cache(path: Path, key: str, weights: str | None, text: TextEmbeddings, emit: EventSink) -> None:
    from safetensors.torch import save

    from engine.io.fileio import atomic_write_bytes

    data = save({"embeds": text.embeds.detach().cpu().contiguous(), "mask": text.mask.cpu().contiguous()},
                metadata={"format": CACHE_FORMAT, "version": str(CACHE_VERSION), "key": key, "weights": weights or ""})
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        emit(Notice(f"the prompt embeddings could not be cached in {path.parent} ({exc.strerror or exc}); "
                    "T5 will be loaded again next time"))


def load_t5_tokenizer(folder: Path, vocab_size: int):
    """The PixArt T5 tokenizer (spiece.model + JSON files, no tokenizer.json in the hub's folder),
    each JSON file read safely first; its ids must fit the encoder's vocabulary."""
    from transformers import T5Tokenizer

    from engine.io.checkpoints import reading_model

    folder = Path(folder)
    require_model_file(folder / "spiece.model", "the T5 tokenizer model spiece.model")
    require_model_file(folder / "tokenizer_config.json", "the T5 tokenizer file tokenizer_config.json")
    for name in TOKENIZER_JSON:
        if (folder / name).exists():
            read_config(folder / name, "a T5 tokenizer file")
    with reading_model(folder, "the T5 tokenizer"):
        tokenizer = T5Tokenizer.from_pretrained(folder)
    if len(tokenizer) > vocab_size:
        raise ModelError(f"{folder}: the tokenizer has {len(tokenizer)} tokens but the T5 text encoder only "
                         f"{vocab_size}; {REPAIR_HINT}")
    return tokenizer


def tokenize(tokenizer, prompt: str, negative: str, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids and attention masks (2, max_length), rows [negative, prompt], as the official pipeline."""
    batch = tokenizer([clean_caption(negative), clean_caption(prompt)], padding="max_length", max_length=max_length,
                      truncation=True, add_special_tokens=True, return_tensors="pt")
    return batch.input_ids, batch.attention_mask.long()


def text_embedding_cached(pixart_root: Path, prompt: str = DEFAULT_PROMPT, negative: str = "",
                          cache_dir: Path | None = None, max_length: int = MAX_LENGTH, *,
                          device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> bool:
    """Whether prompt_embeddings(...) with these arguments would load no T5 (a valid cache file)."""
    dtype = _dtype(device, dtype)
    key = cache_key(pixart_root, prompt, negative, max_length, dtype)
    path = _cache_folder(cache_dir) / f"{key}.safetensors"
    weights = weights_identity(Path(pixart_root) / "text_encoder")
    return _read_cache(path, key, max_length, _width(pixart_root), dtype, weights) is not None


def prompt_embeddings(pixart_root: Path, prompt: str = DEFAULT_PROMPT, negative: str = "", *,
                      cache_dir: Path | None = None, device: str | torch.device = "cpu", max_length: int = MAX_LENGTH,
                      emit: EventSink = ignore, dtype: torch.dtype | None = None,
                      streamed: bool | None = None) -> TextEmbeddings:
    """The embeddings and masks of [negative, prompt] in `dtype` (fp16 on CUDA/MPS, fp32 on the CPU)
    on `device`: from the cache when there; else T5 is loaded once (whole on `device` when it fits,
    else streamed block by block on the CPU in fp32; `streamed` forces either), the result stored
    and T5 freed."""
    root = Path(pixart_root)
    dtype = _dtype(device, dtype)
    folder = root / "text_encoder"
    key = cache_key(root, prompt, negative, max_length, dtype)
    width = _width(root)
    path = _cache_folder(cache_dir) / f"{key}.safetensors"
    weights = weights_identity(folder)
    cached = _read_cache(path, key, max_length, width, dtype, weights)
    if cached is not None:
        from engine.io.cachedir import touch

        touch(path)
        return TextEmbeddings(cached.embeds.to(device), cached.mask.to(device))
    config = read_t5_config(folder)
    tokenizer = load_t5_tokenizer(root / "tokenizer", config.vocab_size)
    ids, mask = tokenize(tokenizer, prompt, negative, max_length)
    if streamed is None and not fits(device, weights_bytes(folder, dtype)):
        streamed = True
        emit(Notice(f"the T5 text encoder ({folder}) does not fit in memory whole: the prompt is encoded with "
                    "its blocks loaded one by one on the CPU, once (the result is cached)"))
    if streamed:
        embeds = encode_streamed(folder, ids, mask, emit=emit)
    else:
        embeds = encode_whole(folder, ids, mask, device, dtype)
    text = TextEmbeddings(embeds.to("cpu", dtype).contiguous(), mask.cpu())
    _write_cache(path, key, weights_identity(folder), text, emit)
    return TextEmbeddings(text.embeds.to(device), text.mask.to(device))
