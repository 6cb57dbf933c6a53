"""RayExecutor: a run's Ray workers (one PageWorker actor per GPU Ray sees, or CPU actors), checked against this
computer's software and models, and replaced when lost.

How it works: a context manager, one per run, shared by every chapter of it: it connects (ray_cluster.connect),
starts the actors, each loading the models once, refuses them unless each runs this computer's software and
models (check_workers: else its pages would not have a local run's bytes), and owns the run's event queue and
cancel flag. A worker that dies is `lose`t; `replace` starts a new one in its place (as many replacements as
workers started, per executor), which `revive` lets in once its models loaded and it passed the same check;
ray_pass.RayPagePass sends it pages from then on. One not ready after WORKER_START_S (the cluster has no
free GPU for it) is given up.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from engine.core.errors import ColorFlowError
from engine.models.sources import MODEL_SOURCE_NAMES
from engine.pipelines.chapter_pages import failure_reason
from engine.pipelines.ray_cluster import actor_resources, connect, import_ray
from engine.pipelines.ray_identity import identity_differences, software_and_models
from engine.pipelines.ray_workers import CancelFlag, PageWorker, WorkerSpec

# A worker (or a lost one's replacement) not ready by then is left out: not placed, or its models still loading.
WORKER_START_S = 600.0


class RayExecutor:
    """The run's Ray workers (see the module doc): `with RayExecutor(spec) as executor:`; `workers` the
    live ones, `actors` every one started (a lost one stays at its index)."""

    def __init__(self, spec: WorkerSpec, *, address: str | None = None, workers: int | None = None,
                 max_retries: int = 2) -> None:
        if spec.models not in MODEL_SOURCE_NAMES:  # a folder: this absolute path on every node (each its own copy)
            spec = replace(spec, models=str(Path(spec.models).expanduser().resolve()))
        self.spec, self.address, self.requested, self.max_retries = spec, address, workers, max_retries
        self.actors: list = []
        self.lost: set[int] = set()
        self.devices: list[str] = []
        self.events = self.flag = self._worker = None
        self.replacements = 0  # lost workers that may still be replaced (as many as started, per executor)
        self.starting: dict = {}  # the `ready` call of a worker started in a lost one's place -> (number, since)

    @property
    def workers(self) -> int:
        return len(self.actors) - len(self.lost)

    def live(self) -> list[int]:
        return [number for number in range(len(self.actors)) if number not in self.lost]

    def __enter__(self) -> RayExecutor:
        connect(self.address)
        ray = import_ray()
        from ray.util.queue import Queue

        count, resources = actor_resources(self.requested, cpu_only=self.spec.device == "cpu")
        try:
            self.events = Queue(actor_options={"num_cpus": 0})
            self.flag = ray.remote(CancelFlag).options(num_cpus=0).remote()
            worker = self._worker = ray.remote(PageWorker).options(**resources, max_restarts=0, max_task_retries=0)
            self.actors = [worker.remote(self.spec) for _ in range(count)]
            self.devices = self._ready_devices("a GPU" if "num_gpus" in resources else "a CPU")
            self.replacements = len(self.actors)
            self.check_workers(software_and_models(self.spec.models))  # refused: stopped below, as a failed load
        except BaseException as exc:
            self.__exit__(None, None, None)
            cause = getattr(exc, "cause", None)
            if isinstance(cause, ColorFlowError):
                raise cause from None  # the models' own error (a bad folder, a failed check)
            if isinstance(exc, ray.exceptions.RayError):
                reason = failure_reason(cause) if isinstance(cause, Exception) else str(exc).splitlines()[0]
                raise ColorFlowError(f"a Ray worker could not load the models: {reason}") from exc
            raise
        return self

    def _ready_devices(self, each: str) -> list[str]:
        """Each worker's device once its models loaded. Workers not ready after WORKER_START_S (the cluster has
        no free resources for them, e.g. its GPUs busy with another job) are stopped and left out; with none
        ready, a ColorFlowError says so instead of waiting for ever."""
        ray = import_ray()
        calls = {actor.ready.remote(): actor for actor in self.actors}
        done, waiting = ray.wait(list(calls), num_returns=len(calls), timeout=WORKER_START_S)
        for call in waiting:
            ray.kill(calls[call])
        if not done:
            raise ColorFlowError(f"no Ray worker was ready after {WORKER_START_S:g} s ({len(calls)} asked for, "
                                 f"{each} each): the cluster has no free resources for them (`ray status` shows "
                                 "what is in use), or loading the models takes longer; free them, or give fewer "
                                 "--workers")
        self.actors = [actor for call, actor in calls.items() if call in done]  # started in order, kept in order
        return ray.get([call for call in calls if call in done])

    def check_workers(self, expected: dict[str, str], numbers: list[int] | None = None) -> None:
        """Every live worker's identity (or these `numbers`': PageWorker.identity) against `expected` (this
        computer's ray_identity.software_and_models): ColorFlowError with one sentence per item and node that
        differs, in one line (the CLI and the app print an error's newlines escaped). It only raises: the
        workers keep running (__enter__ stops them)."""
        numbers = self.live() if numbers is None else numbers
        identities = import_ray().get([self.actors[number].identity.remote() for number in numbers])
        lines = [line for identity in identities for line in identity_differences(expected, identity)]
        if lines:
            raise ColorFlowError(". ".join(dict.fromkeys(lines)))  # two workers of one node: said once

    def __exit__(self, *exc) -> None:
        ray = import_ray()
        for actor in [*self.actors, self.flag]:
            if actor is not None:
                ray.kill(actor)
        if self.events is not None:
            ray.kill(self.events.actor)
        self.actors, self.events, self.flag = [], None, None
        self.lost.clear()  # no worker left to count
        self.starting.clear()

    def lose(self, number: int) -> None:
        """Worker `number` died (or is unreachable): no more pages for it, unless `replace` starts another."""
        self.lost.add(number)
        import_ray().kill(self.actors[number])

    def replace(self, number: int) -> bool:
        """Start a new worker in lost worker `number`'s place (it loads the models, then `revive` lets it in);
        False when this executor has replaced as many workers as it started (a cluster losing workers over and
        over is not fed more)."""
        if self.replacements <= 0 or number not in self.lost:
            return False
        self.replacements -= 1
        self.actors[number] = self._worker.remote(self.spec)
        self.starting[self.actors[number].ready.remote()] = (number, time.monotonic())
        return True

    def revive(self, ref) -> tuple[int, str | None]:
        """A replacement's `ready` returned: (its number, None) once its models loaded and it runs this computer's
        software and models (live again), else (its number, why it was given up)."""
        ray = import_ray()
        number, _since = self.starting.pop(ref)
        try:
            ray.get(ref)
            self.check_workers(software_and_models(self.spec.models), [number])
        except Exception as exc:
            ray.kill(self.actors[number])
            cause = getattr(exc, "cause", None)
            return number, failure_reason(cause if isinstance(cause, Exception) else exc)
        self.lost.discard(number)
        return number, None

    def overdue(self, now: float) -> list:
        """The replacements still not ready after WORKER_START_S (the cluster cannot place them)."""
        return [ref for ref, (_number, since) in self.starting.items() if now - since > WORKER_START_S]

    def give_up(self, ref) -> int:
        number, _since = self.starting.pop(ref)
        import_ray().kill(self.actors[number])
        return number

    def drain(self) -> list:
        """The workers' events queued so far, in order."""
        size = self.events.size()
        return self.events.get_nowait_batch(size) if size else []
