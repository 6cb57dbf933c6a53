"""Guards around a page of a chapter run: one retry in the lowest-memory mode on out of memory, and a clean stop on a full or read-only disk."""

from __future__ import annotations

from engine.core.errors import OutOfMemory, RunStopped
from engine.core.events import EventSink, Notice, PageFailed
from engine.io.storage import storage_advice
from engine.project.state import ChapterProject


def color_with_memory_retry(pipeline, page, retrieval, prepared, settings, *, emit, cancel, notes: list[str]):
    """ICP + GSRP; out of memory once, the page is tried again in the lowest-memory mode (which
    then stays for the rest of the run); out of memory again, it fails with advice."""
    from engine.core.offload import free_memory, is_out_of_memory

    try:
        return pipeline.color(page, retrieval, prepared, settings, emit=emit, cancel=cancel)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        first = exc
    free_memory()
    changed = pipeline.use_lowest_memory()
    if not changed:  # nothing lower to switch to: retrying would fail the same way
        raise OutOfMemory(oom_advice(first)) from first
    emit(Notice(f"out of memory; trying the page again with {', '.join(changed)}", page.source.name))
    try:
        final = pipeline.color(page, retrieval, prepared, settings, emit=emit, cancel=cancel)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        free_memory()
        raise OutOfMemory(oom_advice(exc)) from exc
    notes.append(f"out of memory at first; colored with {', '.join(changed)}")
    return final


def oom_advice(exc: BaseException) -> str:
    return (f"out of memory even in the lowest-memory mode ({type(exc).__name__}); close other programs "
            "using the GPU, choose a smaller --size, or run with --device cpu")


def storage_stop(project: ChapterProject, report, emit: EventSink, *, name: str, exc: OSError,
                 again: str = "run again with --resume", in_flight: bool = True) -> RunStopped:
    """The disk is full or read-only: stop the run (every next page would fail the same way).
    The page in flight goes back to pending (unless `in_flight` is False: a new variation of a page
    that keeps its result); written pages and the saved project stay valid.
    The error carries the report; its message ends with how to go on (`again`)."""
    where = exc.filename or project.folder
    reason = f"{where}: {exc.strerror or exc} while writing page {name}"
    if in_flight:
        project.set_status(name, "pending")
    try:
        project.save()
    except OSError:
        pass  # the project file on disk is the last good one (atomic saves)
    report.failed[name] = reason
    emit(PageFailed(name, reason))
    return RunStopped(f"{reason}; the {len(report.done)} page(s) written before are kept. "
                      f"{storage_advice(exc).capitalize()}, then {again}", report)
