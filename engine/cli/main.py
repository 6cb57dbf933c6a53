"""Command-line interface: `colorflow retrieve|models|eval|bench ...` (see --help of each)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from engine.core.errors import ColorFlowError, InputError, printable
from engine.cli.evaluate import add_bench_commands, add_eval_commands, cmd_bench, cmd_eval, eval_argv
from engine.cli.models import add_models_commands, cmd_models, print_check_progress
from engine.cli.prechecks import check_device_and_model_names, check_out_not_a_file
from engine.cli.series_run import open_references, reference_pool
from engine.cli.options import Default, add_options, options_from_args
from engine.core.options import InputStyle
from engine.cli.train import add_train_commands, cmd_train
from engine.cli.series import add_series_commands, cmd_series
from engine.cli.consistency import add_consistency_command, cmd_consistency
from engine.cli.volume import add_studio_args
from engine.cli.progress import progress_sink as _progress_sink  # tests hook it here

if TYPE_CHECKING:
    from engine.models.sources import ModelPaths

EXIT_OK, EXIT_PAGES_FAILED, EXIT_USAGE = 0, 1, 2

DESCRIPTION = """\
ColorFlow: color black-and-white manga chapters from colored reference pages.

INPUT is a folder, a .cbz/.zip archive or image files; REFS are folders, archives or images.
Exit codes: 0 ok, 1 some pages failed (the report lists them), 2 bad usage or input,
130 interrupted (Ctrl+C; pages already done are kept: colorize --resume continues).
Run `colorflow COMMAND --help` for the options of each command.
"""


CHAPTER_OPTIONS = ("size", "input_style", "seed", "procedure", "series", "rolling_refs")
RUN_OPTIONS = ("models", "device", "cache_dir")
COLOR_OPTIONS = ("steps", "guidance", "low_vram", "compile", "decode", "vae_tiling", "output_size", "keep_ink",
                 "gsrp_batchnorm", "batch_pages", "max_vram")


def _add_chapter_args(parser: argparse.ArgumentParser, out_help: str) -> None:
    """INPUT, --refs, --out and --json, shared by retrieve and colorize."""
    parser.add_argument("input", nargs="+", metavar="INPUT", help="chapter folder, .cbz/.zip or page images")
    parser.add_argument("--refs", nargs="+", metavar="REFS", help="colored reference images, folders or archives "
                        "(may be left out with --series: the library's references serve)")
    parser.add_argument("--out", required=True, type=Path, metavar="OUT", help=out_help)
    parser.add_argument("--json", action="store_true", help="print a machine-readable per-page report on stdout")


def _open_inputs(args, folder: Path):
    """Chapter, references, project (in `folder`) and the project's lock (held: use it in a
    `with` block) of a retrieve/colorize run, checked before any model loads. Another process on
    the project is refused."""
    from engine.io.chapter import open_chapter
    from engine.io.projectlock import ProjectLock
    from engine.project.state import ChapterProject

    try:
        chapter = open_chapter(args.input)
    except InputError as exc:
        raise InputError(f"INPUT {exc}") from exc
    references = open_references(args, folder)
    from engine.io.cachedir import check_cache_folder
    from engine.io.storage import check_output_folder, check_outside_inputs

    try:
        check_outside_inputs(folder, args.input)
    except InputError as exc:
        raise InputError(f"--out {exc}") from exc
    if args.cache_dir is not None:
        try:
            check_cache_folder(args.cache_dir)
        except ColorFlowError as exc:
            raise type(exc)(f"--cache-dir {exc}") from exc
    check_out_not_a_file(args, folder)
    check_device_and_model_names(args)  # before OUT is made: a refused run leaves no empty folder
    folder = folder.expanduser().resolve()
    check_output_folder(folder)  # read-only or not creatable: said now, before the lock or any model
    lock = ProjectLock(folder).acquire()
    try:
        project = ChapterProject.open_or_create(folder)
    except BaseException:
        lock.release()
        raise
    project.inputs = [str(Path(p).expanduser().resolve()) for p in args.input]
    return chapter, references, project, lock


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="colorflow", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    from engine import __version__

    parser.add_argument("--version", action="version", version=f"colorflow {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    retrieve = commands.add_parser(
        "retrieve",
        help="retrieve reference patches and build the canvas and mask for each page",
        description="Stage 1 (RAP) only. Writes, per page, a folder NNN_name/ in OUT with "
        "canvas.png, mask.png (white = area to color) and retrieval.json (query boxes, "
        "the 3 picks per query patch with scores). Pins and rejects stored in the project "
        "file OUT/colorflow-project.json are applied.",
    )
    _add_chapter_args(retrieve, "output / project folder")
    add_options(retrieve, CHAPTER_OPTIONS + RUN_OPTIONS, only={"input_style": tuple(InputStyle)})  # one style a run

    colorize = commands.add_parser(
        "colorize",
        help="color a chapter: retrieval (RAP), diffusion colorization (ICP), super-resolution (GSRP)",
        description="Colors every page of INPUT using the colored REFS. Writes OUT/NNN_name.png "
        "per page at the page's own size (nothing cropped), and keeps the chapter project (pins, rejects, "
        "per-page status) in OUT/colorflow-project.json. OUT ending in .cbz is the colored chapter "
        "itself: that CBZ is written, and the pages and project go in NAME.colorflow/ beside it. "
        "A page that fails is reported and the others go on (exit code 1).",
    )
    _add_chapter_args(colorize, "project folder; or NAME.cbz: write that CBZ, with the project folder "
                      "NAME.colorflow/ beside it")
    add_options(colorize, CHAPTER_OPTIONS + COLOR_OPTIONS + ("export_format",) + RUN_OPTIONS,
                defaults={"export_format": Default(None, "png; cbz when OUT ends in .cbz")})
    colorize.add_argument("--include-uncolored", action="store_true",
                          help="when some pages could not be colored, export the CBZ anyway with the original "
                          "pages in their place (by default such an export is refused, never written short)")
    colorize.add_argument("--resume", action="store_true",
                          help="skip pages already done with the same settings, picks and models")
    add_studio_args(colorize)  # --volume, --ray [ADDRESS], --workers N (engine/cli/volume.py)

    demo = commands.add_parser(
        "demo",
        help="write a small generated chapter and colored references to try the commands on",
        description="Writes DIR/chapter/ (gray pages) and DIR/refs/ (colored references), "
        "generated and deterministic, and prints the colorize command that colors them with the "
        "tiny models at a small working size and a few steps (well under a minute of CPU).",
    )
    demo.add_argument("dir", type=Path, metavar="DIR")
    demo.add_argument("--pages", type=int, default=3, help="number of pages (default 3)")
    demo.add_argument("--ref-count", type=int, default=3, help="number of references (default 3)")

    add_models_commands(commands)
    add_train_commands(commands)
    add_series_commands(commands)

    add_bench_commands(commands)
    add_eval_commands(commands)
    add_consistency_command(commands)
    return parser


def _precheck(args) -> ModelPaths:
    """That the models are present (the device was checked with the inputs), without torch.
    Returns the model source resolved, once for the whole run (`tiny` is built here on first use)."""
    from engine.core.paths import run_text_embeddings_dir
    from engine.models.line_art import require_line_art
    from engine.models.sources import check_models, resolve_models

    models = check_models(args.models, print_check_progress) or resolve_models(args.models)
    # a line-art style's optional files: missing, one line naming their size and the download command (the
    # T5 weights only while the prompt embeddings are not in the run's cache folder)
    require_line_art("official" if args.models == "official" else models, str(getattr(args, "input_style", "")),
                     run_text_embeddings_dir(getattr(args, "cache_dir", None)))
    return models


def cmd_retrieve(args) -> int:
    from engine.core.devices import pick_device
    from engine.core.errors import RunStopped
    from engine.pipelines.chapter import retrieve_chapter
    from engine.pipelines.families import style_preparers
    from engine.pipelines.page import load_retriever
    from engine.pipelines.settings import pipeline_settings

    options = options_from_args(args)
    inputs = pipeline_settings(options).inputs  # size, style, seed and procedure checked as colorize does
    if args.out.suffix.lower() == ".cbz":
        raise InputError(f"--out {args.out}: retrieve writes a folder of canvases, not a CBZ; give a folder")
    chapter, references, project, lock = _open_inputs(args, args.out)
    stopped = None
    try:
        with lock:  # held until the run ends, so a second process on OUT is refused
            pool = reference_pool(args, project, references)  # --series, --rolling-refs: before any model
            models = _precheck(args)
            device = pick_device(options.device)
            retriever = load_retriever(models, device, options.cache_dir)
            preparers = style_preparers(models, device, options.cache_dir)  # each page's own style (the project's)
            preparers(options.input_style)  # the chapter's style loads now: its models' errors before any page
            emit, close = _progress_sink(not args.json)
            try:
                report = retrieve_chapter(chapter, references, retriever, project, emit=emit,
                                          preparers=preparers, inputs=inputs, pool=pool)
            except RunStopped as exc:  # disk full or read-only mid-run: pages written so far are kept
                report, stopped = exc.report, exc
            finally:
                close()
    except KeyboardInterrupt:
        return _interrupted(project, chapter, "retrieved", "run the same command again to retrieve every page")
    return _finish(args, project, report, "retrieved", lock, stopped)


def _output_places(args) -> tuple[Path, Path | None, str]:
    """(project folder, CBZ file or None, export format) of `colorize --out`: OUT ending in .cbz
    is that file, with the project folder NAME.colorflow beside it; else OUT is the folder."""
    from engine.core.options import ExportFormat

    out = args.out.expanduser()
    if out.suffix.lower() != ".cbz":
        return out, None, args.export_format or ExportFormat.PNG
    if args.export_format not in (None, ExportFormat.CBZ):
        raise InputError(f"--out {out} names a CBZ but --format is {args.export_format}: drop --format, or give "
                         "--out a folder for the pages and their export")
    if out.is_dir():
        raise InputError(f"--out {out} is a folder (made by an older ColorFlow?): give the CBZ another name, or "
                         "move the folder away")
    taken = {Path(p).expanduser().resolve() for p in [*args.input, *(args.refs or [])]}
    if out.resolve() in taken:
        raise InputError(f"--out {out} is one of the inputs; it would be overwritten: give the CBZ another name")
    return out.with_suffix(".colorflow"), out, ExportFormat.CBZ


def cmd_colorize(args) -> int:
    from engine.cli.volume import RunModels, VolumeChapter, report_volume, volume_chapters
    from engine.pipelines.settings import pipeline_settings

    if args.volume:
        chapters, args.export_format = volume_chapters(args), args.export_format or "png"
    else:
        folder, cbz, args.export_format = _output_places(args)
        chapters = [VolumeChapter(args.input, folder, cbz, folder.name)]
    options = options_from_args(args)
    runs = []
    with RunModels(options, pipeline_settings(options)) as models:  # --ray checked before anything loads
        for chapter in chapters:  # every chapter with the same models, loaded by the first
            args.input = chapter.inputs
            runs.append(_colorize_chapter(args, chapter.folder, chapter.cbz, models))
            if isinstance(runs[-1], int):  # Ctrl+C: what is kept and how to go on was said
                return runs[-1]
    workers = models.executor.workers if models.executor is not None else None
    return report_volume(args, chapters, runs, _finish, workers) if args.volume else _finish(args, *runs[0])


def _colorize_chapter(args, folder: Path, cbz: Path | None, models):
    """One chapter (args.input) colored into `folder` (and `cbz`) with the run's models (engine.cli.volume.RunModels):
    _finish's arguments, or the exit code of a run stopped by Ctrl+C."""
    from engine.io.export import IncompleteExport, export_project
    from engine.pipelines.chapter import colorize_chapter

    options, settings = models.options, models.settings
    chapter, references, project, lock = _open_inputs(args, folder)
    stopped, exports, export_notes = None, [], []
    try:
        with lock:  # held until the export is written, so a second process on OUT is refused
            from engine.core.errors import RunStopped
            from engine.io.storage import check_output_folder, estimate_output_bytes

            pool = reference_pool(args, project, references, cbz)  # --series, --rolling-refs: before any model
            check_output_folder(project.folder, estimate_output_bytes(chapter.sources))
            pipeline = models.load(lambda: _precheck(args))  # the first chapter loads them, once for the run
            emit, close = _progress_sink(not args.json)
            try:
                report = colorize_chapter(chapter, references, pipeline, project, settings=settings, emit=emit,
                                          resume=args.resume, pool=pool, executor=models.executor)
            except RunStopped as exc:  # disk full or read-only mid-run: pages written so far are kept
                report, stopped = exc.report, exc
            finally:
                close()
            if stopped is None:
                try:
                    exports = [str(p) for p in export_project(
                        project, chapter, options.export_format, destination=cbz,
                        include_uncolored=args.include_uncolored,
                        emit=lambda note: export_notes.append(f"{note.page}: {note.message}"))]
                except IncompleteExport as exc:  # the per-page report still prints; nothing short is written
                    print(printable(f"colorflow: {options.export_format} export not written: {exc}"), file=sys.stderr)
    except KeyboardInterrupt:
        return _interrupted(project, chapter, "done", "run the same command with --resume to continue")
    return project, report, "colored", lock, stopped, exports, export_notes


