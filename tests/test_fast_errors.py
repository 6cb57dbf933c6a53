"""Common CLI mistakes end with exit 2 and a plain message before torch is even imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cli_probe import PROBE

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_cli(args: list[str], env_extra: dict | None = None) -> tuple[dict, str]:
    import os

    env = dict(os.environ, **(env_extra or {}))
    result = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=REPO_ROOT, capture_output=True, text=True, env=env)
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def _assert_fast_error(args, expected: str, env_extra=None):
    outcome, err = run_cli(args, env_extra)
    assert outcome == {"code": 2, "torch": False}, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], err


def test_missing_input_folder(one_page_chapter, tmp_path):
    _, refs = one_page_chapter
    _assert_fast_error(["colorize", str(tmp_path / "nope"), "--refs", str(refs), "--out", str(tmp_path / "o"),
                        "--models", "tiny"], "INPUT")


def test_empty_reference_folder_names_the_argument(one_page_chapter, tmp_path):
    pages, _ = one_page_chapter
    empty = tmp_path / "empty"
    empty.mkdir()
    _assert_fast_error(["colorize", str(pages), "--refs", str(empty), "--out", str(tmp_path / "o"),
                        "--models", "tiny"], "--refs")


def test_bad_size(one_page_chapter, tmp_path):
    pages, refs = one_page_chapter
    result = subprocess.run([sys.executable, "-c", PROBE, "colorize", str(pages), "--refs", str(refs), "--out",
                             str(tmp_path / "o"), "--size", "500x800"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "multiples of 64" in result.stderr  # argparse exits before main returns


def test_missing_official_models_is_one_short_line(one_page_chapter, tmp_path):
    pages, refs = one_page_chapter
    outcome, err = run_cli(["colorize", str(pages), "--refs", str(refs), "--out", str(tmp_path / "o")],
                           {"HF_HOME": str(tmp_path / "empty-hf"), "HF_HUB_CACHE": str(tmp_path / "empty-hf" / "hub")})
    assert outcome == {"code": 2, "torch": False}, err
    line = err.strip()
    assert "\n" not in line and "colorflow models download" in line and "GB" in line
    assert len(line) < 260


def test_cuda_without_cuda_says_what_to_do(one_page_chapter, tmp_path):
    import importlib.metadata

    if "+cpu" not in importlib.metadata.version("torch") and Path("/proc/driver/nvidia/version").exists():
        pytest.skip("this machine has a CUDA torch and a driver")
    pages, refs = one_page_chapter
    _assert_fast_error(["colorize", str(pages), "--refs", str(refs), "--out", str(tmp_path / "o"), "--models", "tiny",
                        "--device", "cuda"], "--device cpu")


def test_version():
    result = subprocess.run([sys.executable, str(REPO_ROOT / "main.py"), "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("colorflow ")


def test_probe_without_official_models_is_one_short_line(tmp_path):
    outcome, err = run_cli(["models", "probe"],
                           {"HF_HOME": str(tmp_path / "empty-hf"), "HF_HUB_CACHE": str(tmp_path / "empty-hf" / "hub")})
    assert outcome == {"code": 2, "torch": False}, err
    line = err.strip()
    assert "\n" not in line and "colorflow models download" in line and "not downloaded yet" in line


def test_probe_with_bad_steps():
    _assert_fast_error(["models", "probe", "--models", "tiny", "--steps", "0"], "--steps must be between 1 and 100")


def test_models_list_imports_no_torch_where_no_gpu_can_be_used(tmp_path):
    from engine.core.devices import gpu_ruled_out

    if not gpu_ruled_out():
        pytest.skip("a GPU may be usable here: only torch can tell")
    outcome, err = run_cli(["models", "list"], {"HF_HOME": str(tmp_path / "hf")})
    assert outcome == {"code": 0, "torch": False}, err
