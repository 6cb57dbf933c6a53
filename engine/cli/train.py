"""The `colorflow train ...` subcommands: prepare (dataset index from colored chapters), icp (guide + LoRA) and gsrp (fusion network)."""

from __future__ import annotations

import sys
from pathlib import Path

from engine.cli.options import Default, add_options, options_from_args

OK = 0  # engine.cli.main's EXIT_OK


def add_train_commands(commands) -> None:
    """The `train` command and its actions, on the top-level subparsers `commands`."""
    train = commands.add_parser("train", help="train the ColorFlow networks on colored chapters")
    actions = train.add_subparsers(dest="train_command", required=True, metavar="ACTION")
    prepare = actions.add_parser(
        "prepare",
        help="build a training dataset index from folders of colored chapters",
        description="For every colored page: the ScreenStyle pass (its black-and-white input is a "
        "random mix of the grayscale page and this output, drawn per sample while training) and RAP "
        "retrieval of the best patches among the other pages of its chapter. Writes DATASET/index.json "
        "and DATASET/screens/, so training starts at once and reuses the picks every epoch.",
    )
    prepare.add_argument("chapters", nargs="+", type=Path, metavar="CHAPTERS",
                         help="colored chapter folders or .cbz/.zip archives (at least 2 pages each)")
    prepare.add_argument("--out", required=True, type=Path, metavar="DATASET", help="dataset folder")
    add_options(prepare, ("models", "size", "seed", "device"), defaults={"size": Default(None, "512x800")},
                helps={"seed": "seed of the ScreenStyle passes (default 0)"})

    icp = actions.add_parser(
        "icp",
        help="train the Colorization Guide and the UNet LoRA (paper 3.2)",
        description="Noise-prediction MSE on prepared samples, patch-wise crops that always hold the "
        "page, timesteps with the paper's shift (mu 1.5), AdamW; the SD1.5 UNet is frozen except the "
        "LoRA. Writes DIR/colorflow/GraySD/ (guide + unet_lora) with DIR/sd15 and the other model files "
        "linked from --models, so `colorflow colorize --models DIR` uses the result. State for "
        "--resume is kept in DIR/state/. Multi-GPU: start it with `accelerate launch`.",
    )
    _add_trainer_arguments(icp, default_steps=1000, state_dir="state")
    icp.add_argument("--mu", type=float, default=1.5, help="timestep shift (default 1.5, paper eq. 5)")
    icp.add_argument("--downsample", type=float, default=1.0, help="downsample crops by this factor (<= 1)")
    icp.add_argument("--full-canvas", action="store_true", help="train on the whole canvas (no crops)")
    icp.add_argument("--from-scratch", action="store_true",
                     help="guide initialised from the UNet and a new rank-64 LoRA, instead of --models' GraySD")
    icp.add_argument("--ema-decay", type=float, default=0.0, metavar="D",
                     help="keep an EMA of the guide + LoRA (e.g. 0.9999); the written models are the EMA weights")
    icp.add_argument("--sample-every", type=int, default=0, metavar="N",
                     help="colorize the dataset's last page (then held out of training) every N steps "
                     "into DIR/samples/step_XXXXXX.png")
    icp.add_argument("--sample-steps", type=int, default=10, help="denoising steps of those samples (default 10)")
    icp.add_argument("--no-tensorboard", action="store_true",
                     help="no TensorBoard logs (default: DIR/logs when tensorboard or tensorboardX is installed)")
    _add_gsrp_command(actions)


def cmd_train(args) -> int:
    from engine.core.devices import precheck_device
    from engine.models.sources import resolve_models

    options = options_from_args(args)  # seed and device as declared, before anything loads
    precheck_device(options.device)
    paths = resolve_models(options.models)
    if args.train_command == "prepare":
        from engine.pipelines.page import load_retriever
        from engine.preprocess.screenstyle import load_screenstyle
        from engine.core.geometry import WorkSize
        from engine.training.data import prepare_dataset
        from engine.core.devices import pick_device

        device = pick_device(args.device)
        out = args.out.expanduser().resolve()
        retriever = load_retriever(paths, device, out / ".embeddings")
        networks = load_screenstyle(paths.colorflow, device)
        index = prepare_dataset(args.chapters, out, retriever, networks, WorkSize.parse(options.size or "512x800"),
                                args.seed, emit=_progress_printer())
        print(f"\ndataset written: {out} ({len(index['samples'])} samples)")
        return OK
    if args.train_command == "gsrp":
        return _train_gsrp(args, paths)
    from engine.training.icp import ICPTrainConfig, ICPTrainer

    config = ICPTrainConfig(
        steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr, mu=args.mu,
        gradient_accumulation=args.grad_accum, mixed_precision=args.mixed_precision,
        downsample=args.downsample, full_canvas=args.full_canvas, save_every=args.save_every,
        log_every=args.log_every, seed=args.seed, from_scratch=args.from_scratch, device=args.device,
        ema_decay=args.ema_decay, sample_every=args.sample_every, sample_steps=args.sample_steps,
        tensorboard=not args.no_tensorboard,
    )
    trainer = ICPTrainer(paths, args.dataset.expanduser().resolve(), args.out.expanduser().resolve(), config)
    return _run_trainer(trainer, args)


