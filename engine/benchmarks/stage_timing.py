"""Per-stage wall time and peak memory of a pipeline run: the meter, the recorder and the stage wrappers."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterator

from engine.rap.embedding import EmbeddingCache

MIB = 2**20


class ReembeddingCache(EmbeddingCache):
    """The official app's retrieval: no embedding survives from one page to the next. Reference
    embeddings are never found while `reembed_references` is set (the page's first retrieval);
    our chapter loop's second, cached retrieval of the same page finds them, as the official
    app retrieves once per page."""

    def __init__(self) -> None:
        super().__init__(None)
        self.reembed_references = True

    def get(self, encoder_id, sha256, size, role, boxes):
        if role == "ref" and self.reembed_references:
            return None
        return super().get(encoder_id, sha256, size, role, boxes)


def _status_kib(field: str) -> int | None:
    """A memory line of /proc/self/status (VmRSS, VmHWM) in KiB; None where there is none."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak_rss() -> bool:
    """Linux: set the process's peak RSS (VmHWM, which getrusage's ru_maxrss follows) back to
    its current RSS, by writing 5 to /proc/self/clear_refs (Linux 4.0+). False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return _status_kib("VmHWM") is not None
    except OSError:
        return False


def _max_rss_bytes() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def release_freed_memory() -> bool:
    """Hand memory that Python and torch freed back to the OS (glibc's malloc_trim), so that the
    next mode's RSS starts near the process baseline instead of on an earlier mode's freed heap.
    False where there is no glibc (macOS, Windows, musl): RSS then keeps what the allocator holds."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    try:
        return bool(name) and bool(ctypes.CDLL(name).malloc_trim(0) >= 0)
    except (OSError, AttributeError):
        return False


class MemoryMeter:
    """Peak memory between begin() and end().

    CUDA: torch.cuda.max_memory_allocated, its peak reset at begin. CPU on Linux: the process's
    peak RSS (VmHWM), reset at begin through /proc/self/clear_refs, so each stage gets its own
    exact peak. Elsewhere: getrusage's ru_maxrss, which is monotonic over the process: a stage
    shows an increase only where it sets a new all-time peak. (A thread sampling the RSS was
    tried and dropped: on a small CPU its GIL wake-ups slowed the tiny models' stages by half.)
    `added_mib` is the peak minus the value when the stage began."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.resettable = not self.cuda and _reset_peak_rss()
        if self.cuda:
            self.kind = "torch.cuda.max_memory_allocated (reset at each stage start)"
        elif self.resettable:
            self.kind = ("process peak RSS (Linux VmHWM, reset at each stage start via /proc/self/clear_refs; "
                         "getrusage's ru_maxrss follows it)")
        else:
            self.kind = ("getrusage ru_maxrss, the process's all-time peak RSS (monotonic: added_mib is non-zero "
                         "only where a stage sets a new peak)")
        self._base = 0
        self.process_peak = 0  # the highest stage peak seen

    def now(self) -> int:
        if self.cuda:
            import torch

            return torch.cuda.memory_allocated()
        rss = _status_kib("VmRSS")
        return rss * 1024 if rss is not None else _max_rss_bytes()

    def begin(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = self.now()
        elif self.resettable:
            _reset_peak_rss()
            self._base = self.now()
        else:
            self._base = _max_rss_bytes()

    def end(self) -> dict[str, float]:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        elif self.resettable:
            peak = (_status_kib("VmHWM") or 0) * 1024
        else:
            peak = _max_rss_bytes()
        self.process_peak = max(self.process_peak, peak)
        return {"peak_mib": peak / MIB, "added_mib": max(0, peak - self._base) / MIB}


class StageRecorder:
    """Seconds and memory per (page, stage), summed over the calls of a stage on a page."""

    def __init__(self, meter: MemoryMeter) -> None:
        self.meter = meter
        self.pages: dict[str, dict[str, dict[str, float]]] = {}
        self._open: tuple[tuple[str, ...], str, float] | None = None

    def begin(self, page: str | tuple[str, ...], stage: str) -> None:
        """`page`: a page, or the pages of one call (several pages' ICP in one denoising call):
        its seconds are then shared equally among them, its peak memory counts for each."""
        self.meter.begin()
        self._open = ((page,) if isinstance(page, str) else tuple(page), stage, time.perf_counter())

    def end(self) -> None:
        if self._open is None:
            return
        memory = self.meter.end()
        pages, stage, start = self._open
        self._open = None
        seconds = (time.perf_counter() - start) / len(pages)
        for page in pages:
            cell = self.pages.setdefault(page, {}).setdefault(stage, {"s": 0.0})
            cell["s"] += seconds
            for key, value in memory.items():
                cell[key] = max(cell.get(key, 0.0), value)

    @contextlib.contextmanager
    def stage(self, page: str | tuple[str, ...], stage: str) -> Iterator[None]:
        self.begin(page, stage)
        try:
            yield
        finally:
            self.end()


def instrument(pipeline, recorder: StageRecorder, official_cache: ReembeddingCache | None = None,
               preprocess_stage: str = "ScreenStyle"):
    """Wrap the pipeline's stage methods (the chapter loop itself runs unchanged): preprocess is
    `preprocess_stage` (ScreenStyle; "Lines" for the line-art styles), retrieval RAP, and `color_batch`
    (which `color` calls: one page or several in one denoising call) is split into ICP and each page's GSRP at their GSRP-start events. Stages must
    run one at a time (the chapter loop with overlap=False). Returns a function that puts the
    unwrapped methods back."""
    from engine.core.events import Progress, ignore

    prepare, retrieve, color_batch = pipeline.prepare, pipeline.retrieve, pipeline.color_batch
    seen: set[str] = set()

    def timed_prepare(page, inputs):
        with recorder.stage(page.source.name, preprocess_stage):
            return prepare(page, inputs)

    def timed_retrieve(page, references, choices, prepared):
        name = page.source.name
        if official_cache is not None:
            official_cache.reembed_references = name not in seen
        seen.add(name)
        with recorder.stage(name, "RAP"):
            return retrieve(page, references, choices, prepared)

    def timed_color_batch(jobs, *, emit=ignore, cancel=None):
        def split(event) -> None:
            if isinstance(event, Progress) and event.stage == "GSRP" and event.step == 0:
                recorder.end()
                recorder.begin(event.page, "GSRP")
            emit(event)

        recorder.begin(tuple(job.page.source.name for job in jobs), "ICP")
        try:
            return color_batch(jobs, emit=split, cancel=cancel)
        finally:
            recorder.end()

    pipeline.prepare, pipeline.retrieve, pipeline.color_batch = timed_prepare, timed_retrieve, timed_color_batch

    def restore() -> None:
        pipeline.prepare, pipeline.retrieve, pipeline.color_batch = prepare, retrieve, color_batch

    return restore
