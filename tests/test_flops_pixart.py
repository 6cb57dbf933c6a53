"""`colorflow bench flops --input-style sketch`: the PixArt path's FLOPs per page, ours vs the official procedure."""

from __future__ import annotations

import json

import pytest

from engine.cli.main import main

# T5-v1.1-XXL, the text encoder of PixArt-alpha/PixArt-XL-2-1024-MS (its text_encoder/config.json):
# d_model 4096, d_ff 10240 (gated: two input projections), 24 layers, 64 heads of 64.
D_MODEL, D_FF, LAYERS, HEADS, D_KV = 4096, 10240, 24, 64, 64
TOKENS = 120  # the official max_sequence_length; [negative, prompt] = 2 sequences


def t5_pair_flops_by_hand() -> int:
    """2 FLOPs per multiply-add. Per token and layer: q, k, v, o (d_model x heads*d_kv each), wi_0,
    wi_1 (d_model x d_ff) and wo (d_ff x d_model); per sequence and layer the attention's two
    matmuls (scores and weighted sum): heads x L x L x d_kv each."""
    linear = 4 * D_MODEL * HEADS * D_KV + 3 * D_MODEL * D_FF
    attention = 2 * HEADS * TOKENS * TOKENS * D_KV
    return 2 * LAYERS * 2 * (TOKENS * linear + attention)


@pytest.mark.slow  # about 10 s (T5-XXL built on the meta device); the CLI test below checks the same to 0.01 TFLOP
def test_pixart_parts_match_hand_counts():
    from engine.benchmarks.flops_pixart import measure_pixart_parts

    parts = measure_pixart_parts(256, 256)
    assert parts["text_encode_pair"] == t5_pair_flops_by_hand()  # about 2.23 TFLOP, on every official call
    # Every layer of the guide is per row: CFG batch 2 costs exactly twice batch 1.
    assert parts["guide_batch2"] == 2 * parts["guide_batch1"] > 0
    # The transformer at CFG batch 2 has 28 blocks with cross-attention, the guide 14 without: well over twice.
    assert parts["transformer_cfg_step"] > 2 * parts["guide_batch2"]
    assert parts["lines"] > 0 and parts["vae_decode_canvas"] > parts["vae_encode_canvas"] > 0


def test_bench_flops_sketch_json_counts_t5_only_for_the_official_procedure(capsys):
    assert main(["bench", "flops", "--input-style", "sketch", "--size", "256x256", "--steps", "2", "--ref-count", "4",
                 "--pages", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["input_style"].startswith("sketch") and "transformer" in result["official_tflop"]
    assert result["size"] == "256x256" and result["steps"] == 2
    official, ours, parts = result["official_tflop"], result["ours_tflop"], result["parts_tflop"]
    assert official["text"] == pytest.approx(t5_pair_flops_by_hand() / 1e12, abs=0.01)
    assert ours["text"] == 0  # embedded once ever, cached on disk
    # Rounded to 0.01 TFLOP in the report: batch 2 vs batch 1 each step; 2 images x 2 CFG copies vs once.
    assert official["guide"] == pytest.approx(2 * ours["guide"], abs=0.015)
    assert official["vae_encode"] == pytest.approx(2 * ours["vae_encode"], abs=0.015)
    assert official["transformer"] == ours["transformer"] and official["lines"] == ours["lines"] > 0
    # CLIP: 4 query crops + 5 crops of each of 4 references per page, vs the references once per 2-page chapter.
    assert official["clip"] == pytest.approx(24 * parts["clip_crop"], rel=0.02)
    assert ours["clip"] == pytest.approx(14 * parts["clip_crop"], rel=0.02)
    assert 0 < result["ratio"] < 1
