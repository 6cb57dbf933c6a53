"""A colorize/retrieve/eval run's events as a tqdm bar on stderr, with failures, notices and cancels written above it."""

from __future__ import annotations

import sys

from engine.core.errors import printable


def progress_sink(enabled: bool):
    """Turn engine events into a tqdm bar on stderr and collect the per-page report."""
    from tqdm import tqdm

    from engine.core.events import Cancelled, Notice, PageDone, PageFailed, Progress, Started

    state: dict = {"bar": None}

    def emit(event) -> None:
        bar = state["bar"]
        if isinstance(event, Started) and enabled:
            state["bar"] = tqdm(total=event.total, unit="page", desc=event.job, file=sys.stderr)
        elif isinstance(event, Progress) and bar is not None and event.page:
            steps = f" {event.step}/{event.total}" if event.stage == "ICP" else ""
            bar.set_postfix_str(printable(f"{event.stage}{steps} {event.page}"))
        elif isinstance(event, (PageDone, PageFailed)) and bar is not None:
            if isinstance(event, PageFailed):
                bar.write(printable(f"failed: {event.page}: {event.reason}"), file=sys.stderr)
            bar.update(1)
        elif isinstance(event, Cancelled) and bar is not None:
            bar.write("cancelled", file=sys.stderr)
        elif isinstance(event, Notice):
            text = printable(f"note: {event.page + ': ' if event.page else ''}{event.message}")
            bar.write(text, file=sys.stderr) if bar is not None else print(text, file=sys.stderr)

    def close() -> None:
        if state["bar"] is not None:
            state["bar"].close()

    return emit, close