def _finish(args, project, report, verb: str, lock, stopped=None, exports: list[str] | None = None,
            export_notes: list[str] | None = None, collect: list[dict] | None = None) -> int:
    """The per-page report (--json: into `collect` when given), then what stopped the run early and a lock
    file that had to stay: exit 1 when a page failed or was left by the stop."""
    _print_report(args, project, report, verb, exports, export_notes, collect)
    if stopped is not None:
        print(f"colorflow: error: {printable(str(stopped))}", file=sys.stderr)
    if lock.left_behind:
        print(printable(f"note: could not remove the lock file {lock.path} ({lock.left_behind}); its run has "
                        "ended, so the next run takes it over"), file=sys.stderr)
    return EXIT_PAGES_FAILED if report.failed else EXIT_OK


EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a command stopped by Ctrl+C


def _interrupted(project, chapter, status: str, how_to_go_on: str) -> int:
    """Ctrl+C during a run: what is kept (saved after every page) and how to go on."""
    names = set(chapter.page_names)
    kept = sum(1 for page in project.pages if page.status == status and page.name in names)
    print(printable(f"colorflow: interrupted; {kept} of {len(names)} page(s) {status} are kept in "
                    f"{project.folder}: {how_to_go_on}"), file=sys.stderr)
    return EXIT_INTERRUPTED


