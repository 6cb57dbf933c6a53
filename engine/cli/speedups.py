"""`colorflow bench speedups`: the kernel choices (SDPA, channels_last, torch.compile) timed as ratios."""

from __future__ import annotations

import argparse
import json

from engine.cli.options import add_options, options_from_args

DEFAULT_SIZE = "256x256"


def _work_size(text: str) -> str:
    from engine.benchmarks.speedups import bench_size
    from engine.core.errors import InputError

    try:
        return str(bench_size(text))
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_bench_speedups_command(bench_commands) -> None:
    """`colorflow bench speedups`, on the `bench` subparsers."""
    from engine.benchmarks.speedups import VARIANT_LABELS, VARIANTS

    speedups = bench_commands.add_parser(
        "speedups",
        help="one denoising step and one canvas decode: SDPA vs math attention, channels_last, torch.compile",
        description="Loads the models once and times one guided UNet denoising step (the guide at batch 1, the "
        "UNet at CFG batch 2, as our procedure) and one VAE decode of the whole canvas, for each variant: "
        + "; ".join(f"{name}: {VARIANT_LABELS[name]}" for name in VARIANTS)
        + ". Each variant runs once first (compile time is reported apart), then the variants take turns for "
        "--repeats rounds; ratios are the best variant time / the best baseline time of the same run (below 1 = "
        "faster), with the largest difference of the variant's output from the baseline's. Use `colorflow models "
        "make-random DIR` for official-size models.")
    add_options(speedups, ("models", "device"))
    speedups.add_argument("--size", type=_work_size, default=DEFAULT_SIZE, metavar="WxH",
                          help="working size WxH, multiples of 32 (smaller than the app allows, to keep CPU runs "
                          f"short); the step and the decode run on the 2W x 2H canvas (default {DEFAULT_SIZE}: "
                          "canvas 512x512)")
    speedups.add_argument("--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16"),
                          help="model dtype (default auto: float16 on CUDA and MPS, float32 on the CPU)")
    speedups.add_argument("--repeats", type=int, default=2, help="timed calls per variant after the first (default 2)")
    speedups.add_argument("--variants", default=",".join(VARIANTS),
                          help=f"variants to run, the baseline always (default {','.join(VARIANTS)})")
    speedups.add_argument("--json", action="store_true", help="print the result as JSON")


def cmd_bench_speedups(args) -> int:
    from engine.benchmarks.speedups import bench_speedups, speedups_text
    from engine.core.devices import precheck_device
    from engine.core.errors import InputError
    from engine.models.sources import check_models

    options = options_from_args(args)
    if args.repeats < 1:
        raise InputError("--repeats must be at least 1")
    variants = [part.strip() for part in args.variants.split(",") if part.strip()]
    precheck_device(options.device)
    paths = check_models(options.models)
    result = bench_speedups(models=paths or options.models, device=options.device, size=args.size,
                            dtype=args.dtype, repeats=args.repeats, variants=variants)
    result["models"] = options.models
    print(json.dumps(result, indent=2) if args.json else speedups_text(result))
    return 0
