"""A Ray worker that colors pages: its models loaded once, each page through the same ICP + GSRP call as a local run.

How it works: ray_pass makes an actor of PageWorker (ray.remote(PageWorker).options(num_gpus=1 or num_cpus=1)),
so importing this module never needs Ray. The actor resolves its WorkerSpec's models on its own machine
(engine.models.sources: each node reads and verifies its own model folder, as a local run does) and loads
them once (families.load_families), on the GPU Ray gave it. The driver sends a PagePayload per page: the
decoded page, its retrieval (canvas, mask), its prepared page (G frame) and its settings; `color` runs
run_guard.color_with_memory_retry, the function a local run calls, so the pixels are the local run's (each
page's own generators, no shared RNG state). Progress and notices go on the run's event queue (a
ray.util.queue.Queue the driver drains), previews only when asked; the cancel flag (a CancelFlag actor) is
read once per denoising step and between stages. A worker never reads the chapter or the references and
never writes a file: it returns the final image and its notes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from engine.core.events import CancelToken, Notice, Preview
from engine.core.geometry import WorkSize


@dataclass(frozen=True)
class WorkerSpec:
    """What each worker loads (the run's load options): `models` a models folder or preset name, resolved
    on the worker; `device` "auto" (the GPU Ray gave the actor, else the CPU), "cpu", "cuda"...;
    `input_style` the style whose models load when the worker starts (None: with its first page)."""

    models: str
    device: str = "auto"
    low_vram: bool = False
    vae_tiling: bool = False
    compile: bool = False
    max_vram: float | None = None
    work_size: WorkSize | None = None
    decode: str = "canvas"
    cache_dir: str | None = None
    input_style: str | None = None
    previews: bool = False


@dataclass(frozen=True)
class PagePayload:
    """One page as it travels to a worker: what ColorFlowPipeline.color takes (page.ColorJob's fields)."""

    page: Any  # io.chapter.PageImage: the decoded page (never its file)
    retrieval: Any  # rap.retrieval.PageRetrieval: canvas, mask, picks
    prepared: Any  # preprocess.page.PreparedPage: G frame and fits
    settings: Any  # settings.PipelineSettings of this page


class CancelFlag:
    """The run's cancel flag, as a tiny Ray actor every worker reads: the whole run, or single pages."""

    def __init__(self) -> None:
        self._set, self._pages = False, set()

    def set(self) -> None:
        self._set = True

    def cancel_page(self, name: str) -> None:
        self._pages.add(name)

    def clear(self) -> None:
        self._set, self._pages = False, set()

    def is_set(self, page: str | None = None) -> bool:
        return self._set or page in self._pages


class RemoteCancel(CancelToken):
    """A CancelToken reading a CancelFlag actor for the run or its page `page` (once seen set, it stays
    set without asking again)."""

    def __init__(self, flag, page: str | None = None) -> None:
        super().__init__()
        self._remote, self._page = flag, page

    @property
    def cancelled(self) -> bool:
        import ray

        if not super().cancelled and ray.get(self._remote.is_set.remote(self._page)):
            self.cancel()
        return super().cancelled


def worker_device(choice: str) -> str:
    """"auto": the GPU Ray gave this actor (it sees only that one), else the CPU; others as pick_device."""
    if choice == "auto":
        import ray

        return "cuda" if ray.is_initialized() and ray.get_gpu_ids() else "cpu"  # (outside Ray: no GPU given)
    from engine.core.devices import pick_device

    return pick_device(choice)


class PageWorker:
    """One Ray actor's models and its `color` (see the module doc)."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec, self.error, self._notices = spec, None, []
        try:  # an error here is raised by `ready`, as it was (a Ray actor dying in __init__ says less)
            from engine.pipelines.families import load_families

            self.device = worker_device(spec.device)
            self.families = load_families(
                spec.models, self.device, low_vram=spec.low_vram, cache_dir=Path(spec.cache_dir) if spec.cache_dir
                else None, vae_tiling=spec.vae_tiling, compile=spec.compile, max_vram=spec.max_vram,
                work_size=spec.work_size, decode=spec.decode, emit=self._notices.append, first=spec.input_style)
            self.families.release_retrieval()  # the driver retrieves: the CLIP encoder leaves the GPU
        except Exception as exc:
            self.error = exc

    def ready(self) -> str:
        """The device the models are on, once loaded; the loading error raised as it was."""
        if self.error is not None:
            raise self.error
        return self.device

    def identity(self) -> dict[str, str]:
        """What makes this worker's pixels (ray_identity.software_and_models of its models), its node's
        `hostname` and its `device`: the executor compares it with the driver's before any page goes out."""
        import socket

        from engine.pipelines.ray_identity import software_and_models

        return {**software_and_models(self.spec.models), "hostname": socket.gethostname(), "device": self.device}

    def color(self, payload: PagePayload, events, cancel_flag) -> tuple[Any, list[str]]:
        """ICP + GSRP of one page (run_guard.color_with_memory_retry): (the final image, its notes).
        Its events go on `events`; colorize.Interrupted when `cancel_flag` is set (within one step)."""
        from engine.icp.colorize import Interrupted
        from engine.pipelines.run_guard import color_with_memory_retry

        name = payload.page.source.name
        cancel = RemoteCancel(cancel_flag, name)
        if cancel.cancelled:
            raise Interrupted(f"page {name}: cancelled before it began")
        run = payload.settings
        if not self.spec.previews:
            run = replace(run, colorize=replace(run.colorize, preview_every=0))

        def emit(event) -> None:
            if self.spec.previews or not isinstance(event, Preview):
                events.put(event)

        family = self.families.for_style(run.input_style)  # loaded with the first page of its style
        while self._notices:  # what loading said (--max-vram's choice)
            emit(Notice(self._notices.pop(0).message, name))
        notes: list[str] = []
        final = color_with_memory_retry(family, payload.page, payload.retrieval, payload.prepared, run, emit=emit,
                                        cancel=cancel, notes=notes)
        return final, notes
