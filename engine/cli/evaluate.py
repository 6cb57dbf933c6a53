"""The `colorflow eval folders|make-bench|bench` and `colorflow bench retrieval|flops|pages` subcommands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

from engine.cli.options import Default, add_options, options_from_args
from engine.cli.speedups import add_bench_speedups_command, cmd_bench_speedups
from engine.cli.volume import RAY_BENCH_HELP, cmd_bench_ray
from engine.core.options import LINE_ART_STYLES, InputStyle

OK, FAILED = 0, 1  # engine.cli.main's EXIT_OK and EXIT_PAGES_FAILED
EVAL_ACTIONS = ("folders", "make-bench", "bench")
NO_WEIGHTS_METRICS = "psnr,ssim"
TINY_STEPS = 2  # bench pages with the tiny models: only the code runs, so few steps  # the default without --models; with it, clip-is too

METRIC_HELP = (
    "comma-separated, from clip-is, fid, psnr, ssim, as (the columns of the paper's Table 1). "
    "psnr/ssim need nothing; clip-is uses the CLIP image encoder of --models (the retrieval encoder: "
    "the paper does not name its CLIP); fid needs the Inception-v3 FID weights (--fid-weights) and at "
    "least 2 pairs; as needs the LAION aesthetic head (--aesthetic-weights) and CLIP ViT-L/14 "
    "(--aesthetic-clip). None of them is downloaded: a missing file is named before anything runs"
)


def eval_argv(argv: Sequence[str]) -> list[str]:
    """`colorflow eval PRED GT ...` is short for `colorflow eval folders PRED GT ...` (the
    command contract): insert `folders` when what follows `eval` is not an action or help."""
    argv = list(argv)
    if len(argv) >= 2 and argv[0] == "eval" and argv[1] not in EVAL_ACTIONS + ("-h", "--help"):
        argv.insert(1, "folders")
    return argv


def _paragraphs(*texts: str) -> str:
    import textwrap

    return "\n\n".join(textwrap.fill(text, 90) for text in texts)


def _add_metric_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fid-weights", type=Path, default=None, metavar="FILE_OR_DIR",
                        help="pt_inception-2015-12-05-6726825d.pth (pytorch-fid's FID Inception weights), or "
                        "its folder (default: the ColorFlow evaluation folder, then the torch.hub cache)")
    parser.add_argument("--aesthetic-weights", type=Path, default=None, metavar="FILE",
                        help="the LAION improved-aesthetic-predictor head (sac+logos+ava1-l14-linearMSE.pth; "
                        "default: the ColorFlow evaluation folder)")
    parser.add_argument("--aesthetic-clip", type=Path, default=None, metavar="DIR",
                        help="CLIP ViT-L/14 folder for AS (default: openai/clip-vit-large-patch14 in the HF cache)")
    parser.add_argument("--method", default="", help="the Method column of the table (default: a description of the run)")
    parser.add_argument("--json", action="store_true", help="print the full result as JSON instead of Markdown")


def add_eval_commands(commands) -> None:
    """The `eval` command and its actions, on the top-level subparsers `commands`."""
    from engine.evaluation.bench_data import DEFAULT_PAGES, DEFAULT_REFS, DERIVATION, PAPER_DIFFERENCES, SAME_STYLE

    evaluate = commands.add_parser(
        "eval", help="score colored pages against the originals (Table 1 metrics); build and run benchmarks",
        description="`colorflow eval PRED GT` is short for `colorflow eval folders PRED GT` (spell out "
        "`folders` when PRED is itself named folders, make-bench or bench).")
    actions = evaluate.add_subparsers(dest="eval_command", required=True, metavar="ACTION")
    folders = actions.add_parser(
        "folders", help="metrics of predicted pages against ground truth, paired by name",
        description="Pairs PRED/x.png with GT/x.jpg (relative path without extension, subfolders "
        "included), checks that each pair has one size (a mismatch is an error naming the pair, exit 2), "
        "and prints the Table 1 row (means over the pairs; FID over the whole set) and one row per image, "
        "in Markdown, or everything with --json. Exit 1 when some ground truth has no prediction.")
    folders.add_argument("pred", type=Path, metavar="PRED", help="folder of colored predictions")
    folders.add_argument("gt", type=Path, metavar="GT", help="folder of ground-truth colored pages")
    folders.add_argument("--metrics", default=None,
                         help=f"{METRIC_HELP} (default: {NO_WEIGHTS_METRICS}, plus clip-is when --models is given)")
    add_options(folders, ("models", "input_style", "device"), only={"input_style": tuple(InputStyle)},
                defaults={"models": Default(None, "official when clip-is is asked for"),
                          "input_style": Default(None, "none")},
                helps={"models": "model source whose CLIP image encoder gives CLIP-IS: official, tiny or a DIR "
                       "(default: official when clip-is is asked for)",
                       "input_style": "the input style of the predictions: the Input column of the table (default: none)"})
    _add_metric_args(folders)

    make = actions.add_parser(
        "make-bench", help="build a ColorFlow-Bench-like benchmark from colored chapters",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_paragraphs(
            "Each CHAPTER (folder or .cbz/.zip of colored pages, in reading order) becomes OUT/<chapter>/ "
            "with refs/ (its first --refs pages), gt/ (the next --pages pages, in color) and the "
            "black-and-white inputs made from gt/: bw/gray/ and bw/screen/, named alike, plus OUT/bench.json.",
            f"bw/gray: {DERIVATION['gray']}.",
            f"bw/screen: {DERIVATION['screen']}; it needs the ScreenStyle networks of --models.",
            f"Where we differ from the paper: {PAPER_DIFFERENCES}"))
    make.add_argument("chapters", nargs="+", metavar="CHAPTER", help="colored chapter folder or archive")
    make.add_argument("--out", required=True, type=Path, metavar="BENCH", help="new (or empty) benchmark folder")
    make.add_argument("--ref-count", type=int, default=DEFAULT_REFS,
                      help=f"first pages of each chapter that become its references (default {DEFAULT_REFS})")
    make.add_argument("--pages", type=int, default=DEFAULT_PAGES,
                      help=f"test pages per chapter after the references, at most (default {DEFAULT_PAGES})")
    make.add_argument("--sets", default="screen,gray", help="black-and-white sets to make (default screen,gray)")
    add_options(make, ("models", "seed", "device"),
                helps={"models": "model source of the ScreenStyle networks (official, tiny or DIR; default official)",
                       "seed": "seeds the ScreenStyle pass's dropout and noise (default 0)"})

    bench = actions.add_parser(
        "bench", help="color a benchmark's bw sets and print the Table 1 rows (screen and gray)",
        description="Colors every chapter's bw/<set>/ pages with its refs/ (one model load for the "
        "whole run), writes the predictions to OUT/pred/<set>/<chapter>/ (named as gt/; official-procedure "
        "outputs, 1.5x the working size, resized to the page), mirrors gt/ into OUT/gt/, scores each set "
        "and prints one Table 1 row per set in Markdown (or JSON). Chapter projects live in "
        "OUT/runs/<set>/<chapter>/ so --resume skips pages already colored the same way. "
        "Exit 1 when some page failed.")
    bench.add_argument("bench", type=Path, metavar="BENCH", help="folder made by `colorflow eval make-bench`")
    bench.add_argument("--out", type=Path, default=None, metavar="OUT",
                       help="results folder (default: BENCH/results/<procedure>-<input style>)")
    bench.add_argument("--sets", default=None, help="sets to run, e.g. screen,gray (default: every set of BENCH)")
    add_options(bench, ("models", "input_style", "procedure", "steps", "size", "seed", "keep_ink", "low_vram",
                        "cache_dir", "device"),
                extra_choices={"input_style": (SAME_STYLE,)}, only={"input_style": ("screen", "gray")},
                helps={"models": "official (default), tiny or a models DIR; also the CLIP-IS encoder",
                       "input_style": "how the pipeline reads the bw pages: screen (default, as the official app: the "
                       "ScreenStyle pass on every page, also the gray set's), gray (plain grayscale), same (the "
                       "set's style)"})
    bench.add_argument("--resume", action="store_true", help="skip pages already colored with the same settings")
    bench.add_argument("--metrics", default="clip-is,psnr,ssim", help=f"{METRIC_HELP} (default clip-is,psnr,ssim)")
    _add_metric_args(bench)


def add_bench_commands(commands) -> None:
    """`colorflow bench retrieval|flops|pages|speedups`, on the top-level subparsers `commands`."""
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
    bench_retrieval.add_argument("--ref-count", type=int, default=20, help="generated references (default 20)")
    bench_retrieval.add_argument("--json", action="store_true", help="print the result as JSON")
    bench_flops = bench_commands.add_parser(
        "flops",
        help="FLOPs per page of our ICP pipeline vs the official procedure (meta device)",
        description="Counts FLOPs with torch.utils.flop_counter on the meta device at official "
        "model size (no weights, no GPU, seconds). Official procedure: UNet and guide at CFG "
        "batch 2, conditioning encoded per CFG copy, every reference re-embedded for every page. "
        "Ours: guide at batch 1, conditioning encoded once, reference embeddings cached per "
        "chapter (amortised over --pages). Both run the ScreenStyle pass once per page and "
        "decode the whole canvas, as the official procedure does. --input-style sketch|sketch-shading: the line-art "
        "(PixArt-alpha) path, with the line extractor and T5-XXL, run on every official call, once ever for ours.",
    )
    add_options(bench_flops, ("size", "steps", "input_style"), only={"input_style": tuple(InputStyle)},
                defaults={"size": Default(None, "512x800")})
    bench_flops.add_argument("--ref-count", type=int, default=40, help="references in the chapter (default 40)")
    bench_flops.add_argument("--pages", type=int, default=20, help="pages in the chapter (default 20)")
    bench_flops.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_bench_pages_command(bench_commands)
    add_bench_speedups_command(bench_commands)


def _add_bench_pages_command(bench_commands) -> None:
    """`colorflow bench pages`, on the `bench` subparsers."""
    pages = bench_commands.add_parser(
        "pages",
        help="per page and stage time and peak memory: ours, --low-vram and the official procedure",
        description="Colors a generated chapter three times in this process with the same chapter loop: "
        "our default settings, --low-vram, and the official procedure (--procedure official, and every "
        "reference re-embedded for every page as the official app does). Each mode loads its own models "
        "(load time reported apart) and starts with empty caches (line art: but the T5 prompt embeddings, computed "
        "once first and timed apart; the official app runs T5 on every call, not repeated here). Per page and stage "
        "(ScreenStyle, or Lines for line art; RAP, ICP, GSRP): wall time and peak memory (CUDA: torch.cuda.max_memory_allocated; CPU: the process's "
        "peak RSS, reset per stage on Linux, else getrusage's monotonic ru_maxrss) and its increase over the "
        "stage (stages run one at a time: the next page's CPU work does not overlap ICP here, so each stage's "
        "figures are its own); then pages per hour, CLIP encoder "
        "images and batches, and the ratios ours/official. One uncounted warm-up page runs first. "
        "Use --pages 50 for a chapter-length run. Text output shows stage totals; --json has every page.")
    add_options(pages, ("models", "device", "steps", "size", "input_style"), only={"input_style": tuple(InputStyle)},
                defaults={"steps": Default(None, f"10; {TINY_STEPS} with --models tiny"),
                          "size": Default(None, "the official size for the page, 512x800; 256x384 with --models "
                                          "tiny, so the tiny run takes about a minute of CPU")})
    pages.add_argument("--pages", type=int, default=2, help="pages of the generated chapter (default 2)")
    pages.add_argument("--ref-count", type=int, default=3, help="colored references (default 3)")
    pages.add_argument("--modes", default="ours,low_vram,official",
                       help="modes to run (default ours,low_vram,official)")
    pages.add_argument("--no-warmup", dest="warmup", action="store_false", help="skip the uncounted warm-up page")
    pages.add_argument("--threads", type=int, default=None,
                       help="torch CPU threads (default: torch's choice); 1 steadies CPU timings on a busy machine")
    add_options(pages, ("seed", "ray", "workers"), helps={"ray": RAY_BENCH_HELP})  # --ray: engine/benchmarks/ray_scaling.py
    pages.add_argument("--profile", action="store_true",
                       help="then color the chapter once more per mode under torch.profiler (a separate pass, not "
                       "counted in the timed figures) and show each stage's top operators by self time")
    pages.add_argument("--profile-top", type=int, default=8, metavar="N",
                       help="operators shown per stage with --profile (default 8)")
    pages.add_argument("--json", action="store_true", help="print every page and stage as JSON")


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _metric_models(args, clip_models: str | None):
    from engine.evaluation.folders import MetricModels

    return MetricModels(clip_models=clip_models or "official", fid_weights=args.fid_weights,
                        aesthetic_weights=args.aesthetic_weights, aesthetic_clip=args.aesthetic_clip, device=args.device)


def _eval_folders(args) -> int:
    from engine.core.devices import precheck_device
    from engine.evaluation.folders import evaluate_folders
    from engine.evaluation.metrics import parse_metrics

    spec = args.metrics or (NO_WEIGHTS_METRICS + (",clip-is" if args.models else ""))
    metrics = parse_metrics(spec)
    precheck_device(args.device)
    bar = None
    if not args.json:
        from tqdm import tqdm

        bar = tqdm(unit="pair", desc="eval", file=sys.stderr, leave=False)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        report = evaluate_folders(args.pred, args.gt, metrics, _metric_models(args, args.models),
                                  method=args.method, input_style=str(args.input_style or ""),
                                  progress=progress if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    print(report.to_json() if args.json else report.to_markdown(), end="\n" if args.json else "")
    return FAILED if report.missing_predictions else OK


def _make_bench(args) -> int:
    from engine.core.devices import precheck_device
    from engine.evaluation.bench_data import make_bench

    precheck_device(args.device)

    def progress(name: str) -> None:
        print(f"make-bench: {name}", file=sys.stderr)

    bench = make_bench(args.chapters, args.out, refs=args.ref_count, pages=args.pages, sets=_split(args.sets),
                       models=args.models, device=args.device, seed=args.seed, progress=progress)
    pages = sum(len(c.pages) for c in bench.chapters)
    print(f"benchmark written: {bench.root} ({len(bench.chapters)} chapter(s), {pages} test page(s), "
          f"sets {', '.join(bench.sets)})")
    print(f"next: colorflow eval bench {bench.root} --models {args.models}")
    return OK


def _run_bench(args, progress_sink: Callable) -> int:
    from engine.evaluation.bench_data import open_bench
    from engine.evaluation.bench_run import BenchRunSettings, run_bench
    from engine.evaluation.metrics import parse_metrics

    bench = open_bench(args.bench)
    run = options_from_args(args, input_style=InputStyle.SCREEN)  # each set's input style: pipeline_style
    settings = BenchRunSettings(
        run=run, sets=tuple(_split(args.sets)) if args.sets else bench.sets, input_style=args.input_style,
        metrics=parse_metrics(args.metrics), metric_models=_metric_models(args, args.models), method=args.method,
        resume=args.resume)
    settings.check(bench)  # before the output folder is made or any model loads
    out = args.out or bench.root / "results" / f"{args.procedure}-{args.input_style}"
    from engine.core.events import Started

    sinks: list = []

    def emit(event) -> None:  # one bar per chapter run
        if isinstance(event, Started):
            if sinks:
                sinks.pop()[1]()
            sinks.append(progress_sink(not args.json))
        if sinks:
            sinks[-1][0](event)

    try:
        result = run_bench(bench, out, settings, emit)
    finally:
        if sinks:
            sinks.pop()[1]()
    print(result.to_json() if args.json else result.to_markdown(), end="\n" if args.json else "")
    return FAILED if any(result.failed.values()) else OK


def cmd_eval(args, progress_sink: Callable) -> int:
    """`progress_sink(enabled) -> (emit, close)`: engine.cli.main's tqdm bar for the coloring runs."""
    if args.eval_command == "bench":
        return _run_bench(args, progress_sink)
    return _eval_folders(args) if args.eval_command == "folders" else _make_bench(args)


