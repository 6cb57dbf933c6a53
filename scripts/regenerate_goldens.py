"""Regenerate the golden pixel slices in tests/data/golden/ on purpose, printing what changed.

    python scripts/regenerate_goldens.py           # recompute, print the differences, write the files
    python scripts/regenerate_goldens.py --check   # recompute and print the differences only

Run it only when a change of the output pixels is intended (a fixed bug, a new procedure rule), review
the printed differences and the new outputs, and commit the files with the change that explains them.
Builds the tiny models offline (seed 0, as the tests' `tiny_models_dir`) and runs every golden path.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def _compute(models: Path, work: Path) -> dict[str, dict]:
    import golden

    found = {
        "tiny_weights": {"about": "per weight file of make_tiny(seed 0): sum and sum of magnitudes of its values",
                         "sums": golden.weight_sums(models)},
        "screenstyle_g": {"about": f"screen_style(crafted page at 96x144, tiny networks, seed {golden.SEED})",
                          **golden.slices(golden.screenstyle_g(models))},
    }
    for name, flags in golden.PATHS.items():
        print(f"running {name} ...", file=sys.stderr)
        command = " ".join(["colorflow colorize CRAFTED_PAGE --refs CRAFTED_REF --steps 2", f"--size {golden.WORK_SIZE}",
                            f"--seed {golden.SEED}", *flags])
        found[name] = {"about": command, **golden.slices(golden.run_path(models, work, name))}
    return found


def _changes(name: str, old: dict | None, new: dict) -> list[str]:
    import golden

    if old is None:
        return [f"{name}: new file"]
    if name == "tiny_weights":
        return [f"{name}: {file}: {old['sums'].get(file)} -> {value}"
                for file, value in new["sums"].items() if old["sums"].get(file) != value]
    added = [f"{name}: {key}: new, {new[key]}" for key in new if key not in old]
    removed = [f"{name}: {key}: removed" for key in old if key not in new]
    return added + removed + [f"{name}: {line}" for line in golden.differences(old, new, tolerance=0)
                              if line.split(":")[0].split(" ")[0] in new]


def _text(values: dict, indent: str = "  ") -> str:
    """JSON with one key a line (a 3x3 slice fits one), so a reviewed diff shows what moved."""
    lines = [f"{indent}{json.dumps(key)}: {_text(value, indent + '  ') if isinstance(value, dict) else json.dumps(value)}"
             for key, value in values.items()]
    return "{\n" + ",\n".join(lines) + "\n" + indent[:-2] + "}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="print the differences, write nothing")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as the tests run: one thread
    os.environ["HF_HUB_OFFLINE"] = "1"
    with tempfile.TemporaryDirectory(prefix="colorflow-goldens-") as temp:
        temp = Path(temp)
        os.environ["COLORFLOW_CACHE_DIR"] = str(temp / "user-cache")  # never the user's own folders
        os.environ["COLORFLOW_CONFIG_DIR"] = str(temp / "user-config")
        import golden
        from engine.io.fileio import atomic_write_bytes
        from engine.models.sources import make_tiny

        make_tiny(temp / "models")
        found = _compute(temp / "models", temp / "runs")
    changed = 0
    for name, values in found.items():
        path = golden.GOLDEN_DIR / f"{name}.json"
        old = json.loads(path.read_text()) if path.exists() else None
        lines = _changes(name, old, values)
        changed += bool(lines)
        print("\n".join(lines) if lines else f"{name}: unchanged")
        if lines and not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, (_text(values) + "\n").encode())
    print(f"{changed} golden file(s) {'differ' if args.check else 'written'}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
