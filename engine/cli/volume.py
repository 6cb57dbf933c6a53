"""`colorize --volume` (each chapter its own project folder) and `colorize --ray [ADDRESS]`: models loaded once per run.

A colorize run holds its models in RunModels: loaded when the first chapter's inputs have been checked, and
kept for every chapter of a volume. Without --ray that is this process's pipeline (engine.pipelines.families);
with --ray the pipeline here only prepares and retrieves the pages, and a RayExecutor
(engine.pipelines.ray_pass) colors them on Ray workers that load the models once each. --ray is checked
before anything loads: Ray installed (the studio extra), a run Ray can reproduce, --workers only with --ray.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from engine.cli.options import add_options
from engine.core.errors import InputError, printable

VOLUME_HELP = (
    "each INPUT is a chapter of its own (a folder or a .cbz/.zip), or ONE INPUT folder holds the chapters (its "
    "subfolders and archives, in natural order); OUT is a folder that gets one project folder per chapter, "
    "OUT/<chapter name>/, each exported as usual (--format); the models load once for every chapter; one "
    "report lists each chapter; --resume goes on chapter by chapter")


RAY_BENCH_HELP = (
    "instead of the modes: color the chapter in this process, then on Ray workers (--ray alone: a local Ray; or a "
    "cluster's ADDRESS), and print the pages per hour of each and the scaling efficiency, Ray / (workers x local); "
    "our settings only (--modes, --profile and --threads do not apply)")


def add_studio_args(colorize: argparse.ArgumentParser) -> None:
    """colorize's --volume and the declared --ray [ADDRESS] and --workers N."""
    colorize.add_argument("--volume", action="store_true", help=VOLUME_HELP)
    add_options(colorize, ("ray", "workers"))


def check_ray(options, settings) -> None:
    """--ray's checks, before anything is loaded or written (InputError): --workers needs --ray; Ray must be
    installed; the settings must be ones Ray workers reproduce; the address must not be a file (a missing
    value made argparse take the INPUT)."""
    if options.ray is None:
        if options.workers is not None:
            raise InputError("--workers is the number of Ray workers: give --ray too (--ray alone starts Ray on "
                             "this machine), or leave --workers out")
        return
    from engine.pipelines.ray_cluster import STUDIO_HINT, ray_installed
    from engine.pipelines.ray_pass import check_ray_settings

    if not ray_installed():
        raise InputError(f"--ray: Ray is not installed here. {STUDIO_HINT}")
    if options.ray != "local" and Path(options.ray).expanduser().exists():
        raise InputError(f"--ray {options.ray}: that is a file or folder, not a Ray address; give --ray after INPUT, "
                         "or write --ray=ADDRESS")
    check_ray_settings(settings)


class RunModels(contextlib.ExitStack):
    """The models of one colorize run, for every chapter: `load(precheck)` loads them the first time
    (`precheck()` -> the model source resolved) and returns the chapter loop's pipeline; `executor` is the
    RayExecutor with --ray (started on that first load, stopped when the run ends), else None."""

    def __init__(self, options, settings) -> None:
        super().__init__()
        check_ray(options, settings)
        self.options, self.settings = options, settings
        self.executor = None
        self._pipeline = None

    def load(self, precheck: Callable[[], object]):
        if self._pipeline is not None:
            return self._pipeline
        from engine.core.devices import pick_device
        from engine.core.options import AUTO_STYLE
        from engine.pipelines.families import load_families

        options, settings = self.options, self.settings
        models = precheck()
        # Locally, one pipeline per model set the pages need, each loaded once; the chapter's style's set now (its
        # model errors before any page), another when its first page comes (a page's own style, auto). With --ray
        # none here: this pipeline only prepares and retrieves; the workers color.
        first = None if options.input_style == AUTO_STYLE or options.ray is not None else options.input_style
        self._pipeline = load_families(
            models, pick_device(options.device), low_vram=options.low_vram, cache_dir=options.cache_dir,
            vae_tiling=options.vae_tiling, compile=options.compile, max_vram=options.max_vram,
            work_size=settings.size, decode=settings.colorize.decode, first=first,
            emit=lambda note: print(printable(note.message), file=sys.stderr))
        if options.ray is not None:
            from engine.pipelines.ray_options import ray_executor

            self.executor = self.enter_context(ray_executor(options, settings))
            where = "this machine" if options.ray == "local" else options.ray
            print(printable(f"colorflow: coloring on Ray ({where}): {self.executor.workers} worker(s)"), file=sys.stderr)
        return self._pipeline