def _run_trainer(trainer, args) -> int:
    """Resume if asked, train to --steps, and report once (not once per process under accelerate)."""
    main_process = trainer.accelerator.is_main_process
    if args.resume:
        step = trainer.resume()
        if main_process:
            print(f"resumed at step {step}")
    step = trainer.train()
    if main_process:
        from engine.models.folder_record import accept_if_recorded

        accept_if_recorded(args.out)  # retrained in place on purpose: a record of the folder takes the new weights
        print(f"trained to step {step}; models: {args.out} (use --models {args.out})")
    return OK


def _progress_printer():
    from engine.core.events import Progress

    def emit(event) -> None:
        if isinstance(event, Progress):
            print(f"\r{event.stage} {event.step}/{event.total} {event.page or ''}", end="", file=sys.stderr, flush=True)

    return emit


def _add_gsrp_command(actions) -> None:
    gsrp = actions.add_parser(
        "gsrp",
        help="train the GSRP fusion network (paper 3.3)",
        description="L1 between the guided VAE decode and the colored page at the GSRP frame (1.5x the "
        "working size), given the high-resolution black-and-white page and the colored page downsampled "
        "to the working size and upsampled back (the ICP output stand-in); high-resolution crops; only "
        "the fusion network is trained (the VAE is frozen). Writes DIR/colorflow/GraySD/MultiResNetModel.bin "
        "with the other model files linked from --models (a guide/LoRA trained there by `train icp` is "
        "kept). State for --resume is kept in DIR/state-gsrp/. Multi-GPU: start it with `accelerate launch`.",
    )
    _add_trainer_arguments(gsrp, default_steps=30000, state_dir="state-gsrp", steps_source=", paper 4.1")
    gsrp.add_argument("--crop", type=_crop_type, default=(512, 512), metavar="WxH|full",
                      help="high-resolution crop of the GSRP frame (multiples of 8; default 512x512; full: whole frame)")
    add_options(gsrp, ("input_style",), only={"input_style": ("screen", "gray")}, helps={
        "input_style": "the black-and-white input: screen, a random mix of the grayscale page and its ScreenStyle "
        "output, as ICP training (default); gray: the grayscale page"})
    gsrp.add_argument("--from-scratch", action="store_true",
                      help="a freshly initialised fusion network, instead of --models' MultiResNetModel")


def _add_trainer_arguments(parser, default_steps: int, state_dir: str, steps_source: str = "") -> None:
    """The options every trainer takes (the accelerate loop of engine/training/common.py)."""
    parser.add_argument("dataset", type=Path, metavar="DATASET", help="folder written by `train prepare`")
    add_options(parser, ("models",), helps={"models": "base models: official, tiny or a models DIR (default: official)"})
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output models folder")
    parser.add_argument("--steps", type=int, default=default_steps,
                        help=f"optimizer steps in all (default {default_steps}{steps_source})")
    parser.add_argument("--resume", action="store_true", help=f"continue from DIR/{state_dir}/")
    parser.add_argument("--batch-size", type=int, default=1, help="samples per step and process (default 1)")
    parser.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate (default 1e-5, paper 4.1)")
    parser.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    parser.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default=None,
                        help="default: the `accelerate launch` setting (its --mixed_precision or config file), else no")
    parser.add_argument("--save-every", type=int, default=500, help="steps between checkpoints (default 500)")
    parser.add_argument("--log-every", type=int, default=10, help="steps between progress lines (default 10)")
    add_options(parser, ("seed", "device"), helps={"seed": "seed of the sample order and every draw (default 0)"})


def _crop_type(text: str):
    import argparse

    if text.lower() == "full":
        return None
    parts = text.lower().split("x")
    try:
        width, height = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (0, 0)
    except ValueError:
        width = height = 0
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"expected WxH, N or full, got {text!r}")
    return width, height


def _train_gsrp(args, paths) -> int:
    from engine.training.gsrp import GSRPTrainConfig, GSRPTrainer

    config = GSRPTrainConfig(
        steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr, gradient_accumulation=args.grad_accum,
        mixed_precision=args.mixed_precision, crop=args.crop, gray_input=args.input_style, save_every=args.save_every,
        log_every=args.log_every, seed=args.seed, from_scratch=args.from_scratch, device=args.device,
    )
    trainer = GSRPTrainer(paths, args.dataset.expanduser().resolve(), args.out.expanduser().resolve(), config)
    return _run_trainer(trainer, args)
