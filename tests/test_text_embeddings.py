"""T5 prompt embeddings of the line-art styles: computed once, cached safely, streamed block by block.

Expectations come from outside the code under test: sentencepiece's own token count and
reference/SKETCH.md ("manga" -> [ids..., </s>=1, pad 0...], "" -> [1, 0...]), transformers'
T5EncoderModel forward, and diffusers' PixArtAlphaPipeline.encode_prompt.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from engine.core.errors import ModelError
from engine.icp import text_embeddings as te
from engine.icp.text_embeddings import TextEmbeddings, encoder_loads, prompt_embeddings, text_embedding_cached
from engine.models.tiny_t5 import write_t5

L = 120  # the official max_sequence_length


@pytest.fixture(scope="module")
def pixart_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pixart")
    write_t5(root, "tiny")
    return root


@pytest.fixture
def pixart_copy(pixart_root, tmp_path) -> Path:
    """A private copy a test may change."""
    return Path(shutil.copytree(pixart_root, tmp_path / "pixart"))


def _cache_files(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.safetensors"))


def _library_reference(root: Path, prompt: str, negative: str):
    """T5 as transformers loads it, and diffusers' PixArt-alpha encode_prompt on the same parts."""
    from diffusers import PixArtAlphaPipeline
    from transformers import T5EncoderModel, T5Tokenizer

    tokenizer = T5Tokenizer.from_pretrained(root / "tokenizer")
    encoder = T5EncoderModel.from_pretrained(root / "text_encoder").eval()
    batch = tokenizer([negative, prompt], padding="max_length", max_length=L, truncation=True,
                      add_special_tokens=True, return_tensors="pt")
    with torch.no_grad():
        full = encoder(batch.input_ids, attention_mask=batch.attention_mask)[0]
        pipe = PixArtAlphaPipeline(tokenizer=tokenizer, text_encoder=encoder, vae=None, transformer=None, scheduler=None)
        embeds, mask, negative_embeds, negative_mask = pipe.encode_prompt(
            prompt, negative_prompt=negative, device=torch.device("cpu"), max_sequence_length=L, clean_caption=False)
    return full, batch.attention_mask, (negative_embeds[0], embeds[0]), (negative_mask[0], mask[0])


