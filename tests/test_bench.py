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
    assert keyword_only == ["pages", "refs", "steps", "size", "input_style", "seed", "modes", "warmup", "threads", "emit"]
