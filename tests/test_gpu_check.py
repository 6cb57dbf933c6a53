"""scripts/gpu_check.py: its CPU path (--dry-run) measures every check and records a failure per check; its wheels."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "gpu_check.py"
# The requirement: s/page and peak memory for ours, --low-vram and the official procedure.
MODES = ("ours", "low_vram", "official")
STAGES = ("ScreenStyle", "RAP", "ICP", "GSRP")
DEVICE_ERROR = "Expected all tensors to be on the same device"


def _script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO_ROOT / "constraints" / "cpu.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


@pytest.mark.slow
def test_dry_run_measures_every_check_and_records_an_injected_device_error(tmp_path):
    """One CPU run of the whole flow with a device-mixing error planted deep in --low-vram's ICP
    stage (a test-only switch): that mode is recorded as a device error, every other check
    still reports its figures, and the JSON is written."""
    out = tmp_path / "x.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLORFLOW_CACHE_DIR": str(tmp_path / "cache")}
    start = time.monotonic()
    result = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), "--work", str(tmp_path / "w"),
                             "--inject-failure", "low_vram"],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - start
    assert result.returncode == 1, result.stdout + result.stderr  # 1: a check failed (the planted one)
    report = json.loads(out.read_text())
    checks = {entry["name"]: entry for entry in report["checks"]}
    assert report["dry_run"] is True and report["complete"] is True
    assert report["device"] == "cpu" and report["cuda_available"] is False and report["gpu"] is None
    assert report["torch"] == __import__("torch").__version__
    assert 0 < report["wall_s"] <= elapsed
    assert report["settings"]["size"] == "256x256" and report["settings"]["steps"] <= 2
    assert checks["install"]["status"] == "skipped"  # --dry-run installs nothing

    for mode in ("ours", "official"):
        entry = checks[mode]
        assert entry["status"] == "ok" and entry["ok"] is True, entry
        assert entry["s_per_page"] > 0 and entry["peak_mib"] > 0 and entry["chapter_s_per_page"] > 0
        assert all(entry["stages"][stage]["s"] > 0 for stage in ("ICP", "GSRP"))
        assert set(entry["stages"]) == set(STAGES)
    planted = checks["low_vram"]
    assert planted["status"] == "error" and planted["ok"] is False
    assert planted["error_kind"] == "device_mixing" and DEVICE_ERROR in planted["error"]
    assert report["device_mixing_errors"] == ["low_vram"] and report["failed"] == ["low_vram"]
    assert set(MODES) <= set(checks)

    pair = checks["ratios"]["ours/official"]  # the ratios of the figures above, by hand
    assert pair["time"]["page"] == pytest.approx(checks["ours"]["s_per_page"] / checks["official"]["s_per_page"],
                                                 rel=0.01)
    assert pair["peak_memory"]["peak"] == pytest.approx(checks["ours"]["peak_mib"] / checks["official"]["peak_mib"],
                                                        rel=0.01)
    assert "low_vram/official" not in checks["ratios"]  # its mode failed: no ratio is made up

    agreement = checks["agreement"]
    assert agreement["status"] == "ok", agreement
    assert agreement["reference_dtype"] == "float32" and agreement["compared_dtype"] in ("float16", "bfloat16")
    low, high = agreement["mean_abs_levels"], agreement["max_abs_levels"]
    assert math.isfinite(low) and math.isfinite(high) and 0 <= low <= high <= 255
    assert high > 0  # the two runs really ran at different precisions
    assert agreement["fp32_repeat_max_abs_levels"] == 0  # same seed, same dtype, on the CPU: the same pixels

    from engine.core.options import OPTIONS

    script = _script()
    assert len([name for name in checks if name.startswith("variant:")]) == len(script.VARIANTS)
    for name, overrides in script.VARIANTS:
        entry = checks[f"variant:{name}"]
        undeclared = [option for option in overrides if option not in OPTIONS]
        if undeclared:
            assert entry["status"] == "skipped" and entry["skipped"] == "option not declared: " + ", ".join(undeclared)
        else:
            assert entry["status"] in ("ok", "skipped"), entry
            if entry["status"] == "ok":
                assert entry["options"] == overrides and entry["chapter_s_per_page"] > 0
                if set(entry["stages"]) != set(STAGES):  # stages the bench did not time: no figure made up
                    assert entry["s_per_page"] is None and entry["peak_mib"] is None and entry["incomplete"]
                else:
                    assert entry["s_per_page"] > 0 and entry["peak_mib"] > 0
    for name in checks:
        assert name in result.stdout  # the printed summary names every check


def test_wheels_follow_the_pins_and_stay_out_of_git():
    """The header's download command fetches exactly the runtime wheels the script installs, each
    at constraints/cpu.txt's version; the wheel folder is ignored by git; an install plan names
    only what is missing, from the carried folder alone."""
    script = _script()
    pins = _pins()
    named = dict(re.findall(r"\b([A-Za-z][A-Za-z0-9_.-]*)==([0-9][0-9A-Za-z.]*)", script.__doc__))
    assert {name.lower() for name in named} == {dist for dist, _ in script.RUNTIME_PACKAGES}
    for name, version in named.items():
        assert pins[name.lower()] == version, name
    # the GUI stays out; torch, transformers, accelerate and peft are the machine's own
    assert not {"pyside6-essentials", "shiboken6", "torch", "transformers", "accelerate", "peft"} & set(named)
    git = shutil.which("git")
    if git:
        assert subprocess.run([git, "check-ignore", "-q", "scripts/gpu_wheels/x.whl"], cwd=REPO_ROOT).returncode == 0
    plan = script.install_plan(lambda module: module != "natsort", Path("scripts/gpu_wheels"))
    assert plan[-1] == f"natsort=={pins['natsort']}"
    assert "--no-index" in plan and plan[plan.index("--find-links") + 1] == "scripts/gpu_wheels"
    assert script.install_plan(lambda module: True, Path("w")) == []