def _print_report(args, project, report, verb: str, exports: list[str] | None = None,
                  export_notes: list[str] | None = None, collect: list[dict] | None = None) -> None:
    if args.json:
        pages = [
            {"page": p.name, "status": p.status, "error": p.error, "outputs": p.outputs,
             # the style it was prepared with this run (its own, the chapter's or auto's) and auto's why
             "input_style": getattr(report, "styles", {}).get(p.name), "suggested": p.suggested}
            for p in project.pages
        ]
        document = {"out": str(project.folder), "done": report.done, "failed": report.failed,
                    "skipped": report.skipped, "cancelled": report.cancelled, "warnings": report.warnings,
                    "timings_s": {k: round(v, 3) for k, v in report.timings.items()},
                    "exports": exports or [], "export_notes": export_notes or [], "pages": pages}
        collect.append(document) if collect is not None else print(json.dumps(document, indent=2))
        return
    skipped = f", {len(report.skipped)} already done" if report.skipped else ""
    print(printable(f"{len(report.done)} page(s) {verb} into {project.folder}{skipped}; {len(report.failed)} failed"))
    for name, reason in report.failed.items():
        print(printable(f"  {name}: {reason}"))
    if exports and getattr(args, "export_format", "png") != "png":  # colorize's PNGs are the pages themselves
        print(printable("exported: " + ", ".join(exports)))
    for note in export_notes or []:  # e.g. a page that could not be read, as a placeholder in the CBZ
        print(printable(f"note: {note}"))


