"""make-random --line-art: the official-size T5 is written shard by shard and loads with transformers' own loader."""

from __future__ import annotations

import json


def test_t5_written_shard_by_shard_loads_strictly_with_transformers(tmp_path):
    import torch
    from transformers import T5EncoderModel

    from engine.icp.t5_encoder import weight_files
    from engine.models.official_pixart import write_t5_sharded
    from engine.models.tiny import RandomPool

    fields = dict(d_model=32, d_kv=8, d_ff=48, num_layers=3, num_heads=4, vocab_size=256,
                  feed_forward_proj="gated-gelu", is_encoder_decoder=False)
    folder = tmp_path / "text_encoder"
    count = write_t5_sharded(folder, fields, RandomPool(0, "float16"), shards=2)
    # By hand: embeddings; per layer q,k,v,o + wi_0, wi_1, wo + 2 norms; layer 0's relative bias; final norm.
    assert count == 256 * 32 + 3 * (4 * 32 * 32 + 3 * 32 * 48 + 2 * 32) + 32 * 4 + 32
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == ["model-00001-of-00002.safetensors",
                                                        "model-00002-of-00002.safetensors"]
    assert index["metadata"]["total_size"] == 2 * count  # fp16
    model, info = T5EncoderModel.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.dtype == torch.float16 and sum(p.numel() for p in model.parameters()) == count
    assert set(weight_files(folder)) == set(index["weight_map"])  # our streamed loader reads the same index