@dataclass(frozen=True)
class VolumeChapter:
    """One chapter of a colorize run: its INPUT paths, project folder, CBZ to write (or None) and name."""

    inputs: list[str]
    folder: Path
    cbz: Path | None
    name: str


def volume_chapters(args) -> list[VolumeChapter]:
    """--volume's chapters, in order, each into OUT/<name>/; checked before anything loads (InputError): OUT a
    folder, each chapter a folder or .cbz/.zip with images, no two chapters of one name."""
    from natsort import natsorted, ns

    from engine.io.chapter import ARCHIVE_EXTENSIONS, list_images

    out = args.out.expanduser()
    if out.suffix.lower() == ".cbz":
        raise InputError(f"--out {out}: with --volume OUT is the folder that gets one project folder per chapter; "
                         "give a folder (--format cbz writes each chapter's CBZ in its own folder)")
    paths = [Path(p).expanduser() for p in args.input]

    def is_chapter(path: Path) -> bool:  # OUT inside the volume folder (found again by --resume) is not a chapter
        return (not path.name.startswith(".") and path.resolve() != out.resolve()
                and (path.is_dir() or path.suffix.lower() in ARCHIVE_EXTENSIONS))

    if len(paths) == 1 and paths[0].is_dir():  # a volume folder: its subfolders and archives are the chapters
        volume = paths[0]
        paths = natsorted((p for p in volume.iterdir() if is_chapter(p)), key=lambda p: p.name,
                          alg=ns.PATH | ns.IGNORECASE)
        if not paths:
            raise InputError(f"INPUT {volume}: --volume found no chapter in it (subfolders or .cbz/.zip files); give "
                             "the volume folder that holds the chapters, or colorize this chapter without --volume")
    chapters, names = [], {}
    for path in paths:
        if not (path.is_dir() or (path.is_file() and path.suffix.lower() in ARCHIVE_EXTENSIONS)):
            raise InputError(f"INPUT {path}: with --volume each INPUT is a chapter: a folder or a .cbz/.zip archive")
        try:
            list_images([path])  # no images, unreadable archive: said now, before any chapter runs
        except InputError as exc:
            raise InputError(f"INPUT {exc}") from exc
        name = path.stem if path.is_file() else path.name
        if name.casefold() in names:
            raise InputError(f"INPUT: two chapters are named {name!r} ({names[name.casefold()]}, {path}); each gets "
                             "OUT/<name>/: rename one")
        names[name.casefold()] = path
        chapters.append(VolumeChapter([str(path)], out / name, None, name))
    return chapters


def report_volume(args, chapters: list[VolumeChapter], runs: list[tuple], finish: Callable[..., int],
                  workers: int | None) -> int:
    """The volume's report: each chapter's, as a single run's (`finish(args, *run, collect=...)`), under its
    name; with --json one document with every chapter. Exit 1 when a page of any chapter failed."""
    collected: list[dict] = []
    codes = []
    for chapter, run in zip(chapters, runs):
        if not args.json:
            print(printable(f"chapter {chapter.name}:"))
        codes.append(finish(args, *run, collect=collected))
    failed = sum(len(run[1].failed) for run in runs)
    done = sum(len(run[1].done) for run in runs)
    if args.json:
        print(json.dumps({"out": str(args.out.expanduser().resolve()), "ray": args.ray, "workers": workers,
                          "pages_done": done, "pages_failed": failed,
                          "chapters": [{"chapter": c.name, **doc} for c, doc in zip(chapters, collected)]}, indent=2))
    else:
        print(printable(f"volume: {done} page(s) colored in {len(chapters)} chapter(s) into "
                        f"{args.out.expanduser()}; {failed} failed"))
    return max(codes, default=0)


def cmd_bench_ray(args, options) -> int:
    """`colorflow bench pages --ray [ADDRESS] [--workers N]` (its options checked by bench pages, the models present):
    pages per hour of this process vs Ray workers and the scaling efficiency, as text or --json."""
    from engine.benchmarks.ray_scaling import bench_ray, ray_text
    from engine.core.geometry import WorkSize
    from engine.pipelines.settings import pipeline_settings

    check_ray(options, pipeline_settings(options))
    result = bench_ray(options.models, str(options.device), address=options.ray, workers=options.workers,
                       pages=args.pages, refs=args.ref_count, steps=options.steps,
                       size=WorkSize.parse(options.size) if options.size else None, input_style=options.input_style,
                       seed=options.seed, warmup=args.warmup)
    print(json.dumps(result, indent=2) if args.json else ray_text(result))
    return 0
