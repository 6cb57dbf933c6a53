"""bench pages --profile: a separate, uncounted pass per mode under torch.profiler, reduced to each stage's top operators."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

from engine.benchmarks.stage_timing import ReembeddingCache, StageRecorder, instrument

DEFAULT_TOP = 8
PROFILE_NOTE = (
    "profile: a separate pass per mode, after the timed one and not counted in it (profiler overhead "
    "stays out of the timed figures): the same chapter again with fresh ScreenStyle and embedding caches, "
    "each stage's calls recorded by torch.profiler ({activities}); per stage the top operators by self "
    "{clock} time summed over the pages (calls, self seconds, share = self seconds / the stage's wall time in "
    "the profiled pass, so the shares sum to at most 1; the rest is Python, PIL and numpy outside torch "
    "operators, and the profiler's own overhead)"
)


def _activities(device: str) -> list:
    from torch.profiler import ProfilerActivity

    cuda = device.startswith("cuda")
    return [ProfilerActivity.CPU, ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]


def profile_note(device: str) -> str:
    cuda = device.startswith("cuda")
    return PROFILE_NOTE.format(activities="CPU and CUDA activity" if cuda else "CPU activity",
                               clock="CUDA" if cuda else "CPU")


class ProfileRecorder(StageRecorder):
    """A StageRecorder for `instrument` that records each stage call with torch.profiler (no
    timing, no memory): operators' calls and self times are summed per stage over the pages."""

    def __init__(self, device: str) -> None:
        # Kineto prints two "USDT ... profiler_start/stop" lines on stderr per start; above its
        # highest level (5) nothing is printed. Read when the profiler first starts; a user's level wins.
        os.environ.setdefault("KINETO_LOG_LEVEL", "6")
        super().__init__(meter=None)
        self.cuda = device.startswith("cuda")
        self.activities = _activities(device)
        self.ops: dict[str, dict[str, list[float]]] = {}  # stage -> op -> [calls, self cpu us, self device us]
        self.wall_s: dict[str, float] = {}
        self._profiler = None

    def begin(self, page: str | tuple[str, ...], stage: str) -> None:
        from torch.profiler import profile

        if self.cuda:
            import torch

            torch.cuda.synchronize()
        self._profiler = profile(activities=self.activities, record_shapes=False, profile_memory=False,
                                 with_stack=False)
        self._profiler.start()
        self._open = (page, stage, time.perf_counter())

    def end(self) -> None:
        if self._open is None:
            return
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        page, stage, start = self._open
        wall = time.perf_counter() - start
        self._profiler.stop()
        self._open = None
        self.wall_s[stage] = self.wall_s.get(stage, 0.0) + wall
        table = self.ops.setdefault(stage, {})
        for event in self._profiler.key_averages():
            if getattr(event, "is_user_annotation", False):
                continue  # record_function ranges: they contain operators, they are none
            cell = table.setdefault(event.key, [0, 0.0, 0.0])
            cell[0] += event.count
            cell[1] += event.self_cpu_time_total
            cell[2] += getattr(event, "self_device_time_total", 0.0) if self.cuda else 0.0
        self._profiler = None

    def top(self, count: int = DEFAULT_TOP) -> dict[str, list[dict[str, Any]]]:
        """Per stage, the `count` operators with the most self time (device time on CUDA)."""
        result: dict[str, list[dict[str, Any]]] = {}
        for stage, table in self.ops.items():
            clock = 2 if self.cuda else 1
            total_s = max(self.wall_s.get(stage, 0.0), sum(cell[clock] for cell in table.values()) / 1e6)
            rows = sorted(table.items(), key=lambda item: (-item[1][clock], item[0]))[:count]
            result[stage] = []
            for name, (calls, cpu_us, device_us) in rows:
                row = {"op": name, "calls": int(calls), "self_s": cpu_us / 1e6}
                if self.cuda:
                    row["self_device_s"] = device_us / 1e6
                row["share"] = (row["self_device_s"] if self.cuda else row["self_s"]) / total_s if total_s else 0.0
                result[stage].append(row)
        return result


def profile_pass(pipeline, run: Callable[[Path], Any], work: Path, device: str, *, official: bool,
                 top: int = DEFAULT_TOP) -> dict[str, Any]:
    """Color the chapter once more with `run(out)` on `pipeline`, with fresh caches (so every stage
    does the work it did in the timed pass) and every stage call under torch.profiler. Returns
    {"stages": {stage: top operators}, "wall_s": {stage: profiled seconds}}; the pipeline's
    caches are put back afterwards."""
    from engine.preprocess.page import PagePreparer
    from engine.rap.embedding import EmbeddingCache
    from engine.rap.retrieval import Retriever

    preparer, retriever = pipeline.preparer, pipeline.retriever
    cache = ReembeddingCache() if official else EmbeddingCache(work / "cache" / "embeddings")
    pipeline.preparer = PagePreparer(preparer.networks, work / "cache" / "screenstyle")
    pipeline.retriever = Retriever(retriever.embedder, cache)
    recorder = ProfileRecorder(device)
    restore = instrument(pipeline, recorder, cache if official else None)
    try:
        run(work / "out")
    finally:
        restore()
        pipeline.preparer, pipeline.retriever = preparer, retriever
    return {"stages": recorder.top(top), "wall_s": dict(recorder.wall_s)}


def profile_tables(profile: dict[str, dict[str, list[dict[str, Any]]]], wall_s: dict[str, dict[str, float]]) -> list[str]:
    """The text output: one compact table per mode, its stages' top operators one under another."""
    lines: list[str] = []
    for mode, stages in profile.items():
        lines += ["", f"profile {mode} (separate uncounted pass; top operators by self time per stage):",
                  "| Stage (profiled s) | Operator | Calls | Self s | Share |", "|---|---|---:|---:|---:|"]
        for stage, rows in stages.items():
            label = f"{stage} ({wall_s.get(mode, {}).get(stage, 0.0):.2f})"
            for row in rows:
                seconds = row.get("self_device_s", row["self_s"])
                lines.append(f"| {label} | {row['op']} | {row['calls']} | {seconds:.3f} | {row['share']:.1%} |")
                label = ""
    return lines
