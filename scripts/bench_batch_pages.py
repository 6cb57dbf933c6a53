"""Time of one color_batch of N pages against N one-page color calls, as a ratio measured in one run (--batch-pages).

    python scripts/bench_batch_pages.py --models DIR [--size 256x256] [--steps 1] [--pages 2] [--repeats 2] [--json]

A generated chapter (gray input, ours) is prepared and retrieved once; then, `repeats` times in
turn, the N pages are colored one at a time (`ColorFlowPipeline.color`) and in one batch
(`color_batch`), after one warm-up page. Prints the median wall seconds of each, their ratio
(batch / one at a time: below 1 means the batch pays), the ICP share, and the largest pixel
differences between the two, of ICP's output (fp32 tolerance: 1 level) and of the final page. Official-size models load ~12 GB: on a shared
machine run it under `flock /tmp/official-size.lock`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", required=True, help="a models folder, tiny or official")
    parser.add_argument("--size", default="256x256")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--pages", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import torch
    from PIL import Image

    from engine.core.geometry import WorkSize
    from engine.core.options import RunSettings
    from engine.io.chapter import ImageSource, open_chapter
    from engine.io.demo import make_demo_chapter
    from engine.pipelines.page import ColorJob, load_pipeline
    from engine.pipelines.settings import pipeline_settings
    from engine.rap.curation import Choices

    size = WorkSize.parse(args.size)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        start = time.perf_counter()
        pipeline = load_pipeline(args.models, args.device, cache_dir=work / "cache", input_style="gray")
        load_s = time.perf_counter() - start
        chapter, refs = make_demo_chapter(work / "demo", pages=args.pages + 1, refs=2)
        references = [ImageSource(p) for p in sorted(refs.iterdir())]
        jobs = []
        pages = open_chapter([chapter])  # decoded by the engine's allowlisted reader, as a run does
        for seed in range(len(pages.sources)):
            page = pages.load_page(seed)
            settings = pipeline_settings(RunSettings(steps=args.steps, seed=seed, input_style="gray", size=args.size))
            prepared = pipeline.prepare(page, settings.inputs)
            jobs.append(ColorJob(page, pipeline.retrieve(page, references, Choices(), prepared), prepared, settings))
        warmup, jobs = jobs[0], jobs[1:]
        upscaler, icp_images = pipeline.upscaler, []

        def recording_upscaler(colored, *rest):  # ICP's output, as GSRP gets it
            icp_images.append(colored)
            return upscaler(colored, *rest)

        pipeline.upscaler = recording_upscaler
        pipeline.color(warmup.page, warmup.retrieval, warmup.prepared, warmup.settings)
        times: dict[str, list[float]] = {"one_at_a_time": [], "batch": []}
        alone_icp: list = []
        batched_icp: list = []
        icp: dict[str, list[float]] = {"one_at_a_time": [], "batch": []}
        for _ in range(args.repeats):
            for mode in times:
                icp_before = pipeline.timings["ICP"]
                start = time.perf_counter()
                if mode == "batch":
                    batched = pipeline.color_batch(jobs)
                else:
                    alone = [pipeline.color(j.page, j.retrieval, j.prepared, j.settings) for j in jobs]
                times[mode].append(time.perf_counter() - start)
                last_icp = icp_images[-len(jobs):]
                (batched_icp if mode == "batch" else alone_icp)[:] = last_icp
                icp[mode].append(pipeline.timings["ICP"] - icp_before)
        def largest(pairs) -> int:
            return max(int(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max()) for a, b in pairs)

        difference, icp_difference = largest(zip(alone, batched)), largest(zip(alone_icp, batched_icp))
    median = {mode: statistics.median(values) for mode, values in times.items()}
    icp_median = {mode: statistics.median(values) for mode, values in icp.items()}
    result = {
        "models": args.models, "size": str(size), "steps": args.steps, "pages": args.pages, "repeats": args.repeats,
        "device": args.device, "torch_threads": torch.get_num_threads(), "load_s": round(load_s, 2),
        "s": {mode: [round(v, 3) for v in values] for mode, values in times.items()},
        "icp_s": {mode: [round(v, 3) for v in values] for mode, values in icp.items()},
        "ratio_batch_to_one_at_a_time": round(median["batch"] / median["one_at_a_time"], 3),
        "icp_ratio_batch_to_one_at_a_time": round(icp_median["batch"] / icp_median["one_at_a_time"], 3),
        "max_pixel_difference": difference,
        "max_icp_pixel_difference": icp_difference,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.pages} pages at {size}, {args.steps} step(s), {args.device}, {result['torch_threads']} threads; "
              f"models loaded in {load_s:.1f} s")
        print(f"one at a time: {median['one_at_a_time']:.2f} s (ICP {icp_median['one_at_a_time']:.2f} s); "
              f"batch: {median['batch']:.2f} s (ICP {icp_median['batch']:.2f} s); medians of {args.repeats}")
        print(f"ratio batch / one at a time: {result['ratio_batch_to_one_at_a_time']} "
              f"(ICP alone {result['icp_ratio_batch_to_one_at_a_time']})")
        print(f"largest pixel difference: ICP output {icp_difference} levels, final page {difference} levels "
              "(GSRP and keep-ink amplify ICP's float-order differences)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
