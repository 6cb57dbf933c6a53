"""Checks of a run's arguments made before anything is written: no OUT is made for a refused run."""

from __future__ import annotations

from pathlib import Path

from engine.core.errors import InputError, ModelError


def check_out_not_a_file(args, folder: Path) -> None:
    """--out (or a folder above it) naming an existing file is refused, saying so."""
    from engine.io.storage import file_in_the_way

    blocker = file_in_the_way(folder)
    if blocker is None:
        return
    advice = "name a folder or a NAME.cbz" if args.command == "colorize" else "name a folder"
    if blocker == args.out.expanduser().absolute():
        raise InputError(f"--out {args.out} is a file; {advice}")
    raise InputError(f"--out {args.out}: {blocker} is a file; {advice}")


def check_device_and_model_names(args) -> None:
    """--device possible here, and --models a preset or a folder in the models layout (no hashing:
    the files are checked later, with the lock held), with the choices when it is neither."""
    from engine.core.devices import precheck_device
    from engine.models.sources import MODEL_SOURCE_NAMES, models_folder

    precheck_device(args.device)
    if args.models not in MODEL_SOURCE_NAMES:
        try:
            models_folder(args.models)
        except ModelError as exc:
            raise ModelError(f"--models {exc}") from exc
