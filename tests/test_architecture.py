"""Layering rules: the engine never imports Qt or the GUI; heavy imports stay lazy; no import cycle."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# Modules that do the network math import torch at the top; everything the GUI or CLI touches
# at start-up must not (the window appears before torch/diffusers are imported).
TORCH_MODULES = {
    "icp.guide", "icp.unet_walk", "icp.colorize", "icp.components", "gsrp.fusion", "gsrp.upscale",
    "io.checkpoints", "preprocess.screenstyle", "models.loading", "core.offload", "training.icp_model",
    "icp.conditioning", "preprocess.tensors",
    "core.live_bytes", "pipelines.meta_forward",  # the memory estimate's meta-device runs (issue 23)
    "pipelines.meta_forward_pixart",  # ... of the line-art family (issue 24)
    "preprocess.lines",  # the line extractor (issue 24)
    "icp.pixart_forward", "icp.pixart_components", "icp.pixart_colorize", "models.pixart_loading",  # PixArt ICP (24)
    "icp.pixart_guide", "icp.pixart_lora",  # the PixArt guide and transformer LoRA (24)
}
QT_ROOTS = ("PySide6", "shiboken6", "app")
HEAVY_ROOTS = ("torch", "diffusers", "transformers")

# One interpreter imports every module: the light ones first, each in a forked child before the
# parent takes it (so a module that loads torch is named, and leaves the next one's check clean, as a
# fresh interpreter would), then the heavy ones. Qt and the GUI must never appear.
_IMPORT_EVERY_MODULE = """
import importlib, json, os, sys
light, heavy = json.loads(sys.argv[1]), json.loads(sys.argv[2])
qt_roots, heavy_roots = set(json.loads(sys.argv[3])), set(json.loads(sys.argv[4]))
def problem(name, is_light):
    try:
        importlib.import_module('engine.' + name)
    except Exception as exc:
        return f'engine.{name}: import failed: {exc!r}'
    loaded = {n.split('.')[0] for n in sys.modules}
    if loaded & qt_roots:
        return f'engine.{name} imports {sorted(loaded & qt_roots)}'
    if is_light and loaded & heavy_roots:
        return f'engine.{name} imports {sorted(loaded & heavy_roots)} at module level (import it where it is used)'
    return ''
def in_child(name):
    if not hasattr(os, 'fork'):  # Windows: checked in this process, so modules after an offender are flagged too
        return problem(name, True)
    read, write = os.pipe()
    if os.fork() == 0:
        os.write(write, problem(name, True).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, 'rb') as pipe:
        found = pipe.read().decode()
    os.wait()
    return found
problems = []
for name in light:
    found = in_child(name)
    problems += [found] if found else []
    if not found:
        importlib.import_module('engine.' + name)
for name in heavy:
    found = problem(name, False)
    problems += [found] if found else []
print(json.dumps(problems))
"""

def _engine_modules() -> list[str]:
    """Every engine module as a dotted name below `engine` (packages by their __init__)."""
    names = []
    for path in sorted((REPO_ROOT / "engine").rglob("*.py")):
        parts = path.relative_to(REPO_ROOT / "engine").with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts and parts[-1] != "__main__":
            names.append(".".join(parts))
    return names


def _contracts() -> list[dict]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_import_linter_contracts_hold():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert lint, "import-linter is part of the test extras"
    result = subprocess.run([lint, "--no-cache"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    for contract in _contracts():
        assert f"{contract['name']} KEPT" in result.stdout, result.stdout


def test_layers_contract_has_no_exemption_and_names_every_engine_package():
    (layers,) = [c for c in _contracts() if c["type"] == "layers"]
    in_layers = {name.strip() for layer in layers["layers"] for name in layer.replace(":", "|").split("|")}
    exempt = [layer for layer in layers["layers"] if ":" in layer]  # ':' lets a layer's modules import each other
    top_level = {f"engine.{path.stem}" for path in (REPO_ROOT / "engine").glob("*.py")
                 if path.stem not in ("__init__", "__main__")}
    top_level |= {f"engine.{path.parent.name}" for path in (REPO_ROOT / "engine").glob("*/__init__.py")}
    unlayered = sorted(top_level - in_layers)
    assert not exempt and not unlayered, f"pyproject layers contract: exemption lines {exempt}, in no layer {unlayered}"


def test_engine_imports_no_qt_and_light_modules_no_torch():
    modules = _engine_modules()
    assert sorted(TORCH_MODULES - set(modules)) == [], "TORCH_MODULES names modules that no longer exist"
    light = [m for m in modules if m not in TORCH_MODULES]
    heavy = [m for m in modules if m in TORCH_MODULES]
    args = [json.dumps(value) for value in (light, heavy, QT_ROOTS, HEAVY_ROOTS)]
    result = subprocess.run([sys.executable, "-c", _IMPORT_EVERY_MODULE, *args], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    problems = json.loads(result.stdout.strip().splitlines()[-1])
    assert not problems, "\n".join(problems)


def test_engine_and_app_import_graph_has_no_cycle():
    import grimp

    graph = grimp.build_graph("engine", "app", cache_dir=None)
    cycles: dict[frozenset, str] = {}
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back:
                cycles.setdefault(frozenset(back), " -> ".join((module, *back)))
    assert not cycles, "import cycles (move what both sides need into a lower module):\n" + "\n".join(cycles.values())


def test_engine_root_holds_only_packages_and_no_module_is_long():
    """The folder tree shows the method (DESIGN.md): nothing but __init__/__main__ at engine/ root,
    and no module of engine/ or app/ over 400 lines (a sign to split it by responsibility)."""
    root = REPO_ROOT / "engine"
    assert sorted(p.name for p in root.glob("*.py")) in (["__init__.py"], ["__init__.py", "__main__.py"])
    long = {str(p.relative_to(REPO_ROOT)): n for p in [*root.rglob("*.py"), *(REPO_ROOT / "app").rglob("*.py")]
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert long == {}
