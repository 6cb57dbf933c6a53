"""A run's declared options (RunSettings) as the RayExecutor that colors its pages: one place for CLI and bench."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.core.options import RunSettings
    from engine.pipelines.ray_executor import RayExecutor
    from engine.pipelines.settings import PipelineSettings


def ray_executor(options: RunSettings, settings: PipelineSettings) -> RayExecutor:
    """The RayExecutor of `options` (--ray ADDRESS, --workers N, the load-time options each worker loads its
    models with) and their pipeline `settings` (working size, decode); not started: use it in a `with` block."""
    from engine.core.options import AUTO_STYLE
    from engine.pipelines.ray_executor import RayExecutor
    from engine.pipelines.ray_workers import WorkerSpec

    first = None if options.input_style == AUTO_STYLE else str(options.input_style)  # auto: with the first page
    spec = WorkerSpec(models=options.models, device=str(options.device), low_vram=options.low_vram,
                      vae_tiling=options.vae_tiling, compile=options.compile, max_vram=options.max_vram,
                      work_size=settings.size, decode=str(settings.colorize.decode), cache_dir=options.cache_dir,
                      input_style=first)
    return RayExecutor(spec, address=options.ray, workers=options.workers)
