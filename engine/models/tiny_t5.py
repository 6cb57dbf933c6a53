"""A tiny random T5 text encoder and sentencepiece tokenizer in the PixArt-alpha repo's layout.

What `write_t5` writes under PIXART_ROOT, as the hub's PixArt-alpha/PixArt-XL-2-1024-MS ships them:
text_encoder/ (config.json, model-0000N-of-00002.safetensors, model.safetensors.index.json: sharded
safetensors, never a pickle) and tokenizer/ (spiece.model, tokenizer_config.json,
special_tokens_map.json, added_tokens.json: no tokenizer.json). The model is T5 v1.1 (gated-GELU,
32 relative-position buckets, max distance 128, no biases) at a tiny width; the tokenizer is a
unigram sentencepiece model trained on the small built-in corpus below (deterministic) with T5's
special ids: <pad> 0, </s> 1, <unk> 2 and 100 sentinels <extra_id_N> after the vocabulary.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from engine.io.fileio import atomic_write_bytes, atomic_write_json

# T5-v1.1 fields of the tiny encoder (T5-XXL: d_model 4096, d_kv 64, d_ff 10240, 24 layers, 64 heads).
TINY_T5 = dict(d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2, relative_attention_num_buckets=32,
               relative_attention_max_distance=128, feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6)
EXTRA_IDS = 100  # T5's sentinel tokens, numbered down from the top of the vocabulary
SPIECE_VOCAB = 48  # pieces of the tiny sentencepiece model, special tokens included
SHARDS = 2  # the hub's text_encoder is split in two safetensors files
CORPUS = (
    "manga page with ink lines and screentone",
    "a colored manga page",
    "the quick brown fox jumps over the lazy dog",
    "line art sketch shading storyboard panel",
    "character hair eyes face hand sky cloud tree house street",
)


def _train_spiece() -> bytes:
    """The serialised sentencepiece model (same bytes on every run: one thread, no shuffling)."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_writer=model, vocab_size=SPIECE_VOCAB, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
        character_coverage=1.0, num_threads=1, shuffle_input_sentence=False, minloglevel=2)
    return model.getvalue()


def write_t5_tokenizer(folder: Path) -> int:
    """tokenizer/ as the hub's T5 tokenizer folder; returns its vocabulary size (sentinels included)."""
    folder = Path(folder)
    atomic_write_bytes(folder / "spiece.model", _train_spiece())
    sentinels = [f"<extra_id_{i}>" for i in range(EXTRA_IDS)]
    special = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>", "additional_special_tokens": sentinels}
    atomic_write_json(folder / "special_tokens_map.json", special)
    # <extra_id_0> is the last id, <extra_id_99> the first after the pieces (as in T5's files)
    atomic_write_json(folder / "added_tokens.json",
                      {token: SPIECE_VOCAB + EXTRA_IDS - 1 - i for i, token in enumerate(sentinels)})
    atomic_write_json(folder / "tokenizer_config.json", {
        **special, "extra_ids": EXTRA_IDS, "model_max_length": 10**30, "sp_model_kwargs": {},
        "tokenizer_class": "T5Tokenizer", "legacy": True})
    return SPIECE_VOCAB + EXTRA_IDS


def write_t5(pixart_root: Path, size: str = "tiny", seed: int = 0) -> None:
    """PIXART_ROOT/text_encoder/ and PIXART_ROOT/tokenizer/ with a random T5 encoder of `size`
    ("tiny" only: the official T5-XXL is 4.7 B parameters) seeded by `seed`."""
    if size != "tiny":
        raise ValueError(f"write_t5 builds only the tiny T5 (got size {size!r})")
    import torch
    from transformers import T5Config, T5EncoderModel
    from transformers.utils import logging as transformers_logging

    root = Path(pixart_root)
    vocab = write_t5_tokenizer(root / "tokenizer")
    config = T5Config(**TINY_T5, vocab_size=-(-vocab // 128) * 128, is_encoder_decoder=False, use_cache=False,
                      architectures=["T5EncoderModel"])  # the vocabulary padded to 128 as T5's 32128
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = T5EncoderModel(config).eval()
    folder = root / "text_encoder"
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        model.save_pretrained(folder, safe_serialization=True, max_shard_size=total * 3 // 5)
    finally:
        if bars:
            transformers_logging.enable_progress_bar()
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    if shards != [f"model-{i:05d}-of-{SHARDS:05d}.safetensors" for i in range(1, SHARDS + 1)]:
        raise RuntimeError(f"the tiny T5 was saved as {shards}, not {SHARDS} shards like the hub's")
