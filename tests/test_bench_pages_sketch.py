"""`colorflow bench pages --input-style sketch`: the PixArt path timed per stage for every mode, T5 once and apart."""

from __future__ import annotations

import json
import math

from engine.cli.main import main

LINE_ART_STAGES = {"Lines", "RAP", "ICP", "GSRP"}  # line extraction is the preprocess stage


def test_bench_pages_sketch_reports_every_mode_and_stage_and_t5_once(tiny_models_dir, capsys):
    code = main(["bench", "pages", "--models", str(tiny_models_dir), "--device", "cpu", "--pages", "1",
                 "--ref-count", "1", "--size", "256x256", "--steps", "1", "--input-style", "sketch", "--no-warmup",
                 "--threads", "1", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["input_style"] == "sketch" and list(result["modes"]) == ["ours", "low_vram", "official"]
    for mode in result["modes"].values():
        assert [p["page"] for p in mode["pages"]] == ["1.png"]
        assert set(mode["pages"][0]["stages"]) == LINE_ART_STAGES == set(mode["stages"])
        assert all(cell["s"] > 0 for cell in mode["stages"].values())
        assert mode["preprocess_passes"] == 1  # the page's lines extracted once, in every mode (fresh caches)
        assert mode["text_encoder_loads"] == 0  # no mode loads T5: the embeddings were computed once, before
    # The prompt's T5 embeddings: computed once for the whole run (one T5 load), timed apart from the pages.
    once = result["text_embeddings"]
    assert once["t5_loads"] == 1 and once["s"] > 0 and once["peak_mib"] > 0
    for pair in ("ours/official", "low_vram/official"):
        ratios = result["ratios"][pair]["time"]
        assert set(LINE_ART_STAGES) <= set(ratios) and all(math.isfinite(ratios[s]) and ratios[s] > 0
                                                           for s in LINE_ART_STAGES)