def _pages_text(result: dict) -> str:
    modes = result["modes"]
    lines = [f"bench pages: {result['models']} models on {result['device_name']}, {result['size']}, "
             f"{result['steps']} steps, {result['pages']} page(s), {result['references']} reference(s), "
             f"input style {result['input_style']}",
             *([result["random_weights"]] if result.get("random_weights") else []),
             f"memory: {result['memory_measure']}; process baseline before any model "
             f"{result['process_baseline_mib']:.0f} MiB", "",
             "| Stage | " + " | ".join(f"{m} s/page | {m} peak MiB | {m} added MiB" for m in modes) + " |",
             "|---|" + "---:|" * (3 * len(modes))]
    from engine.benchmarks.stages import STAGES

    for stage in (s for s in STAGES if any(s in mode["stages"] for mode in modes.values())):
        cells = []
        for mode in modes.values():
            cell = mode["stages"].get(stage, {})
            cells += [f"{cell.get('s_per_page', 0):.3f}", f"{cell.get('peak_mib', 0):.0f}", f"{cell.get('added_mib', 0):.0f}"]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines.append("")
    for name, mode in modes.items():
        lines.append(f"{name}: {mode['page_s']:.3f} s/page, {mode['pages_per_hour']:.0f} pages/hour, peak "
                     f"{mode['peak_mib']:.0f} MiB, CLIP encoder {mode['clip_images_embedded']} images in "
                     f"{mode['clip_forward_passes']} batches, {mode['preprocess_passes']} preprocess passes, "
                     f"models loaded in {mode['load_s']:.1f} s (not counted; memory {mode['memory_before_load_mib']:.0f} "
                     f"-> {mode['memory_after_load_mib']:.0f} MiB, load peak {mode['load_peak_mib']:.0f} MiB)")
    if "text_embeddings" in result:
        once = result["text_embeddings"]
        lines.append(f"T5 prompt embeddings, computed once before the modes (not in any mode's figures): "
                     f"{once['s']:.1f} s, peak {once['peak_mib']:.0f} MiB, {once['t5_loads']} T5 load(s)")
    for pair, ratios in result["ratios"].items():
        lines.append(f"{pair}: time " + ", ".join(f"{k} {v}" for k, v in ratios["time"].items())
                     + "; peak memory " + ", ".join(f"{k} {v}" for k, v in ratios["peak_memory"].items())
                     + "; added memory " + ", ".join(f"{k} {v}" for k, v in ratios["added_memory"].items())
                     + f"; CLIP images {ratios['clip_images_embedded']}")
    if "profile" in result:
        from engine.benchmarks.profile import profile_tables

        lines += profile_tables(result["profile"], result["profile_wall_s"])
    lines += [""] + [f"note: {note}" for note in result["notes"]]
    return "\n".join(lines)


