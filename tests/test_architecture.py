"""Layering rules: the engine never imports Qt or the GUI; heavy imports stay lazy."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# Modules that do the network math import torch at the top; everything the GUI or CLI touches
# at start-up must not (the window appears before torch/diffusers are imported).
TORCH_MODULES = {
    "icp.guide", "icp.unet_walk", "icp.colorize", "icp.components", "gsrp.fusion", "gsrp.upscale",
    "models.checkpoints", "preprocess.screenstyle", "loading", "offload", "training.icp_model",
}


def _engine_modules() -> list[str]:
    """Every engine module as a dotted name below `engine` (packages by their __init__)."""
    names = []
    for path in sorted((REPO_ROOT / "engine").rglob("*.py")):
        parts = path.relative_to(REPO_ROOT / "engine").with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            names.append(".".join(parts))
    return names


def test_import_linter_contracts_hold():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert lint, "import-linter is part of the test extras"
    result = subprocess.run([lint], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "engine never imports Qt KEPT" in result.stdout
    assert "stages never import pipeline, session or cli KEPT" in result.stdout
    assert "engine packages form layers KEPT" in result.stdout


@pytest.mark.parametrize("module", _engine_modules())
def test_engine_module_imports_no_qt_and_light_modules_no_torch(module):
    heavy = ("torch", "diffusers", "transformers") if module not in TORCH_MODULES else ()
    forbidden = ("PySide6", "shiboken6", "app") + heavy
    code = (
        f"import sys, engine.{module}\n"
        f"bad = [n for n in sys.modules if n.split('.')[0] in {forbidden!r}]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-1500:]
