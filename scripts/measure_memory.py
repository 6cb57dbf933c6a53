"""The memory estimate against a measured CPU fp32 run, stage by stage, at one or more working sizes.

    python scripts/measure_memory.py --models DIR [--size 256x256] [--size 256x384] [--steps 1] [--json]

For each size a fresh Python process (engine/benchmarks/memory_check.py) loads the models on the
CPU and colors one generated page; each stage's measured figure is its peak RSS (Linux VmHWM,
reset at the stage start) minus the process's RSS before any model loaded. The estimate is
engine/pipelines/memory.py's at the same size, fp32, placement "cpu" (every model resident). Prints
both, per stage, and their ratio. Official-size models take ~12 GB of RAM: run one such process at a
time (on a shared machine: `flock /tmp/official-size.lock python scripts/measure_memory.py ...`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run from a checkout without installing

CHILD = """
import json, sys
from engine.benchmarks.memory_check import measure_stage_rss
print(json.dumps(measure_stage_rss(sys.argv[1], sys.argv[2], steps=int(sys.argv[3]))))
"""


def measure(models: str, size: str, steps: int = 1, env: dict | None = None) -> dict:
    """One fresh process's measure_stage_rss (memory_check.py)."""
    result = subprocess.run([sys.executable, "-c", CHILD, models, size, str(steps)], capture_output=True, text=True,
                            cwd=REPO_ROOT, env=dict(os.environ, **(env or {})))
    if result.returncode:
        raise RuntimeError(f"the measured run failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def compare(models: str, size: str, steps: int = 1, env: dict | None = None) -> dict:
    """{stage: {"estimate_mib", "measured_mib", "ratio"}} plus the weights, loaded and estimated."""
    from engine.pipelines.memory import estimate, models_architecture

    measured = measure(models, size, steps, env)
    figures = estimate(size, "float32", placement="cpu", architecture=models_architecture(models))
    stages = {s.stage: {"estimate_mib": s.total / 2**20, "weights_mib": s.weights / 2**20,
                        "activations_mib": s.activations / 2**20, "measured_mib": measured["stages"][s.stage],
                        "ratio": (s.total / 2**20) / measured["stages"][s.stage]} for s in figures.stages}
    return {"size": size, "baseline_mib": measured["baseline_mib"], "loaded_weights_mib": measured["weights_mib"],
            "estimated_weights_mib": figures.stages[0].weights / 2**20, "stages": stages}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", required=True, help="a models DIR (make-tiny or make-random), or tiny")
    parser.add_argument("--size", action="append", help="working size WxH (default 256x256 and 256x384)")
    parser.add_argument("--steps", type=int, default=1, help="denoising steps (default 1: every step peaks alike)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    results = [compare(args.models, size, args.steps) for size in args.size or ["256x256", "256x384"]]
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    for result in results:
        print(f"{result['size']}: baseline RSS {result['baseline_mib']:.0f} MiB; weights loaded "
              f"{result['loaded_weights_mib']:.1f} MiB, estimated {result['estimated_weights_mib']:.1f} MiB")
        print(f"  {'stage':<12}{'estimate':>10}{'(weights':>10}{'+ act.)':>9}{'measured':>10}{'ratio':>7}  MiB")
        for stage, row in result["stages"].items():
            print(f"  {stage:<12}{row['estimate_mib']:>10.0f}{row['weights_mib']:>10.0f}{row['activations_mib']:>9.0f}"
                  f"{row['measured_mib']:>10.0f}{row['ratio']:>7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
