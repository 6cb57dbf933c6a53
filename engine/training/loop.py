"""The one accelerate training loop ICP and GSRP run: optimizer, clipping, logged loss, EMA, samples, trackers, resume.

A trainer (icp.py, gsrp.py) says what its data and model are (`samples_at`, `batch_loss`,
`sample_image`, `write_models`); this loop does the rest the same way for both. Every random draw
of a sample is keyed by the sample's global position in the seeded order (common.batch_positions),
so a run is the same whatever the number of processes and a resumed run is the same as an
uninterrupted one. The resume state (DIR/<STATE_DIR>/) holds accelerate's state (weights,
optimizer, LR schedule, RNG states, the EMA) and the data position; it is replaced atomically.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from engine.core.errors import InputError
from engine.core.events import Event, Progress, ignore
from engine.models import ModelPaths
from engine.training.common import batch_positions, find_state, index_at, progress_line, save_state_atomically

if TYPE_CHECKING:  # torch is imported where it runs: `colorflow --help` stays light
    import torch
    from accelerate import Accelerator
    from PIL import Image


@dataclass
class TrainConfig:
    """Options every trainer takes (defaults: paper 4.1 where it says)."""

    steps: int = 1000
    batch_size: int = 1  # per process
    learning_rate: float = 1e-5  # paper 4.1
    gradient_accumulation: int = 1
    mixed_precision: str | None = None  # "no", "fp16", "bf16"; None: from `accelerate launch`/its config, else "no"
    max_grad_norm: float = 1.0  # the gradients' norm is clipped to this at each optimizer step; 0: no clipping
    save_every: int = 500
    log_every: int = 10
    seed: int = 0
    from_scratch: bool = False  # fresh trainable weights instead of --models' ones
    device: str = "auto"
    ema_decay: float = 0.0  # > 0: keep an EMA of the trained weights (diffusers EMAModel); outputs use it
    sample_every: int = 0  # > 0: run inference on the held-out page every N steps into DIR/<SAMPLES_DIR>/
    tensorboard: bool = True  # log to DIR/logs through accelerate's tracker when tensorboard is installed


def make_accelerator(out: Path, config: TrainConfig) -> Accelerator:
    """An Accelerator on the CPU when asked (or when no CUDA device exists), else the launch's
    devices; logging to TensorBoard in DIR/logs when asked and installed."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, is_tensorboard_available

    cpu = config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available())
    return Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation,
        cpu=cpu,
        log_with="tensorboard" if config.tensorboard and is_tensorboard_available() else None,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
    )


