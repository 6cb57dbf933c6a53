"""Measures the chapter loop's overlap (issue 23): the same chapter colored one page after another and
with the next page prepared on the helper thread, alternated in one process; prints the wall time of
each run, the ratio, whether the pages are byte-identical, and where pass 2's time went per stage.

    python scripts/measure_overlap.py [--models DIR] [--size 256x256] [--steps 1] [--pages 3] [--repeats 2]

With official-size weights (`colorflow models make-random DIR`) one process takes ~12 GB: run it
alone (flock). On a CPU the helper thread competes with the diffusion for the same cores, so the
ratio there is a lower bound of what a GPU (idle while the CPU prepares) gains.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STAGES = ("prepare", "ICP", "GSRP", "write")


def hidden_seconds(intervals) -> float:
    """Seconds of the pages' "prepare" intervals that ran inside another page's ICP or GSRP."""
    busy = [(start, end) for page, stage, start, end in intervals if stage in ("ICP", "GSRP")]
    total = 0.0
    for page, stage, start, end in intervals:
        if stage == "prepare":
            total += sum(max(0.0, min(end, b) - max(start, a)) for a, b in busy)
    return total


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="colorflow-overlap-") as work:
        return measure(Path(work))


def measure(work: Path) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=None, help="models DIR (default: generate tiny models)")
    parser.add_argument("--size", default="256x256")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--pages", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each mode, alternated")
    parser.add_argument("--input-style", default="screen", choices=("screen", "gray"))
    args = parser.parse_args()

    from engine.core.options import RunSettings
    from engine.io.chapter import list_images, open_chapter
    from engine.io.demo import make_demo_chapter
    from engine.models.sources import make_tiny
    from engine.pipelines.chapter import colorize_chapter
    from engine.pipelines.page import load_pipeline
    from engine.pipelines.settings import pipeline_settings
    from engine.project.state import ChapterProject

    models = args.models
    if models is None:
        models = str(work / "tiny")
        make_tiny(Path(models))
    pages, refs = make_demo_chapter(work / "demo", pages=args.pages, refs=3)
    chapter, references = open_chapter(pages), list_images([refs])
    settings = pipeline_settings(RunSettings(models=models, steps=args.steps, size=args.size, seed=7,
                                             input_style=args.input_style))
    pipeline = load_pipeline(models, "cpu", cache_dir=work / "cache", input_style=args.input_style)
    colorize_chapter(chapter, references, pipeline, ChapterProject(folder=work / "warmup"), settings=settings)

    seconds: dict[bool, list[float]] = {False: [], True: []}
    written: dict[bool, dict[str, bytes]] = {}
    stages: dict[bool, dict[str, float]] = {False: dict.fromkeys(STAGES, 0.0), True: dict.fromkeys(STAGES, 0.0)}
    hidden = 0.0
    for run in range(args.repeats):
        for overlap in (False, True) if run % 2 == 0 else (True, False):
            folder = work / f"out-{overlap}-{run}"
            start = time.perf_counter()
            report = colorize_chapter(chapter, references, pipeline, ChapterProject(folder=folder), settings=settings,
                                      overlap=overlap)
            seconds[overlap].append(time.perf_counter() - start)
            assert not report.failed, report.failed
            written[overlap] = {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}
            for page, stage, begin, end in report.intervals:
                stages[overlap][stage] += (end - begin) / args.repeats
            if overlap:
                hidden += hidden_seconds(report.intervals) / args.repeats
    one, ahead = statistics.median(seconds[False]), statistics.median(seconds[True])
    print(f"models {models}, {args.pages} pages at {args.size}, {args.steps} step(s), input {args.input_style}, "
          f"{args.repeats} run(s) of each mode alternated in one process")
    print(f"one page after another: {', '.join(f'{s:.2f}' for s in seconds[False])} s (median {one:.2f})")
    print(f"next page prepared ahead: {', '.join(f'{s:.2f}' for s in seconds[True])} s (median {ahead:.2f})")
    print(f"ratio overlapped / sequential: {ahead / one:.3f}")
    print(f"pages byte-identical: {written[False] == written[True]} ({len(written[True])} pages)")
    for overlap in (False, True):
        parts = ", ".join(f"{stage} {stages[overlap][stage]:.2f}" for stage in STAGES)
        print(f"pass 2 seconds per run, summed over pages ({'overlapped' if overlap else 'sequential'}): {parts}")
    print(f"preparation inside another page's ICP/GSRP (overlapped): {hidden:.2f} s per run")
    return 0 if written[False] == written[True] else 1


if __name__ == "__main__":
    sys.exit(main())
