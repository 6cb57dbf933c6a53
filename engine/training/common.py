"""Pieces the training loop and the trainers share: the seeded sample order, trainer state, progress lines, output links."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from engine.io.fileio import atomic_write_json
from engine.models import ModelPaths
from engine.training.data import sample_rng

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator

STATE_DIR = "state"
TRAINER_STATE = "trainer_state.json"


def batch_positions(batch: int, batch_size: int, num_processes: int = 1, process_index: int = 0) -> list[int]:
    """Global positions (in the seeded sample order) of micro-batch `batch` of one process: process
    p holds (batch*P + p)*B ... + B-1, so the P processes' batches together are the one-process
    batch of P*B (a DDP run and a doubled batch see the same samples)."""
    first = (batch * num_processes + process_index) * batch_size
    return list(range(first, first + batch_size))


def position_generator(seed: int, stream: str, position: int) -> torch.Generator:
    """The generator of a sample's draws of `stream`, keyed by its global position in the seeded order
    (per sample, so the draws do not depend on how samples are split into batches or processes)."""
    import torch

    return torch.Generator().manual_seed(sample_rng(seed, stream, position).getrandbits(63))


def index_at(position: int, indices: Sequence[int], seed: int) -> tuple[int, int]:
    """(epoch, dataset index) at a global position: a per-epoch seeded permutation of `indices`."""
    epoch, offset = divmod(position, len(indices))
    order = list(indices)
    sample_rng(seed, "order", epoch).shuffle(order)
    return epoch, order[offset]


def save_state_atomically(accelerator: Accelerator, out: Path, trainer_state: dict, state_dir: str = STATE_DIR) -> None:
    """accelerate's state plus DIR/<state_dir>/trainer_state.json (what it does not hold: step, data
    position, options), written to <state_dir>.partial and swapped in only once complete, so a kill
    mid-save resumes from the last complete state. Every process calls it (save_state is collective)."""
    import shutil

    state, partial, old = (Path(out) / name for name in (state_dir, f"{state_dir}.partial", f"{state_dir}.old"))
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)  # a save cut short earlier
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    if accelerator.is_main_process:
        atomic_write_json(partial / TRAINER_STATE, trainer_state)
        if state.exists():
            state.rename(old)
        partial.rename(state)  # the one moment the new state takes over
        if old.exists():
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def find_state(out: Path, state_dir: str = STATE_DIR) -> tuple[Path, dict]:
    """The state folder to resume from and its trainer state: DIR/<state_dir>, or <state_dir>.old
    when a kill fell between the two renames of save_state_atomically; InputError when none."""
    for folder in (Path(out) / state_dir, Path(out) / f"{state_dir}.old"):
        if (folder / TRAINER_STATE).is_file():
            return folder, json.loads((folder / TRAINER_STATE).read_text())
    from engine.core.errors import InputError

    raise InputError(f"{out}: nothing to resume (no {state_dir}/{TRAINER_STATE})")


def progress_line(step: int, total: int, loss: float, done_since_start: int, seconds: float) -> str:
    """`step 12/100  loss 0.1234  2.50 steps/s  ETA 0:00:35` (rate over this run's steps)."""
    rate = done_since_start / max(seconds, 1e-9)
    left = (total - step) / rate if rate > 0 else 0.0
    hours, rest = divmod(int(round(left)), 3600)
    return f"step {step}/{total}  loss {loss:.4f}  {rate:.2f} steps/s  ETA {hours}:{rest // 60:02d}:{rest % 60:02d}"


def trained_stems(folder: Path) -> set[str]:
    """Stems (name up to the first dot) of the real, non-link files in an output GraySD folder:
    weights a trainer wrote there, which links to the base must neither replace nor shadow."""
    folder = Path(folder)
    if not folder.is_dir():
        return set()
    return {p.name.split(".")[0] for p in folder.iterdir() if p.is_file() and not p.is_symlink() and p.name[0] != "."}


def link_base(base: ModelPaths, out: Path, skip_graysd: Callable[[str], bool] = lambda name: False) -> ModelPaths:
    """DIR/sd15 and DIR/colorflow/* (GraySD file by file) as symlinks to the base's files; GraySD
    files `skip_graysd` names, and those whose stem DIR already holds as a trained real file (another
    trainer's output), are not linked."""
    from engine.models.sources import GRAYSD_SUBDIR

    out = Path(out)
    paths = ModelPaths(out / "sd15", out / "colorflow")
    paths.colorflow.mkdir(parents=True, exist_ok=True)
    link(Path(base.sd15).resolve(), paths.sd15)
    for entry in Path(base.colorflow).iterdir():
        if entry.name != GRAYSD_SUBDIR:
            link(entry.resolve(), paths.colorflow / entry.name)
    graysd = paths.graysd
    graysd.mkdir(parents=True, exist_ok=True)
    trained = trained_stems(graysd)
    for entry in Path(base.graysd).iterdir():
        if skip_graysd(entry.name) or entry.name.split(".")[0] in trained:
            continue
        link(entry.resolve(), graysd / entry.name)
    return paths


def remove_files(paths: Iterable[Path]) -> None:
    """Delete files or links (a folder is left alone)."""
    for path in paths:
        if path.is_symlink() or path.is_file():
            path.unlink()


def link(target: Path, link: Path) -> None:
    """`link` -> `target` (replacing another link or a file; a real folder is left alone)."""
    if link.is_symlink() or link.exists():
        if link.is_symlink() and Path(os.readlink(link)) == target:
            return
        if link.is_symlink() or link.is_file():
            link.unlink()
        else:
            return  # a real folder the user put there: left alone
    link.symlink_to(target, target_is_directory=target.is_dir())
