"""`colorflow bench pages`: every stage's time and memory for ours, --low-vram and official, and the ratios."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from engine.cli.main import main

REPO_ROOT = Path(__file__).resolve().parents[1]
STAGES = ("ScreenStyle", "RAP", "ICP", "GSRP")


def test_bench_pages_json_has_every_stage_and_the_ratios(tiny_models_dir, capsys):
    pages, refs = 2, 2
    code = main(["bench", "pages", "--models", str(tiny_models_dir), "--device", "cpu", "--pages", str(pages),
                 "--ref-count", str(refs), "--size", "256x256", "--steps", "1", "--input-style", "gray", "--no-warmup", "--threads", "1",
                 "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert list(result["modes"]) == ["ours", "low_vram", "official"]
    assert result["size"] == "256x256" and result["steps"] == 1 and result["pages"] == pages
    if Path("/proc/self/clear_refs").exists():
        assert "VmHWM" in result["memory_measure"]  # Linux: each stage's own peak RSS
    for mode in result["modes"].values():
        assert [p["page"] for p in mode["pages"]] == ["1.png", "2.png"]
        for page in mode["pages"]:
            assert set(page["stages"]) == set(STAGES)
            for cell in page["stages"].values():
                assert cell["s"] >= 0 and cell["peak_mib"] > 0 and cell["added_mib"] >= 0
        assert set(mode["stages"]) == set(STAGES)
        assert mode["stages"]["ICP"]["s"] > 0 and mode["pages_per_hour"] > 0 and mode["peak_mib"] > 0
        # Model loading is measured apart: the RSS after it includes the models, its peak at least that.
        assert mode["load_s"] > 0 and mode["memory_after_load_mib"] > mode["memory_before_load_mib"] > 0
        assert mode["load_peak_mib"] >= mode["memory_after_load_mib"] - 1
    # Ours embeds each reference once per chapter (5 patches each) and each page's 4 query
    # patches; the official procedure re-embeds every reference for every page.
    ours, official = result["modes"]["ours"], result["modes"]["official"]
    assert ours["clip_images_embedded"] == refs * 5 + pages * 4
    assert official["clip_images_embedded"] == pages * refs * 5 + pages * 4
    assert official["reference_patches_embedded"] == pages * refs * 5
    for pair in ("ours/official", "low_vram/official"):
        ratios = result["ratios"][pair]
        for stage in STAGES:
            assert math.isfinite(ratios["time"][stage]) and ratios["time"][stage] > 0
            assert math.isfinite(ratios["peak_memory"][stage]) and ratios["peak_memory"][stage] > 0
        assert ratios["time"]["page"] > 0 and ratios["peak_memory"]["peak"] > 0
    assert result["ratios"]["ours/official"]["clip_images_embedded"] == round(18 / 28, 3)
    assert any("tiny random-weight models" in note for note in result["notes"])
    assert result["random_weights"].startswith("random weights") and result["process_baseline_mib"] > 0
    assert "profile" not in result and "profile_wall_s" not in result  # --profile off: no profile pass


def test_bench_pages_profile_names_the_operators_each_stage_runs(tiny_models_dir, capsys):
    """--profile: each stage's table holds operators that stage's networks run. The UNet, guide and
    VAE are convolutional (ICP and GSRP show a convolution); aten::embedding (token and position
    embeddings) is run by CLIP (RAP) and never by the VAE or the GSRP network."""
    from engine.cli.evaluate import _pages_text

    code = main(["bench", "pages", "--models", str(tiny_models_dir), "--device", "cpu", "--pages", "1",
                 "--ref-count", "1", "--size", "256x256", "--steps", "1", "--input-style", "gray", "--no-warmup",
                 "--threads", "1", "--modes", "ours", "--profile", "--profile-top", "1000", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    profile = result["profile"]["ours"]
    assert {"RAP", "ICP", "GSRP"} <= set(profile)
    ops = {stage: [row["op"] for row in rows] for stage, rows in profile.items()}
    assert any("conv" in op for op in ops["ICP"][:8]), ops["ICP"][:8]  # among the default 8
    assert any("conv" in op for op in ops["GSRP"])
    assert "aten::embedding" in ops["RAP"]
    assert "aten::embedding" not in ops["GSRP"], ops["GSRP"]
    for stage, rows in profile.items():
        assert result["profile_wall_s"]["ours"][stage] > 0
        assert all(row["calls"] >= 1 and row["self_s"] >= 0 and row["share"] >= 0 for row in rows)
        assert sum(row["share"] for row in rows) <= 1 + 1e-6, stage
        assert [row["self_s"] for row in rows] == sorted((row["self_s"] for row in rows), reverse=True)
    # The profiled pass is not counted: the counters are the timed pass's alone (1 ref x 5 + 1 page x 4).
    assert result["modes"]["ours"]["clip_images_embedded"] == 5 + 4
    assert any(note.startswith("profile:") for note in result["notes"])
    text = _pages_text(result)
    assert "profile ours" in text and "| ICP (" in text and ops["ICP"][0] in text


def test_bench_pages_bad_mode_fails_before_torch():
    probe = ("import json, sys\nfrom engine.cli.main import main\ncode = main(sys.argv[1:])\n"
             "print(json.dumps({'code': code, 'torch': 'torch' in sys.modules}))\n")
    result = subprocess.run([sys.executable, "-c", probe, "bench", "pages", "--models", "tiny", "--modes", "ours,fast"],
                            cwd=REPO_ROOT, capture_output=True, text=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"code": 2, "torch": False}, result.stderr
    assert "--modes" in result.stderr


def test_bench_pages_takes_everything_after_models_and_device_by_keyword():
    import inspect

    from engine.benchmarks.stages import bench_pages

    parameters = inspect.signature(bench_pages).parameters.values()
    positional = [p.name for p in parameters if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    keyword_only = [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert positional == ["models", "device"]
    assert keyword_only == ["pages", "refs", "steps", "size", "input_style", "seed", "modes", "warmup", "threads",
                            "options", "profile", "profile_top", "emit"]


def test_stage_recorder_shares_one_call_of_several_pages_among_them():
    """Several pages in one denoising call: the call's seconds are split equally among its pages
    (their sum is the call's wall time, so s/page stays right), its peak memory counts for each."""
    import time

    from engine.benchmarks.stage_timing import StageRecorder

    class Meter:
        def begin(self):
            pass

        def end(self):
            return {"peak_mib": 100.0, "added_mib": 10.0}

    recorder = StageRecorder(Meter())
    start = time.perf_counter()
    with recorder.stage(("1.png", "2.png"), "ICP"):
        time.sleep(0.05)
    elapsed = time.perf_counter() - start
    first, second = recorder.pages["1.png"]["ICP"], recorder.pages["2.png"]["ICP"]
    assert first["s"] == second["s"] and 0.05 / 2 <= first["s"] <= elapsed / 2
    assert first["peak_mib"] == second["peak_mib"] == 100.0 and first["added_mib"] == 10.0
