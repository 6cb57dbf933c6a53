"""The Ray workers of an app session: started on the first run with a Ray address, kept for the next runs.

How it works: the GUI queues the pages queued together as one colorize call of EngineSession (followed as one
job per page: app/worker.py submit_pages); with `ray` set in the run's options, each call colors its pages on
the same RayExecutor (ray_options.ray_executor), so every worker loads the models once per session, not once per
run. Options that change what the workers load or where they
run (address, workers, models, device, memory options, working size) stop the old workers and start new ones;
a session whose workers were all lost starts new ones on its next run; `close` stops them (the window closing).
"""

from __future__ import annotations

from typing import Any

from engine.core.events import EventSink, Notice, Progress, ignore
from engine.pipelines.ray_cluster import LOCAL


def _identity(executor) -> tuple:
    """What an executor's workers are: they serve a run whose executor has the same identity."""
    return executor.address, executor.requested, executor.spec


class SessionWorkers:
    """The session's RayExecutor (see the module doc): `current` (None: none started), `workers` its live ones."""

    def __init__(self) -> None:
        self.current: Any = None

    @property
    def workers(self) -> int | None:
        current = self.current  # read once: the window reads it while the worker thread may replace it
        return None if current is None else current.workers

    def executor(self, options, settings, emit: EventSink = ignore, page: str | None = None):
        """The entered RayExecutor for `options` (RunSettings with `ray` set) and their pipeline `settings`:
        the one kept from an earlier run when it fits, else a new one (the old one stopped first)."""
        from engine.pipelines.ray_options import ray_executor

        wanted = ray_executor(options, settings)
        kept = self.current
        if kept is not None and _identity(kept) == _identity(wanted) and kept.workers > 0:
            return kept
        self.close()
        emit(Progress("starting Ray workers", 0, 1, page))
        self.current = wanted.__enter__()
        where = "this computer" if options.ray == LOCAL else options.ray
        emit(Notice(f"coloring on Ray ({where}): {self.current.workers} worker(s), each with its own models", page))
        return self.current

    def close(self) -> None:
        """Stop the workers (their models leave their GPUs); the next run with Ray starts new ones."""
        executor, self.current = self.current, None
        if executor is None:
            return
        try:
            executor.__exit__(None, None, None)
        except Exception:  # the cluster is gone (it stopped, or the network): its workers went with it
            pass
