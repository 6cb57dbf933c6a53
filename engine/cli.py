"""Command-line interface: `colorflow retrieve|models|eval|bench ...` (see --help of each)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from engine.errors import ColorFlowError, InputError, printable
from engine.cli_eval import add_bench_pages_command, add_eval_commands, cmd_bench_pages, cmd_eval, eval_argv
from engine.cli_models import add_models_commands, cmd_models, print_check_progress
from engine.cli_train import add_train_commands, cmd_train

EXIT_OK, EXIT_PAGES_FAILED, EXIT_USAGE = 0, 1, 2

DESCRIPTION = """\
ColorFlow: color black-and-white manga chapters from colored reference pages.

INPUT is a folder, a .cbz/.zip archive or image files; REFS are folders, archives or images.
Exit codes: 0 ok, 1 some pages failed (the report lists them), 2 bad usage or input,
130 interrupted (Ctrl+C; pages already done are kept: colorize --resume continues).
Run `colorflow COMMAND --help` for the options of each command.
"""


def _size_arg(text: str):
    from engine.rap.canvas import WorkSize

    try:
        return WorkSize.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models",
        default="official",
        help="model source: 'official' (hub download, real colors), 'tiny' (small random "
        "models, offline, meaningless colors, for trying things out) or a directory in the "
        "ColorFlow layout (default: official)",
    )
    parser.add_argument(
        "--device", default="auto", choices=("auto", "cuda", "mps", "cpu"),
        help="where models run (default: auto = CUDA, then Apple MPS, then CPU)",
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None,
        help="embedding cache folder (default: the per-user cache folder)",
    )


def _add_chapter_args(parser: argparse.ArgumentParser) -> None:
    """INPUT, --refs, --out, --size and --json, shared by retrieve and colorize."""
    parser.add_argument("input", nargs="+", metavar="INPUT", help="chapter folder, .cbz/.zip or page images")
    parser.add_argument("--refs", nargs="+", required=True, metavar="REFS", help="colored reference images, folders or archives")
    parser.add_argument("--out", required=True, type=Path, metavar="OUT", help="output / project folder")
    parser.add_argument("--size", type=_size_arg, default=None, metavar="WxH",
                        help="working size: 640x640, 512x800, 800x512 or multiples of 64 (default: "
                        "the official size nearest in aspect to each page)")
    parser.add_argument("--input-style", choices=("screen", "gray"), default="screen",
                        help="screen (default, as the official app): each page goes through the official "
                        "ScreenStyle pass first, and G, a 50/50 blend of the page's grayscale and its "
                        "ScreenVAE re-screening, is what retrieval, the canvas and GSRP see (the weights "
                        "were trained on such inputs); gray: the plain grayscale page")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed (default 0); same seed, same result (it also seeds the ScreenStyle pass)")
    parser.add_argument("--procedure", choices=("ours", "official"), default="ours",
                        help=PROCEDURE_HELP)
    parser.add_argument("--json", action="store_true", help="print a machine-readable per-page report on stdout")


PROCEDURE_HELP = (
    "ours (default) or official. official reproduces the official app's procedure exactly "
    "(CPU/fp32 bit for bit): global RNG seeded as its fix_random_seeds, the conditioning latents "
    "sampled per CFG copy (guide at batch 2), the GSRP sample as the next global draw, the "
    "ScreenStyle pass seeded with the seed (the official app leaves it unseeded), the page "
    "centre-cropped to the working aspect, output at 1.5x the working size, no keep-ink. ours "
    "changes: every random draw comes from its own stream of the seed (start noise, conditioning "
    "samples, ScreenStyle, GSRP), the conditioning latents are sampled once and shared by both "
    "CFG halves so the guide runs once per step (half its work), pages are letterboxed, never "
    "cropped, and the output has the page's own size with keep-ink. Same seed, different draws: "
    "the two procedures give different (equally likely) colorings."
)

DECODE_DIFFERENCE = (
    "measured on the tiny random models at 256x384, 10 steps: up to 5 levels, mean 0.64 "
    "(scripts/measure_fidelity.py; trained weights may differ more)"
)


def _open_inputs(args):
    """Chapter, references, project and the project's lock (held: use it in a `with` block) of a
    retrieve/colorize run, checked before any model loads. Another process on OUT is refused."""
    from engine.io.chapter import list_images, open_chapter
    from engine.io.projectlock import ProjectLock
    from engine.project import ChapterProject

    try:
        chapter = open_chapter(args.input)
    except InputError as exc:
        raise InputError(f"INPUT {exc}") from exc
    try:
        references = list_images(args.refs)
    except InputError as exc:
        raise InputError(f"--refs {exc}") from exc
    from engine.io.cachedir import check_cache_folder
    from engine.io.storage import check_output_folder, check_outside_inputs

    try:
        check_outside_inputs(args.out, args.input)
    except InputError as exc:
        raise InputError(f"--out {exc}") from exc
    if args.cache_dir is not None:
        try:
            check_cache_folder(args.cache_dir)
        except ColorFlowError as exc:
            raise type(exc)(f"--cache-dir {exc}") from exc
    folder = args.out.expanduser().resolve()
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
    _add_chapter_args(retrieve)
    _add_model_args(retrieve)

    colorize = commands.add_parser(
        "colorize",
        help="color a chapter: retrieval (RAP), diffusion colorization (ICP), super-resolution (GSRP)",
        description="Colors every page of INPUT using the colored REFS. Writes OUT/NNN_name.png "
        "per page at the page's own size (nothing cropped), and keeps the chapter project (pins, rejects, "
        "per-page status) in OUT/colorflow-project.json. A page that fails is reported and the "
        "others go on (exit code 1).",
    )
    _add_chapter_args(colorize)
    colorize.add_argument("--steps", type=int, default=10, help="denoising steps, 1-100 (default 10, as official)")
    colorize.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")
    colorize.add_argument("--low-vram", action="store_true",
                          help="every model stays on the CPU and moves to the GPU only while it runs "
                          "(accelerate offload hooks, as diffusers' model CPU offload; 8 GB cards). Same pixels, slower")
    colorize.add_argument("--decode", choices=("canvas", "page"), default="canvas",
                          help="canvas (default, as official): decode the whole 2Wx2H canvas latent and cut "
                          "out the page; page: decode only the page region plus 64 px, less memory but "
                          "NOT the same pixels (the VAE decoder's norms and attention see the whole latent): "
                          + DECODE_DIFFERENCE)
    colorize.add_argument("--vae-tiling", action="store_true",
                          help="encode/decode the canvas in tiles (least memory; changes pixels slightly)")
    colorize.add_argument("--output-size", choices=("page", "gsrp"), default=None,
                          help="page (default): each page at its own size; gsrp: 1.5x the working size, "
                          "as the official app (useful to upscale small scans; forced by --procedure official)")
    colorize.add_argument("--format", choices=("png", "cbz", "ora", "psd"), default="png",
                          help="png: one PNG per page (always written); cbz: also OUT/<chapter>-colored.cbz "
                          "with ComicInfo.xml; ora/psd: also OUT/layered/ files with the ink as a "
                          "multiply layer over the color, for Krita/GIMP/Photoshop/Clip Studio")
    colorize.add_argument("--keep-ink", action=argparse.BooleanOptionalAction, default=None,
                          help="take lightness from the original page so line art, text and "
                          "screentone stay pixel-faithful; color only from the model (default on; "
                          "off with --procedure official)")
    colorize.add_argument("--include-uncolored", action="store_true",
                          help="when some pages could not be colored, export the CBZ anyway with the original "
                          "pages in their place (by default such an export is refused, never written short)")
    colorize.add_argument("--resume", action="store_true",
                          help="skip pages already done with the same settings, picks and models")
    colorize.add_argument("--gsrp-batchnorm", choices=("batch", "running"), default="batch",
                          help="GSRP fusion BatchNorm: per-call statistics like the official app "
                          "(batch, default) or the stored running statistics")
    _add_model_args(colorize)

    demo = commands.add_parser(
        "demo",
        help="write a small generated chapter and colored references to try the commands on",
        description="Writes DIR/chapter/ (gray pages) and DIR/refs/ (colored references), "
        "generated and deterministic, and prints the colorize command that colors them with the "
        "tiny models at a small working size and a few steps (well under a minute of CPU).",
    )
    demo.add_argument("dir", type=Path, metavar="DIR")
    demo.add_argument("--pages", type=int, default=3, help="number of pages (default 3)")
    demo.add_argument("--refs", type=int, default=3, help="number of references (default 3)")

    add_models_commands(commands, _size_arg)
    add_train_commands(commands, _size_arg)

    bench = commands.add_parser("bench", help="benchmarks that print measured ratios")
    bench_commands = bench.add_subparsers(dest="bench_command", required=True, metavar="WHICH")
    bench_retrieval = bench_commands.add_parser(
        "retrieval",
        help="cached vs per-page reference embedding on a generated chapter (tiny encoder)",
        description="Generates a chapter and references, then runs retrieval twice with the "
        "tiny CLIP encoder: once re-embedding every reference for every page (the official "
        "procedure) and once with the per-chapter embedding cache. Prints encoder images, "
        "forward batches, wall time and their ratios, all measured in this run.",
    )
    bench_retrieval.add_argument("--pages", type=int, default=20, help="generated pages (default 20)")
    bench_retrieval.add_argument("--refs", type=int, default=20, help="generated references (default 20)")
    bench_retrieval.add_argument("--json", action="store_true", help="print the result as JSON")
    bench_flops = bench_commands.add_parser(
        "flops",
        help="FLOPs per page of our ICP pipeline vs the official procedure (meta device)",
        description="Counts FLOPs with torch.utils.flop_counter on the meta device at official "
        "model size (no weights, no GPU, seconds). Official procedure: UNet and guide at CFG "
        "batch 2, conditioning encoded per CFG copy, every reference re-embedded for every page. "
        "Ours: guide at batch 1, conditioning encoded once, reference embeddings cached per "
        "chapter (amortised over --pages). Both run the ScreenStyle pass once per page and "
        "decode the whole canvas, as the official procedure does.",
    )
    bench_flops.add_argument("--size", type=_size_arg, default=None, metavar="WxH", help="working size (default 512x800)")
    bench_flops.add_argument("--steps", type=int, default=10, help="denoising steps (default 10)")
    bench_flops.add_argument("--refs", type=int, default=40, help="references in the chapter (default 40)")
    bench_flops.add_argument("--pages", type=int, default=20, help="pages in the chapter (default 20)")
    bench_flops.add_argument("--json", action="store_true", help="print the result as JSON")
    add_bench_pages_command(bench_commands, _size_arg)
    add_eval_commands(commands, _size_arg)
    return parser


def _progress_sink(enabled: bool):
    """Turn engine events into a tqdm bar on stderr and collect the per-page report."""
    from tqdm import tqdm

    from engine.events import Cancelled, Notice, PageDone, PageFailed, Progress, Started

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


def _precheck(args) -> None:
    """Everything that can be checked without torch: device, and that the models are present."""
    from engine.devices import precheck_device
    from engine.sources import check_models

    precheck_device(args.device)
    check_models(args.models, print_check_progress)


def cmd_retrieve(args) -> int:
    from engine.devices import pick_device
    from engine.errors import RunStopped
    from engine.pipeline import InputSettings, load_preparer, load_retriever, retrieve_chapter

    inputs = InputSettings(args.input_style, args.procedure, args.seed, args.size)  # the seed, checked as colorize does
    chapter, references, project, lock = _open_inputs(args)
    stopped = None
    try:
        with lock:  # held until the run ends, so a second process on OUT is refused
            _precheck(args)
            device = pick_device(args.device)
            retriever = load_retriever(args.models, device, args.cache_dir)
            preparer = load_preparer(args.models, device, args.cache_dir, args.input_style)
            emit, close = _progress_sink(not args.json)
            try:
                report = retrieve_chapter(chapter, references, retriever, project, emit=emit,
                                          preparer=preparer, inputs=inputs)
            except RunStopped as exc:  # disk full or read-only mid-run: pages written so far are kept
                report, stopped = exc.report, exc
            finally:
                close()
    except KeyboardInterrupt:
        return _interrupted(project, chapter, "retrieved", "run the same command again to retrieve every page")
    return _finish(args, project, report, "retrieved", lock, stopped)


def cmd_colorize(args) -> int:
    from engine.icp.settings import ColorizeSettings
    from engine.devices import pick_device
    from engine.io.export import IncompleteExport, export_project
    from engine.pipeline import PipelineSettings, colorize_chapter, load_pipeline
    from engine.gsrp.settings import UpscaleSettings

    official = args.procedure == "official"
    if official and (args.keep_ink or args.output_size == "page" or args.decode == "page"):
        raise InputError("--procedure official outputs 1.5x the working size from the whole canvas "
                         "without keep-ink: drop --keep-ink, --output-size page and --decode page")
    settings = PipelineSettings(
        colorize=ColorizeSettings(steps=args.steps, seed=args.seed, guidance_scale=args.guidance,
                                  procedure=args.procedure, decode=args.decode),
        upscale=UpscaleSettings(batch_norm=args.gsrp_batchnorm, seed=args.seed, procedure=args.procedure),
        keep_ink=not official if args.keep_ink is None else args.keep_ink,
        size=args.size,
        input_style=args.input_style,
        output_size=args.output_size or ("gsrp" if official else "page"),
    )
    settings.check()
    chapter, references, project, lock = _open_inputs(args)
    stopped, exports = None, []
    try:
        with lock:  # held until the export is written, so a second process on OUT is refused
            from engine.errors import RunStopped
            from engine.io.storage import check_output_folder, estimate_output_bytes

            check_output_folder(project.folder, estimate_output_bytes(chapter.sources))
            _precheck(args)
            pipeline = load_pipeline(args.models, pick_device(args.device), args.low_vram, args.cache_dir,
                                     vae_tiling=args.vae_tiling, input_style=args.input_style)
            emit, close = _progress_sink(not args.json)
            try:
                report = colorize_chapter(chapter, references, pipeline, project, settings, emit, resume=args.resume)
            except RunStopped as exc:  # disk full or read-only mid-run: pages written so far are kept
                report, stopped = exc.report, exc
            finally:
                close()
            if stopped is None:
                try:
                    exports = [str(p) for p in export_project(project, chapter, args.format,
                                                              include_uncolored=args.include_uncolored)]
                except IncompleteExport as exc:  # the per-page report still prints; nothing short is written
                    print(printable(f"colorflow: {args.format} export not written: {exc}"), file=sys.stderr)
    except KeyboardInterrupt:
        return _interrupted(project, chapter, "done", "run the same command with --resume to continue")
    return _finish(args, project, report, "colored", lock, stopped, exports)


def _finish(args, project, report, verb: str, lock, stopped=None, exports: list[str] | None = None) -> int:
    """The per-page report, then what stopped the run early and a lock file that had to stay:
    exit 1 when a page failed or was left by the stop."""
    _print_report(args, project, report, verb, exports)
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


def _print_report(args, project, report, verb: str, exports: list[str] | None = None) -> None:
    if args.json:
        pages = [
            {"page": p.name, "status": p.status, "error": p.error, "outputs": p.outputs}
            for p in project.pages
        ]
        print(json.dumps({"out": str(project.folder), "done": report.done, "failed": report.failed,
                          "skipped": report.skipped, "cancelled": report.cancelled, "warnings": report.warnings,
                          "timings_s": {k: round(v, 3) for k, v in report.timings.items()},
                          "exports": exports or [], "pages": pages}, indent=2))
        return
    skipped = f", {len(report.skipped)} already done" if report.skipped else ""
    print(printable(f"{len(report.done)} page(s) {verb} into {project.folder}{skipped}; {len(report.failed)} failed"))
    for name, reason in report.failed.items():
        print(printable(f"  {name}: {reason}"))
    if exports and args.format != "png":
        print(printable("exported: " + ", ".join(exports)))


def cmd_demo(args) -> int:
    from engine.demo import make_demo_chapter, try_command

    if args.pages < 1 or args.refs < 1:
        raise InputError("--pages and --refs must be at least 1")
    chapter, refs = make_demo_chapter(args.dir.expanduser().resolve(), pages=args.pages, refs=args.refs)
    print(f"chapter: {chapter}\nreferences: {refs}")
    print(f"next: {try_command(str(args.dir))}")
    return EXIT_OK


def cmd_bench(args) -> int:
    if args.bench_command == "pages":
        return cmd_bench_pages(args)
    if args.bench_command == "retrieval":
        from engine.bench import bench_retrieval

        result = bench_retrieval(pages=args.pages, refs=args.refs)
    else:
        from engine.flops import compare

        width, height = (args.size.width, args.size.height) if args.size else (512, 800)
        result = compare(width, height, args.steps, args.refs, args.pages)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:>32}: {value}")
    return EXIT_OK


def command_usages(width: int = 100) -> list[str]:
    """The usage line of every command and subcommand, as argparse prints it (wrapped at
    `width`): the README's Commands block is generated from this and kept in sync by a test."""
    import os

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        usages: list[str] = []

        def walk(parser: argparse.ArgumentParser) -> None:
            subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
            if not subparsers:
                usages.append(parser.format_usage().strip().removeprefix("usage: "))
            for action in subparsers:
                for child in action.choices.values():
                    walk(child)

        walk(build_parser())
        return usages
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(eval_argv(sys.argv[1:] if argv is None else argv))
    handlers = {
        "colorize": cmd_colorize,
        "demo": cmd_demo,
        "retrieve": cmd_retrieve,
        "models": cmd_models,
        "train": cmd_train,
        "bench": cmd_bench,
        "eval": lambda a: cmd_eval(a, _progress_sink),
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