def cmd_bench(args) -> int:
    """`colorflow bench retrieval|flops|pages|speedups`: measured figures, as text or JSON."""
    if args.bench_command == "pages":
        return _bench_pages(args)
    if args.bench_command == "speedups":
        return cmd_bench_speedups(args)
    if args.bench_command == "retrieval":
        from engine.benchmarks.retrieval import bench_retrieval

        result = bench_retrieval(pages=args.pages, refs=args.ref_count)
    else:
        from engine.benchmarks.flops import compare
        from engine.core.geometry import WorkSize

        options = options_from_args(args)  # the declared range of --steps
        size = WorkSize.parse(options.size or "512x800")
        if options.input_style in LINE_ART_STYLES:
            from engine.benchmarks.flops_pixart import compare_pixart as compare
        result = compare(size.width, size.height, options.steps, args.ref_count, args.pages)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:>32}: {value}")
    return OK


def _bench_pages(args) -> int:
    from engine.io.demo import DEMO_WORK_SIZE
    from engine.core.devices import precheck_device
    from engine.core.errors import InputError
    from engine.benchmarks.stages import MODES
    from engine.models.sources import check_models, is_tiny

    tiny = is_tiny(args.models)
    tiny_defaults = {"steps": TINY_STEPS, "size": DEMO_WORK_SIZE} if tiny else {}
    options = options_from_args(args, **{k: v for k, v in tiny_defaults.items() if getattr(args, k) is None})
    modes = _split(args.modes)
    if not modes or any(m not in MODES for m in modes):
        raise InputError(f"--modes must be among {', '.join(MODES)}, got {args.modes!r}")
    if args.pages < 1 or args.ref_count < 1:
        raise InputError("--pages and --ref-count must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise InputError("--threads must be at least 1")
    if args.profile_top < 1:
        raise InputError("--profile-top must be at least 1")
    precheck_device(options.device)
    check_models(options.models)
    if options.ray is not None or options.workers is not None:  # this process vs Ray workers (--workers: needs --ray)
        return cmd_bench_ray(args, options)
    from engine.benchmarks.stages import bench_pages
    from engine.core.geometry import WorkSize

    size = WorkSize.parse(options.size) if options.size else None
    result = bench_pages(options.models, options.device, pages=args.pages, refs=args.ref_count, steps=options.steps,
                         size=size, input_style=options.input_style, seed=options.seed, modes=modes,
                         warmup=args.warmup, threads=args.threads, profile=args.profile, profile_top=args.profile_top)
    print(json.dumps(result, indent=2) if args.json else _pages_text(result))
    return OK
