"""Cross-check our FID Inception-v3 against torch-fidelity's: same weights in, same features out.

torch-fidelity cannot be a dependency (it pulls torchvision, whose PyPI build does not import
beside the CPU build of torch, and a broken torchvision breaks transformers), so this is a
manual check. Install it beside, without dependencies, and point this script at it:

    pip install --no-deps --target /tmp/tfid torch-fidelity==0.4.0
    python scripts/check_fid_inception.py /tmp/tfid [--weights pt_inception-2015-12-05-6726825d.pth]

Only torch-fidelity's Inception module is imported (its package __init__ imports torchvision).
Without --weights both networks get the same random weights and batch-norm statistics.
Exit 0 when every feature agrees within --tolerance.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import types
from pathlib import Path


def load_fidelity_inception(target: Path):
    package = types.ModuleType("torch_fidelity")  # skip torch_fidelity/__init__.py (torchvision)
    package.__path__ = [str(target / "torch_fidelity")]
    sys.modules["torch_fidelity"] = package
    return importlib.import_module("torch_fidelity.feature_extractor_inceptionv3").FeatureExtractorInceptionV3


def random_weights(path: Path) -> None:
    import torch

    from engine.evaluation.inception import build_fid_inception

    torch.manual_seed(0)
    state = build_fid_inception().state_dict()
    for key, value in state.items():
        if key.endswith("running_var") or key.endswith("bn.weight"):
            state[key] = torch.rand_like(value) + 0.5
        elif key.endswith("running_mean") or key.endswith("bn.bias"):
            state[key] = torch.randn_like(value) * 0.1
    torch.save(state, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fidelity_dir", type=Path, help="folder holding the torch_fidelity package")
    parser.add_argument("--weights", type=Path, help="the real pt_inception-2015-12-05-6726825d.pth")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()

    import torch

    from engine.evaluation.fid import load_inception

    reference_class = load_fidelity_inception(args.fidelity_dir)
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights or Path(tmp) / "random-inception.pth"
        if args.weights is None:
            random_weights(weights)
        ours = load_inception(weights)
        reference = reference_class("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights))
    generator = torch.Generator().manual_seed(1)
    worst = 0.0
    for height, width in ((299, 299), (173, 411), (1600, 1024), (64, 40)):
        images = torch.randint(0, 256, (2, 3, height, width), dtype=torch.uint8, generator=generator)
        with torch.inference_mode():
            difference = (ours(images) - reference(images)[0]).abs().max().item()
        worst = max(worst, difference)
        print(f"{height}x{width}: max |ours - torch-fidelity| = {difference:.3g}")
    print("OK" if worst <= args.tolerance else "MISMATCH", f"(tolerance {args.tolerance})")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