class Trainer:
    """The training loop; a subclass loads its data and models and calls `hold_out` and `prepare`."""

    NAME = ""  # the tracker's run name
    STATE_DIR = "state"  # each trainer its own: ICP and GSRP may write into one DIR
    LOG_FILE = "log.jsonl"
    SAMPLES_DIR = "samples"

    def __init__(self, models: ModelPaths, out: Path, config: TrainConfig, emit: Callable[[Event], None] = ignore,
                 printer: Callable[[str], None] | None = print) -> None:
        from accelerate.utils import set_seed

        self.models, self.out, self.config, self.emit, self.printer = models, Path(out), config, emit, printer
        self.out.mkdir(parents=True, exist_ok=True)
        self.accelerator = make_accelerator(self.out, config)
        if config.tensorboard and not self.accelerator.log_with and printer and self.accelerator.is_main_process:
            printer("TensorBoard logging off (pip install tensorboard or tensorboardX); "
                    f"losses go to DIR/{self.LOG_FILE}")
        set_seed(config.seed)  # before the subclass builds any fresh weights
        self.step = 0  # optimizer steps done
        self.batches = 0  # micro-batches drawn by this process
        self.losses: list[float] = []  # loss of every optimizer step of this run (all processes' mean)
        self.ema = None
        self._trackers = False

    # --- what a trainer provides ----------------------------------------------------------
    def samples_at(self, positions: list[int]) -> list[Any]:
        """The samples at these global positions of the seeded order (micro-batch `self.batches`)."""
        raise NotImplementedError

    def batch_loss(self, positions: list[int], samples: list[Any]) -> torch.Tensor:
        raise NotImplementedError

    def sample_image(self) -> Image.Image:
        """Inference on the held-out page with the weights being trained."""
        raise NotImplementedError

    def write_models(self) -> None:
        """The trained weights in the official layout (every process calls it)."""
        raise NotImplementedError

    # --- setup ----------------------------------------------------------------------------
    def hold_out(self, pages: int, dataset: Path) -> None:
        """With sample_every, the dataset's last page is held out for the samples; the rest train."""
        if self.config.sample_every > 0 and pages < 2:
            raise InputError(f"{dataset}: --sample-every holds one page out of training; the dataset needs 2 or more")
        self.held_out = pages - 1 if self.config.sample_every > 0 else None
        self.train_indices = [i for i in range(pages) if i != self.held_out]

    def prepare(self, model: torch.nn.Module) -> None:
        """AdamW on the model's trainable parameters at a constant learning rate, through accelerate;
        the EMA of those parameters when asked."""
        import torch

        acc, cfg = self.accelerator, self.config
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        self.model, self.optimizer, self.schedule = acc.prepare(model, optimizer, schedule)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        if cfg.ema_decay > 0:
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(self.trainable, decay=cfg.ema_decay)
            acc.register_for_checkpointing(self.ema)

    # --- data -----------------------------------------------------------------------------
    def index_at(self, position: int) -> tuple[int, int]:
        """(epoch, dataset index) at a global position, among the training (not held-out) pages."""
        return index_at(position, self.train_indices, self.config.seed)

    def next_batch(self) -> tuple[list[int], list[Any]]:
        """(global positions, samples) of this process's next micro-batch; advances the data position."""
        acc = self.accelerator
        positions = batch_positions(self.batches, self.config.batch_size, acc.num_processes, acc.process_index)
        samples = self.samples_at(positions)
        self.batches += 1
        return positions, samples

    # --- training -------------------------------------------------------------------------
    def train(self, until: int | None = None) -> int:
        """Train to `until` (default: config.steps); checkpoints every save_every and at config.steps."""
        acc, cfg = self.accelerator, self.config
        until = cfg.steps if until is None else min(until, cfg.steps)
        self._start_trackers()
        self.emit(Progress("train", self.step, cfg.steps))
        started, first_step, running = time.perf_counter(), self.step, 0.0
        while self.step < until:
            with acc.accumulate(self.model):
                positions, samples = self.next_batch()
                loss = self.batch_loss(positions, samples)
                acc.backward(loss)
                if acc.sync_gradients and cfg.max_grad_norm > 0:
                    acc.clip_grad_norm_(self.trainable, cfg.max_grad_norm)
                self.optimizer.step()
                self.schedule.step()
                self.optimizer.zero_grad()
            # Every process's mean loss: one all-reduce (sum / processes), the value gather().mean() gives.
            running += acc.reduce(loss.detach(), reduction="mean").item()
            if not acc.sync_gradients:
                continue
            self.step += 1
            if self.ema is not None:
                self.ema.step(self.trainable)
            step_loss, running = running / cfg.gradient_accumulation, 0.0
            self.losses.append(step_loss)
            self.emit(Progress("train", self.step, cfg.steps))
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                self._log(step_loss, started, first_step)
            if cfg.sample_every > 0 and self.step % cfg.sample_every == 0:
                self.write_sample()
            if self.step % cfg.save_every == 0 or self.step == cfg.steps:
                self.save()
        if self.step >= cfg.steps and self._trackers:
            acc.end_training()
            self._trackers = False
        return self.step

    def _start_trackers(self) -> None:
        acc = self.accelerator
        if acc.log_with and not self._trackers:
            simple = {k: v for k, v in asdict(self.config).items() if isinstance(v, (int, float, str, bool))}
            acc.init_trackers(self.NAME, config=simple)
            self._trackers = True

    def _log(self, loss: float, started: float, first_step: int) -> None:
        acc = self.accelerator
        lr = self.schedule.get_last_lr()[0]
        if self._trackers:
            acc.log({"loss": loss, "lr": lr}, step=self.step)
        if not acc.is_main_process:
            return
        with open(self.out / self.LOG_FILE, "a") as handle:  # line-append: a kill loses at most this line
            handle.write(json.dumps({"step": self.step, "loss": loss, "lr": lr, "time": time.time()}) + "\n")
        if self.printer:
            self.printer(progress_line(self.step, self.config.steps, loss, self.step - first_step,
                                       time.perf_counter() - started))

    # --- EMA, samples -----------------------------------------------------------------------
    def with_ema(self, action: Callable[[], object]) -> object:
        """Run `action` with the EMA weights in the model (the trained ones put back after)."""
        if self.ema is None:
            return action()
        self.ema.store(self.trainable)
        self.ema.copy_to(self.trainable)
        try:
            return action()
        finally:
            self.ema.restore(self.trainable)

    def write_sample(self) -> Path | None:
        """Inference on the held-out page (EMA weights when kept) into DIR/<SAMPLES_DIR>/step_XXXXXX.png,
        written atomically and sent to TensorBoard; None on other processes."""
        from accelerate.utils import DistributedType

        acc = self.accelerator
        path = None
        # Under FSDP every forward gathers parameters (a collective): all processes run it alike.
        if acc.is_main_process or acc.distributed_type == DistributedType.FSDP:
            image = self.with_ema(self._sample_in_eval_mode)
            if acc.is_main_process:
                path = self._save_sample(image)
        acc.wait_for_everyone()
        return path

    def _sample_in_eval_mode(self) -> Image.Image:
        self.model.eval()
        try:
            with self.accelerator.autocast():
                return self.sample_image()
        finally:
            self.model.train()

    def _save_sample(self, image: Image.Image) -> Path:
        import numpy as np

        from engine.io.fileio import atomic_save_image

        path = self.out / self.SAMPLES_DIR / f"step_{self.step:06d}.png"
        atomic_save_image(image, path)
        if self._trackers:
            tracker = self.accelerator.get_tracker("tensorboard", unwrap=True)
            tracker.add_image("sample", np.asarray(image), self.step, dataformats="HWC")
        return path

    # --- checkpoints ----------------------------------------------------------------------
    def save(self) -> None:
        """The resume state, replacing DIR/<STATE_DIR>/ only once complete, and the weights (the EMA's
        when kept) in the official layout."""
        acc = self.accelerator
        save_state_atomically(acc, self.out, {
            "step": self.step, "samples_seen": self.batches * self.config.batch_size * acc.num_processes,
            "held_out": self.held_out, "config": asdict(self.config),
        }, self.STATE_DIR)
        self.with_ema(self.write_models)
        acc.wait_for_everyone()

    def resume(self) -> int:
        """Load DIR/<STATE_DIR>/ (or its .old twin when a kill fell between the two renames of save)."""
        acc, cfg = self.accelerator, self.config
        state, saved = find_state(self.out, self.STATE_DIR)
        if "samples_seen" in saved:
            seen = int(saved["samples_seen"])
        elif "consumed" in saved:  # a GSRP state written before the trainers shared this loop: per process
            seen = int(saved["consumed"]) * acc.num_processes
        else:
            raise InputError(f"{state}: written by an older ColorFlow (whole-UNet state); it cannot be resumed, "
                             "start again from its saved models with --models")
        if bool(saved["config"].get("ema_decay")) != (self.ema is not None):
            raise InputError(f"{state}: saved {'with' if saved['config'].get('ema_decay') else 'without'} an EMA; "
                             "resume with the same --ema-decay setting")
        if saved.get("held_out") != self.held_out:
            raise InputError(f"{state}: saved with held-out page {saved.get('held_out')}, now {self.held_out}; "
                             "resume with the same --sample-every setting (0 or not)")
        per_batch = cfg.batch_size * acc.num_processes
        if seen % per_batch:
            raise InputError(f"{state}: {seen} samples seen is not a whole number of batches of {per_batch} "
                             "(batch size x processes); resume with the batch size and process count it used")
        acc.load_state(str(state))
        self.step, self.batches = int(saved["step"]), seen // per_batch
        return self.step