def test_tiny_t5_has_the_hub_layout_and_sketch_md_token_ids(pixart_root):
    from transformers import T5Tokenizer

    assert sorted(p.name for p in (pixart_root / "tokenizer").iterdir()) == [
        "added_tokens.json", "special_tokens_map.json", "spiece.model", "tokenizer_config.json"]
    index = json.loads((pixart_root / "text_encoder" / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == [
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert not list((pixart_root / "text_encoder").glob("*.bin"))
    config = json.loads((pixart_root / "text_encoder" / "config.json").read_text())
    assert (config["d_model"], config["num_layers"], config["num_heads"], config["relative_attention_num_buckets"]) \
        == (32, 2, 2, 32)
    tokenizer = T5Tokenizer.from_pretrained(pixart_root / "tokenizer")
    ids = tokenizer(["manga", ""], padding="max_length", max_length=L, truncation=True).input_ids
    count = ids[0].index(1)  # "manga" -> [pieces..., </s>=1, pad 0 ...]
    assert count >= 1 and ids[0][count + 1:] == [0] * (L - count - 1)
    assert ids[1] == [1] + [0] * (L - 1)  # "" -> [</s>, pad ...]


def test_tiny_t5_is_deterministic(tmp_path):
    write_t5(tmp_path / "a")
    write_t5(tmp_path / "b")
    for relative in ("tokenizer/spiece.model", "text_encoder/model-00001-of-00002.safetensors",
                     "text_encoder/model-00002-of-00002.safetensors"):
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes()


@pytest.mark.parametrize("streamed", [True, False])
def test_embeddings_equal_transformers_and_diffusers_encode_prompt(pixart_root, tmp_path, streamed):
    text = prompt_embeddings(pixart_root, "manga", "", cache_dir=tmp_path / "cache", streamed=streamed)
    full, mask, (negative_ref, prompt_ref), (negative_mask, prompt_mask) = _library_reference(pixart_root, "manga", "")
    assert isinstance(text, TextEmbeddings)
    assert text.embeds.shape == (2, L, 32) and text.embeds.dtype == torch.float32
    torch.testing.assert_close(text.embeds, full, atol=1e-6, rtol=0)
    torch.testing.assert_close(text.embeds[0], negative_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(text.embeds[1], prompt_ref, atol=1e-6, rtol=0)
    assert torch.equal(text.mask.long(), mask)
    assert torch.equal(text.mask[0].long(), negative_mask) and torch.equal(text.mask[1].long(), prompt_mask)


def test_prompt_is_lowercased_and_stripped_as_the_official_pipeline_without_bs4(pixart_root, tmp_path):
    plain = prompt_embeddings(pixart_root, "manga", "", cache_dir=tmp_path / "cache")
    shouted = prompt_embeddings(pixart_root, "  MANGA ", "", cache_dir=tmp_path / "cache")
    assert torch.equal(plain.embeds, shouted.embeds) and torch.equal(plain.mask, shouted.mask)


def test_mask_sums_are_the_token_counts_of_sketch_md(pixart_root, tmp_path):
    import sentencepiece

    pieces = sentencepiece.SentencePieceProcessor(model_file=str(pixart_root / "tokenizer" / "spiece.model"))
    text = prompt_embeddings(pixart_root, cache_dir=tmp_path / "cache")  # defaults: "manga", negative ""
    assert int(text.mask[1].sum()) == len(pieces.encode("manga")) + 1  # + </s>
    assert int(text.mask[0].sum()) == 1  # "" is </s> alone
    assert text.mask.shape == (2, L)


def test_the_streamed_encoder_holds_one_block_at_a_time(pixart_root):
    from transformers import T5Tokenizer

    tokenizer = T5Tokenizer.from_pretrained(pixart_root / "tokenizer")
    batch = tokenizer(["", "manga"], padding="max_length", max_length=L, truncation=True, return_tensors="pt")
    seen = []

    def on_block(index, model):
        real = {name for name, p in model.named_parameters() if not p.is_meta}
        seen.append((index, real))

    te.encode_streamed(pixart_root / "text_encoder", batch.input_ids, batch.attention_mask, on_block=on_block)
    assert [index for index, _ in seen] == [0, 1]
    for index, real in seen:
        assert real and all(name.startswith(f"encoder.block.{index}.") for name in real), real


def test_a_cache_hit_loads_no_text_encoder(pixart_root, tmp_path, monkeypatch):
    from transformers import T5EncoderModel

    cache = tmp_path / "cache"
    assert not text_embedding_cached(pixart_root, "manga", "", cache)
    before = encoder_loads()
    first = prompt_embeddings(pixart_root, "manga", "", cache_dir=cache)
    assert encoder_loads() == before + 1
    assert text_embedding_cached(pixart_root, "manga", "", cache)

    def refuse(*args, **kwargs):
        raise AssertionError("T5 loaded again")

    monkeypatch.setattr(T5EncoderModel, "from_pretrained", classmethod(refuse))
    monkeypatch.setattr(te, "encode_streamed", refuse)
    second = prompt_embeddings(pixart_root, "manga", "", cache_dir=cache)
    assert encoder_loads() == before + 1
    assert torch.equal(first.embeds, second.embeds) and torch.equal(first.mask, second.mask)


def test_the_default_cache_is_under_the_user_cache_folder(pixart_root, tmp_path):
    prompt_embeddings(pixart_root)
    assert len(_cache_files(Path(os.environ["COLORFLOW_CACHE_DIR"]) / "text-embeddings")) == 1
    assert text_embedding_cached(pixart_root, "manga", "", None)


def test_the_key_changes_with_the_prompt_and_with_a_text_encoder_file(pixart_copy, tmp_path):
    from safetensors.torch import load_file, save_file

    cache = tmp_path / "cache"
    original = prompt_embeddings(pixart_copy, "manga", "", cache_dir=cache)
    assert not text_embedding_cached(pixart_copy, "manga page", "", cache)
    assert not text_embedding_cached(pixart_copy, "manga", "blurry", cache)
    assert not text_embedding_cached(pixart_copy, "manga", "", cache, max_length=64)
    # one value of a shard changed, same size, modification time put back: still noticed
    shard = pixart_copy / "text_encoder" / "model-00002-of-00002.safetensors"
    stat = shard.stat()
    tensors = load_file(shard)
    name = next(k for k in tensors if k.startswith("encoder.block.1."))
    tensors[name] = tensors[name] + 1.0
    save_file(tensors, shard, metadata={"format": "pt"})
    assert shard.stat().st_size == stat.st_size
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert not text_embedding_cached(pixart_copy, "manga", "", cache)
    loads = encoder_loads()
    changed = prompt_embeddings(pixart_copy, "manga", "", cache_dir=cache)
    assert encoder_loads() == loads + 1
    assert not torch.allclose(changed.embeds, original.embeds)
    # a tokenizer file counts too
    config = pixart_copy / "tokenizer" / "tokenizer_config.json"
    config.write_text(config.read_text().replace("10000", "10001"))
    assert not text_embedding_cached(pixart_copy, "manga", "", cache)


def _hostile(kind: str, genuine: Path, outside: Path) -> bytes | None:
    """Bytes for the cache file (None: make it a symlink to a genuine copy outside the cache)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save as save_tensors

    good = load_file(genuine)
    with safe_open(genuine, framework="pt") as handle:
        metadata = handle.metadata()  # kept, so that each check below is what refuses the file

    def save(tensors, **changes):
        return save_tensors(tensors, metadata={**metadata, **changes})

    if kind == "not-safetensors":
        return b"\x00" * 64 + b"not a tensor file"
    if kind == "truncated":
        return genuine.read_bytes()[:-100]
    if kind == "wrong-shape":
        return save({"embeds": good["embeds"][:, :-1].contiguous(), "mask": good["mask"][:, :-1].contiguous()})
    if kind == "wrong-dtype":
        return save({"embeds": good["embeds"].double(), "mask": good["mask"]})
    if kind == "bad-mask":
        return save({"embeds": good["embeds"], "mask": good["mask"] * 2})
    if kind == "nan":
        embeds = good["embeds"].clone()
        embeds[1, 0, 0] = float("nan")
        return save({"embeds": embeds, "mask": good["mask"]})
    if kind == "another-key":
        return save(good, key="0" * 32)
    if kind == "extra-tensor":
        return save({**good, "payload": torch.zeros(4)})
    shutil.copy(genuine, outside)
    return None


@pytest.mark.parametrize("kind", ["not-safetensors", "truncated", "wrong-shape", "wrong-dtype", "bad-mask", "nan",
                                  "another-key", "extra-tensor", "symlink-out"])
def test_a_hostile_cache_file_is_recomputed_never_trusted(pixart_root, tmp_path, kind):
    cache = tmp_path / "cache"
    fresh = prompt_embeddings(pixart_root, cache_dir=cache)
    (path,) = _cache_files(cache)
    outside = tmp_path / "elsewhere.safetensors"
    data = _hostile(kind, path, outside)
    path.unlink()
    if data is None:
        path.symlink_to(outside)
    else:
        path.write_bytes(data)
    assert not text_embedding_cached(pixart_root, "manga", "", cache)
    loads = encoder_loads()
    again = prompt_embeddings(pixart_root, cache_dir=cache)
    assert encoder_loads() == loads + 1
    assert torch.equal(again.embeds, fresh.embeds) and torch.equal(again.mask, fresh.mask)
    assert path.is_file() and not path.is_symlink()  # rewritten in place of the bad file or the link
    assert text_embedding_cached(pixart_root, "manga", "", cache)
    if kind == "symlink-out":
        assert outside.is_file()  # what the link pointed to is left alone


def test_t5_weights_are_read_only_from_safetensors(pixart_copy, tmp_path):
    from safetensors.torch import load_file

    folder = pixart_copy / "text_encoder"
    state = {}
    for shard in folder.glob("*.safetensors"):
        state.update(load_file(shard))
        shard.unlink()
    (folder / "model.safetensors.index.json").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    loads = encoder_loads()
    for streamed in (False, True):
        with pytest.raises(ModelError, match="safetensors"):
            prompt_embeddings(pixart_copy, cache_dir=tmp_path / "cache", streamed=streamed)
    assert encoder_loads() == loads


@pytest.mark.parametrize("name, content, named", [
    ("tokenizer_config.json", b"{not json", "tokenizer_config.json"),
    ("added_tokens.json", b"[1, 2]", "added_tokens.json"),
    ("spiece.model", b"\x0a\xff\xff\xff\xff\x0f garbage", "tokenizer"),
    ("spiece.model", None, "spiece.model"),
])
def test_a_damaged_tokenizer_file_is_one_model_error(pixart_copy, tmp_path, name, content, named):
    path = pixart_copy / "tokenizer" / name
    if content is None:
        path.unlink()
    else:
        path.write_bytes(content)
    loads = encoder_loads()
    with pytest.raises(ModelError, match=named):
        prompt_embeddings(pixart_copy, cache_dir=tmp_path / "cache")
    assert encoder_loads() == loads


def test_t5_is_streamed_when_it_does_not_fit_in_memory(pixart_root, tmp_path, monkeypatch):
    import types

    import psutil
    from transformers import T5EncoderModel

    from engine.core.events import Notice
    from engine.icp import t5_encoder

    encoder = T5EncoderModel.from_pretrained(pixart_root / "text_encoder")
    need = sum(p.numel() for p in encoder.parameters()) * 4  # unique parameters, fp32
    assert t5_encoder.weights_bytes(pixart_root / "text_encoder", torch.float32) == need

    def refuse(*args, **kwargs):
        raise AssertionError("the wrong way of running T5")

    reference = prompt_embeddings(pixart_root, cache_dir=tmp_path / "reference")
    events = []
    monkeypatch.setattr(psutil, "virtual_memory", lambda: types.SimpleNamespace(available=need))
    monkeypatch.setattr(te, "encode_whole", refuse)
    small = prompt_embeddings(pixart_root, cache_dir=tmp_path / "small", emit=events.append)
    torch.testing.assert_close(small.embeds, reference.embeds, atol=1e-6, rtol=0)
    assert any(isinstance(e, Notice) and "one by one" in e.message for e in events)
    monkeypatch.undo()
    monkeypatch.setattr(psutil, "virtual_memory", lambda: types.SimpleNamespace(available=need * 2 + (1 << 31)))
    monkeypatch.setattr(te, "encode_streamed", refuse)
    prompt_embeddings(pixart_root, cache_dir=tmp_path / "large")


def test_an_index_naming_a_file_outside_the_folder_is_refused(pixart_copy, tmp_path):
    index_path = pixart_copy / "text_encoder" / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    name = next(iter(index["weight_map"]))
    index["weight_map"][name] = "../../elsewhere/model.safetensors"
    index_path.write_text(json.dumps(index))
    for streamed in (False, True):
        with pytest.raises(ModelError, match="not a safetensors file beside the index"):
            prompt_embeddings(pixart_copy, cache_dir=tmp_path / "cache", streamed=streamed)


def test_the_weight_shards_are_needed_only_until_the_embeddings_exist(pixart_copy, tmp_path, monkeypatch):
    """Issue 24: T5 only until the embeddings exist. With the shards deleted the cached entry is still
    used (no T5 load); shards that come back with other values are noticed and recomputed."""
    import shutil

    from safetensors.torch import load_file, save_file

    cache = tmp_path / "cache"
    folder = pixart_copy / "text_encoder"
    first = prompt_embeddings(pixart_copy, "manga", "", cache_dir=cache)
    kept = tmp_path / "shards"
    kept.mkdir()
    for shard in folder.glob("*.safetensors"):
        shutil.move(shard, kept / shard.name)
    loads = encoder_loads()
    assert text_embedding_cached(pixart_copy, "manga", "", cache)
    again = prompt_embeddings(pixart_copy, "manga", "", cache_dir=cache)
    assert encoder_loads() == loads and torch.equal(again.embeds, first.embeds)
    # no entry for another prompt and no shards: T5 is needed, and its absence is a clear error
    with pytest.raises(Exception, match="safetensors|shard|text_encoder|T5"):
        prompt_embeddings(pixart_copy, "manga page", "", cache_dir=cache)
    # shards back, one value changed: the entry was computed from other weights, so recomputed
    for shard in kept.iterdir():
        tensors = load_file(shard)
        if shard.name.startswith("model-00002"):
            name = next(k for k in tensors if k.startswith("encoder.block.1."))
            tensors[name] = tensors[name] + 1.0
        save_file(tensors, folder / shard.name, metadata={"format": "pt"})
    assert not text_embedding_cached(pixart_copy, "manga", "", cache)
    changed = prompt_embeddings(pixart_copy, "manga", "", cache_dir=cache)
    assert encoder_loads() == loads + 1 and not torch.allclose(changed.embeds, first.embeds)
