"""The `colorflow models ...` subcommands: list, download, verify, convert, layout, make-tiny, make-random, probe."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from engine.cli.options import Default, add_options, options_from_args
from engine.core.errors import InputError, printable

OK, FAILED = 0, 1  # engine.cli.main's EXIT_OK and EXIT_PAGES_FAILED
MODELS_HELP = "official (default) or a models DIR"  # the actions that work on official files or a folder


def add_models_commands(commands) -> None:
    """The `models` command and its actions, on the top-level subparsers `commands`."""
    models = commands.add_parser("models", help="manage model files")
    model_commands = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    make_tiny = model_commands.add_parser(
        "make-tiny",
        help="write small random-weight models in the official layout (offline tests, demos)",
        description="Writes DIR/sd15/, DIR/colorflow/ (with the line-art folders sketch/, shading/ and "
        "LE/erika.pth) and DIR/pixart/ (the PixArt-alpha base with a tiny T5) with tiny random-weight models "
        "built with the real classes. Use with --models DIR. Colors they produce are meaningless.",
    )
    make_tiny.add_argument("dir", type=Path, metavar="DIR")
    make_tiny.add_argument("--seed", type=int, default=0, help="random seed of the weights (default 0)")
    make_random = model_commands.add_parser(
        "make-random",
        help="write every official model file at its official size with random values (timing and memory only)",
        description="Writes DIR/sd15/ and DIR/colorflow/ with every file of the official layout (SD1.5 UNet, VAE, "
        "text encoder, tokenizer; CLIP image encoder; GraySD guide, UNet LoRA, GSRP network; ScreenStyle) at "
        "its official size, keys and shapes as the official checkpoints, fp16 on disk (about 5.4 GB), filled "
        "with random values in seconds to a minute. Use with --models DIR to measure speed and memory: a "
        "marker makes every report say \"random weights: timing only\"; the colors are meaningless. The "
        "tokenizer has the official vocabulary size with a generated vocabulary. The line-art styles' PixArt "
        "family (DIR/pixart/, sketch/, shading/, LE/; about 11 GB more at official size: PixArt-alpha transformer, "
        "T5-XXL in two shards, two guides and LoRAs) is written with --line-art; --scale tiny always writes it. "
        "A folder holding other model files is refused.",
    )
    make_random.add_argument("dir", type=Path, metavar="DIR")
    make_random.add_argument("--seed", type=int, default=0, help="random seed of the weights (default 0)")
    make_random.add_argument("--scale", choices=("official", "tiny"), default="official",
                             help="official: every network at its official size (default); tiny: the make-tiny "
                             "models, from the same builder")
    make_random.add_argument("--line-art", action="store_true",
                             help="also write the line-art styles' PixArt family at official size (about 11 GB more)")
    download = model_commands.add_parser(
        "download",
        help="fetch the official model files once into the Hugging Face cache (about 10.7 GB)",
        description="Downloads only the files the official preset needs (SD1.5 UNet, VAE, text "
        "encoder, tokenizer, scheduler config; ColorFlow GraySD guide, UNet LoRA, GSRP network, "
        "CLIP image encoder and ScreenStyle networks) into the Hugging Face cache (HF_HOME), checks "
        "each file's sha256 against the hub's where it gives one and pins it in the lock file. "
        "Trust on first use: no sha256 is published for these files and no hub revision is pinned, "
        "so downloads follow each repository's main branch; `colorflow models list` shows how each "
        "file is verified. Interrupted downloads resume. Proxies: the usual HTTPS_PROXY variables. "
        "`colorflow models list` shows the sizes, the folder, its free space and the licences first. "
        "The line-art styles' files are optional: --line-art fetches them.",
    )
    download.add_argument(
        "--line-art", nargs="?", const="all", choices=("all", "sketch", "sketch-shading"), metavar="STYLE",
        help="also fetch the optional files of the line-art styles (sketch, sketch-shading or all, the default): "
        "ColorFlow sketch/ and shading/ (PixArt guide, transformer LoRA, GSRP network), LE/erika.pth and the "
        "PixArt-alpha base (transformer, VAE, scheduler, T5 tokenizer and text encoder): about 25.6 GB for both "
        "styles, 23.8 GB for one, 19 GB of it T5, whose weights are skipped once the prompt embeddings are cached "
        "(sizes partly estimated: `colorflow models list`); only the "
        "diffusers-layout files are fetched, never the repository's .pth checkpoints; the size is printed first. "
        "Unlike the official app, which downloads these on every start, they are fetched only on request")
    download.add_argument("--repair", action="store_true",
                          help="verify every file first and fetch again the missing and damaged ones")
    download.add_argument("--force", action="store_true", help="download every file again")
    verify = model_commands.add_parser(
        "verify",
        help="check the sha256 of every official file, or of a models DIR against its record; exit 1 if any differs",
        description="Official (default): checks each file of the official preset against the sha256 "
        "pinned at download; fetch damaged ones again with `colorflow models download --repair`. "
        "--models DIR: the first use of a folder (this command, or any run with --models DIR) records "
        "the size and sha256 of every file under DIR/sd15 and DIR/colorflow in the per-user config "
        "folder (model-folders/, one record per folder path; nothing is written into DIR, and moving "
        "DIR makes a new record). Every run then checks it cheaply: a file is hashed again only when "
        "its size, modification time, change time or inode changed, and a run refuses a folder whose "
        "files differ from the record. This command lists each changed, missing or new file.",
    )
    add_options(verify, ("models",), helps={"models": MODELS_HELP})
    verify.add_argument("--rehash", action="store_true",
                        help="hash every file of DIR, even those whose size and times are unchanged (a disk error)")
    verify.add_argument("--accept", action="store_true",
                        help="make DIR's files as they are now its record (after you changed them on purpose)")
    convert = model_commands.add_parser(
        "convert",
        help="write safetensors copies of the pickled official GraySD files (loaded in preference)",
        description="Reads GraySD/*.bin with torch.load(weights_only=True), writes .safetensors "
        "beside them and checks they reload to identical tensors. Later loads use the copies.",
    )
    add_options(convert, ("models",), helps={"models": MODELS_HELP})
    listing = model_commands.add_parser(
        "list",
        help="per-file sizes, destination folder and free space, licences, GPU, measured speed and memory",
        description="Shows each official file with its size (on disk when present, else the "
        "download size) and how it is verified (tofu: trust on first use, revision: a pinned hub "
        "commit, sha256: a published sha256), the total, the Hugging Face cache folder the files "
        "go to and its free space (with a warning when the download does not fit), the licence of each part with its "
        "URL, whether a usable GPU is present, the last speed probe, and the tiny models. Then the estimated "
        "peak memory of each stage at the working size (--size) for the official models: on a GPU in fp16, "
        "with --low-vram, and on the CPU in fp32 (RAM); see --max-vram of colorize. The optional line-art files "
        "(sketch, sketch-shading) follow in their own section, with what each style still lacks.",
    )
    add_options(listing, ("size",), defaults={"size": Default("512x800", "512x800")},
                helps={"size": "working size WxH of the memory estimate (default 512x800; the canvas is 2W x 2H)"})
    listing.add_argument("--json", action="store_true", help="print everything above as JSON")
    layout = model_commands.add_parser(
        "layout",
        help="print every key and shape of the GraySD guide, UNet LoRA, GSRP network, ScreenStyle networks and the "
        "line-art networks (PixArt guide, PixArt LoRA, line extractor)",
        description="Builds the networks at official size (no weights loaded, no download) and "
        "prints each state-dict key with its shape, to diff against the official checkpoint files.",
    )
    layout.add_argument("--json", action="store_true",
                        help="print JSON {guider, unet_lora, multires, <ScreenStyle .pth hub paths>, line_extractor, "
                        "pixart_guider, pixart_lora}; read from files, the line-art ones per style folder present "
                        "(sketch/guider, sketch/transformer_lora, sketch/multires, ...)")
    add_options(layout, ("models",), defaults={"models": Default(None, "none: the networks built at official size")},
                helps={"models": "read the keys and shapes from the files of this model source (official, tiny "
                       "or a models DIR) instead of building the networks (default: none, built at official size)"})
    probe = model_commands.add_parser(
        "probe",
        help="measure seconds per page on this machine: one generated page colored with the models",
        description="Colors one generated demo page with the chosen models (the default pipeline: "
        "ScreenStyle pass, RAP, ICP, GSRP; empty caches, so nothing is reused) and prints the seconds "
        "of each stage and the total per page; model loading is timed apart. The result is stored "
        "in the config folder and shown by `colorflow models list` and the Model manager.",
    )
    add_options(probe, ("models", "device", "steps", "size"))
    probe.add_argument("--json", action="store_true", help="print the result as JSON")


def _byte_progress_sink():
    """A tqdm byte bar per downloaded file, fed by engine Progress events."""
    from tqdm import tqdm

    from engine.core.events import Progress

    bars: dict[str, tqdm] = {}

    def emit(event) -> None:
        if isinstance(event, Progress) and event.stage == "download" and event.page:
            bar = bars.get(event.page)
            if bar is None:
                bar = bars[event.page] = tqdm(total=event.total, unit="B", unit_scale=True, desc=event.page, file=sys.stderr)
            bar.update(event.step - bar.n)

    def close() -> None:
        for bar in bars.values():
            bar.close()

    return emit, close


def cmd_probe(args) -> int:
    from engine.core.devices import precheck_device
    from engine.models.sources import check_models

    options = options_from_args(args)  # --steps in its declared range
    precheck_device(options.device)
    check_models(args.models)  # missing official files: one line naming the download, no torch
    from engine.core.events import Progress
    from engine.benchmarks.probe import run_probe

    seen: set[str] = set()

    def emit(event) -> None:
        if isinstance(event, Progress) and event.stage not in seen and not args.json:
            seen.add(event.stage)
            print(f"probe: {'loading models' if event.stage == 'load' else event.stage}…", file=sys.stderr)

    result = run_probe(options.models, options.device, options.steps, options.size, emit=emit)
    if args.json:
        print(json.dumps(result, indent=2))
        return OK
    from engine.models.speed import probe_path

    print(f"speed probe: {args.models} models on {result['device_name']}, {result['dtype']}, "
          f"{result['size']}, {result['steps']} steps, one generated page")
    from engine.models.sources import random_weights_kind, random_weights_notice

    if random_weights_kind(args.models):
        print(random_weights_notice(random_weights_kind(args.models)))
    for stage, seconds in result["stages_s"].items():
        print(f"  {stage:<12}{seconds:8.1f} s")
    print(f"  {'total':<12}{result['page_s']:8.1f} s per page (model loading {result['load_s']:.1f} s, not counted)")
    print(f"stored in {probe_path()}; `colorflow models list` shows it")
    return OK


def print_check_progress(event) -> None:
    """The first run after a download or an upgrade hashes every official file, the first run
    with a models DIR records its files (seconds per GB): one line per file hashed."""
    from engine.models.folder_record import RECHECK_STAGE, RECORD_STAGE

    what = {RECORD_STAGE: "recording the sha256 of the model files of this folder",
            RECHECK_STAGE: "checking changed model files against their recorded sha256"}
    if event.step < event.total:
        print(f"{what.get(event.stage, 'checking the model files against their pinned sha256 (once)')}: "
              f"{event.step + 1}/{event.total} {printable(event.page)}", file=sys.stderr, flush=True)


def verify_folder(args) -> int:
    """`models verify --models DIR`: record the folder, or list each file that differs from its record."""
    from engine.models.folder_record import accept_command, check_folder
    from engine.io.storage import human_bytes
    from engine.models.sources import models_folder

    if args.models == "tiny":
        raise InputError("the tiny preset is generated on this machine (random weights): nothing to verify; "
                         "to check a folder, pass it with --models DIR")
    root = models_folder(args.models).sd15.parent
    check = check_folder(root, print_check_progress, rehash=args.rehash, accept=args.accept)
    from engine.models.sources import random_weights_kind, random_weights_notice

    kind = random_weights_kind(root)
    if kind:  # first, before any file list: what these weights are good for
        print(random_weights_notice(kind))
    for change in check.changes:  # names from the user's folder: control characters escaped
        print(printable(change.line()))
    count = len(check.entries)
    if check.first:
        print(printable(f"recorded {count} files of {root} in {check.record} ({human_bytes(check.total_bytes)} "
                        f"hashed); every run with --models {root} now checks them"))
    elif args.accept:
        print(printable(f"recorded {count} files of {root} ({len(check.changes)} change(s) accepted)"))
    elif check.changes:
        print(printable(f"{len(check.changes)} file(s) of {root} differ from their record; if that is intended, "
                        f"record them with: {accept_command(root)}"))
        return FAILED
    else:
        how = "every file hashed" if args.rehash else \
            f"{check.hashed} hashed, the others unchanged in size and times; --rehash hashes every file"
        print(printable(f"ok  {count} files of {root} match their record ({how})"))
    return OK


def write_random_models(args) -> int:
    """`models make-tiny DIR` and `models make-random DIR`: one builder, the size a parameter. A
    folder with model files that are not random weights is refused (they would be overwritten)."""
    import time

    from engine.io.storage import human_bytes
    from engine.models.folder_record import accept_if_recorded, model_files
    from engine.models.sources import make_random, random_weights_kind, random_weights_notice

    root = args.dir.expanduser().resolve()
    scale = "tiny" if args.models_command == "make-tiny" else args.scale
    if root.is_dir() and model_files(root) and random_weights_kind(root) is None:
        raise InputError(printable(f"{root} holds model files that are not random weights; they would be "
                                   f"overwritten: choose a new or empty folder"))
    start = time.perf_counter()
    paths = make_random(root, scale, seed=args.seed, line_art=getattr(args, "line_art", False))
    seconds = time.perf_counter() - start
    accept_if_recorded(root)  # written anew on purpose: a record of the old ones is replaced
    if args.models_command == "make-tiny":
        print(f"tiny models written: {paths.sd15.parent}")
        return OK
    size = sum(path.stat().st_size for path in model_files(root).values())
    print(printable(f"random weights written: {root} ({scale} size, {human_bytes(size)} in {seconds:.0f} s); "
                    f"use them with --models {root}"))
    print(random_weights_notice(random_weights_kind(root)))
    return OK


def cmd_models(args) -> int:
    if args.models_command in ("make-tiny", "make-random"):
        return write_random_models(args)
    elif args.models_command == "download":
        from engine.models.hub import download
        from engine.models.hub_cache import missing_files
        from engine.models.pins import verify
        from engine.models.presets import preset_files

        files = None
        if args.repair:
            files = [s.file for s in verify("official", components=None) if s.status in ("missing", "corrupt")]
        elif not args.force:
            files = missing_files("official")
        if args.line_art:
            from engine.cli.models_list import line_art_to_fetch

            files = (files if files is not None else preset_files("official")) + line_art_to_fetch(args)
        if files == []:
            print("all official model files are present (verify: colorflow models verify)")
            return OK
        emit, close = _byte_progress_sink()
        try:
            states = download("official", emit=emit, force=args.force, files=files)
        finally:
            close()
        for state in states:
            print(f"{state.status:>8}  {state.file.repo}/{state.file.path}  ({state.detail})")
    elif args.models_command == "verify" and args.models != "official":
        return verify_folder(args)
    elif args.models_command == "verify":
        from engine.models.pins import verify

        if args.accept:
            raise InputError("--accept is for a models DIR: official files are pinned to the hub's checksums; "
                             "fetch damaged ones again with `colorflow models download --repair`")

        states = verify("official", components=None)  # the line-art files too: "optional" until downloaded
        for state in states:
            print(f"{state.status:>8}  {state.file.repo}/{state.file.path}  {state.detail}")
        bad = [s for s in states if s.status in ("missing", "corrupt")]
        base = [s for s in states if s.file.component == "base"]
        if bad and all(s.status == "missing" for s in base) and bad == [s for s in base]:  # a fresh install
            print("the official models are not downloaded yet; fetch them once with: colorflow models download")
            return FAILED
        if bad:
            print(f"{len(bad)} file(s) missing or damaged; fetch them again with: colorflow models download --repair")
            return FAILED
    elif args.models_command == "convert":
        from engine.models.hub import convert_to_safetensors
        from engine.models.sources import resolve_models

        from engine.models.folder_record import accept_if_recorded

        paths = resolve_models(args.models)  # a models DIR: unchanged since recorded, or refused
        written = convert_to_safetensors(paths.graysd, report=print)
        if written and paths.content_id:
            accept_if_recorded(paths.sd15.parent)  # the copies are ours: the record takes them
        print(f"{len(written)} file(s) converted" if written else "nothing to convert")
    elif args.models_command == "list":
        from engine.cli.models_list import print_models_list

        print_models_list(args.size, as_json=args.json)
    elif args.models_command == "probe":
        return cmd_probe(args)
    elif args.models_command == "layout":
        from engine.models.layout import folder_layout, official_layout

        if args.models is None:
            layout = official_layout()
        else:
            from engine.models.sources import models_folder, resolve_models

            source = args.models  # a DIR is only read here: no record made or checked
            layout = folder_layout(resolve_models(source) if source in ("official", "tiny") else models_folder(source))
        if args.json:
            print(json.dumps(layout, indent=1))
        else:
            for network, keys in layout.items():
                print(f"# {network}: {len(keys)} tensors")
                for key, shape in keys.items():
                    print(f"{key}\t{shape}")
    return OK

