"""Measures what the procedure choices change, on the tiny models: full vs page-region decode,
screen vs gray input, and the CPU seconds of the ScreenStyle pass at the official sizes.

    python scripts/measure_fidelity.py [--models DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _difference(a, b) -> dict[str, float]:
    import numpy as np

    diff = np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16))
    return {"max_levels": int(diff.max()), "mean_levels": round(float(diff.mean()), 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=None, help="models DIR (default: generate tiny models)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import torch
    from PIL import Image

    from engine.core.geometry import WorkSize
    from engine.io.chapter import ImageSource, load_image
    from engine.icp.colorize import ColorizeSettings
    from engine.rap.curation import Choices
    from engine.io.demo import make_demo_chapter
    from engine.models.sources import make_tiny
    from engine.pipelines.page import load_pipeline
    from engine.pipelines.settings import PipelineSettings
    from engine.preprocess.screenstyle import screen_style
    from engine.gsrp.upscale import UpscaleSettings

    torch.set_num_threads(max(1, torch.get_num_threads()))
    work = Path(tempfile.mkdtemp(prefix="colorflow-measure-"))
    models = args.models or str(make_tiny(work / "models").sd15.parent)
    chapter, refs = make_demo_chapter(work / "demo", pages=1, refs=2)
    path = sorted(chapter.iterdir())[0]
    page = load_image(ImageSource(path), "L")
    references = [ImageSource(p) for p in sorted(refs.iterdir())]
    pipeline = load_pipeline(models, "cpu", cache_dir=work / "cache")
    size = WorkSize(256, 384)
    results: dict[str, object] = {"models": "tiny (random weights)" if not args.models else models, "size": str(size)}

    def settings(style: str, decode: str = "canvas") -> PipelineSettings:
        return PipelineSettings(ColorizeSettings(steps=10, seed=0, decode=decode, preview_every=0),
                                UpscaleSettings(seed=0), keep_ink=False, size=size, input_style=style)

    def icp(style: str, decode: str):
        run = settings(style, decode)
        prepared = pipeline.prepare(page, run.inputs)
        retrieval = pipeline.retrieve(page, references, Choices(), prepared)
        return pipeline.colorizer(retrieval.canvas, retrieval.mask, size, run.colorize)

    results["decode_page_vs_canvas_icp_output"] = _difference(icp("gray", "canvas"), icp("gray", "page"))

    def final(style: str):
        run = settings(style)
        prepared = pipeline.prepare(page, run.inputs)
        retrieval = pipeline.retrieve(page, references, Choices(), prepared)
        return pipeline.color(page, retrieval, prepared, run)

    results["screen_vs_gray_final_page"] = _difference(final("screen"), final("gray"))

    networks = pipeline.preparer.networks
    timings = {}
    for width, height in ((640, 640), (512, 800), (800, 512)):
        frame = Image.new("RGB", (int(width * 1.5), int(height * 1.5)), (200, 200, 200))
        screen_style(frame, networks, 0)  # warm-up
        start = time.perf_counter()
        screen_style(frame, networks, 0)
        timings[f"{width}x{height}"] = round(time.perf_counter() - start, 2)
    results["screenstyle_cpu_seconds_per_page"] = timings
    results["torch_threads"] = torch.get_num_threads()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