def cmd_demo(args) -> int:
    from engine.io.demo import make_demo_chapter, try_command

    if args.pages < 1 or args.ref_count < 1:
        raise InputError("--pages and --ref-count must be at least 1")
    chapter, refs = make_demo_chapter(args.dir.expanduser().resolve(), pages=args.pages, refs=args.ref_count)
    print(f"chapter: {chapter}\nreferences: {refs}")
    print(f"next: {try_command(str(args.dir))}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(eval_argv(sys.argv[1:] if argv is None else argv))
    handlers = {
        "colorize": cmd_colorize,
        "demo": cmd_demo,
        "retrieve": cmd_retrieve,
        "models": cmd_models,
        "train": cmd_train,
        "series": cmd_series,
        "bench": cmd_bench,
        "eval": lambda a: cmd_eval(a, _progress_sink),
        "check-consistency": cmd_consistency,
    }
    try:
        return handlers[args.command](args)
    except ColorFlowError as exc:
        print(f"colorflow: error: {printable(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a file we read or write (not a model: those are ModelErrors)
        import errno

        from engine.io.storage import storage_advice

        where = f"{exc.filename}: " if exc.filename else ""
        # only where the error itself says it was a write (a permission error may be a read)
        writing = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)
        advice = f"; {storage_advice(exc)}" if writing else ""
        print(printable(f"colorflow: error: {where}{exc.strerror or exc}{advice}"), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # outside a chapter run (those say what is kept and how to go on)
        print("colorflow: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
