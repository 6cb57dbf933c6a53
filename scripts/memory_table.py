"""Write (or --check) the memory figures shipped for the official sizes: resources/models/memory-estimates.json.

    python scripts/memory_table.py [--check]

For the official architecture of both model families (SD1.5 + GraySD: "official"; the line-art
styles' PixArt-alpha family: "pixart-official") at each official working size (640x640, 512x800,
800x512), fp16 and fp32, with and without VAE tiling, decoding the canvas or the page: the weight bytes
per model and the peak activation bytes per stage and ICP phase, from meta-device forwards
(engine/pipelines/meta_forward.py, meta_forward_pixart.py). `colorflow models list` and the Model manager read them without
importing torch; other sizes are computed on demand and cached. Run it again after changing what is
measured (and bump memory.ESTIMATE_VERSION); --check recomputes and exits 1 when the file differs.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run from a checkout without installing

TABLE = REPO_ROOT / "resources" / "models" / "memory-estimates.json"


def entries() -> dict:
    from diffusers.utils import logging as diffusers_logging

    from engine.core.geometry import OFFICIAL_SIZES, WorkSize
    from engine.pipelines.memory import PIXART_PREFIX, measure_any, table_key

    diffusers_logging.set_verbosity_error()
    found = {}
    for architecture, (w, h), dtype, tiling, decode in itertools.product(
            ("official", f"{PIXART_PREFIX}official"), OFFICIAL_SIZES, ("float16", "float32"), (False, True),
            ("canvas", "page")):
        size = WorkSize(w, h)
        found[table_key(architecture, size, dtype, tiling, decode)] = measure_any(architecture, size, dtype,
                                                                                  vae_tiling=tiling, decode=decode)
        print(f"{architecture} {size} {dtype} tiling={tiling} decode={decode}", file=sys.stderr)
    return found


def main(argv: list[str] | None = None) -> int:
    import json

    from engine.io.fileio import atomic_write_json
    from engine.pipelines.memory import ESTIMATE_VERSION

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="recompute and compare; exit 1 when it differs")
    args = parser.parse_args(argv)
    table = {"version": ESTIMATE_VERSION, "written_by": "scripts/memory_table.py", "entries": entries()}
    if args.check:
        shipped = json.loads(TABLE.read_text())
        if shipped != table:
            print(f"{TABLE} is out of date: run python scripts/memory_table.py", file=sys.stderr)
            return 1
        print(f"{TABLE}: up to date")
        return 0
    atomic_write_json(TABLE, table)
    print(f"wrote {TABLE} ({len(table['entries'])} entries)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
