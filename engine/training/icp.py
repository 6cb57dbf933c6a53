"""ICP training (paper 3.2, 4.1): the Colorization Guide and the UNet LoRA on noise-prediction MSE, via accelerate.

Z_0 = VAE(colored canvas); the guide sees Z_t plus the 9 conditioning channels exactly as
inference builds them (icp/colorize.py: latent of the canvas with the page blacked out | mask,
1 on the references | latent of the page area alone); the SD1.5 UNet is frozen except its LoRA
(rank 64, alpha 64, the official targets). Timesteps are drawn with the paper's shift (eq. 5).

Every random draw of a sample (VAE posterior noise, timestep, diffusion noise) comes from a
generator seeded by (seed, the sample's global position in the seeded order), so a run is the
same whatever the number of processes (DDP with batch 1 on 2 processes = batch 2 on one) and a
resumed run is the same as an uninterrupted one. The resume state (DIR/state/) holds the
trainable weights only (guide + LoRA, see icp_model.py), the optimizer, the LR schedule, the RNG
states, the EMA and the data position; it is replaced atomically, so a run killed at any point
resumes from its last complete checkpoint. Results are written in the official layout so
`--models DIR` loads them.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from engine.errors import InputError
from engine.events import Event, Progress, ignore
from engine.models import ModelPaths
from engine.training.common import (
    batch_positions, find_state, index_at, link_base, progress_line, save_state_atomically,
)
from engine.training.data import TrainingSet, draw_crop_size, guide_images_at, sample_rng

if TYPE_CHECKING:  # torch is imported where it runs: `colorflow --help` stays light
    import torch

LOG_FILE = "log.jsonl"
SAMPLES_DIR = "samples"


def shift_timesteps(t: torch.Tensor, mu: float = 1.5, total: int = 1000) -> torch.Tensor:
    """Paper eq. 5: t' = e^mu / (e^mu + (T / t - 1)) * T, for t in (0, T] (mu 0: unchanged)."""
    import torch

    t = torch.as_tensor(t, dtype=torch.float64)
    return math.exp(mu) / (math.exp(mu) + (total / t - 1.0)) * total


def sample_timesteps(batch: int, mu: float, total: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Integer timesteps in [0, T-1]: t ~ U(0, T], shifted, then floored (t' = T maps to T-1)."""
    import torch

    u = 1.0 - torch.rand(batch, generator=generator, dtype=torch.float64)  # (0, 1]
    shifted = shift_timesteps(u * total, mu, total)
    return shifted.floor().long().clamp(0, total - 1)


@dataclass
class ICPTrainConfig:
    """Options of `colorflow train icp` (defaults: paper 4.1 where it says)."""

    steps: int = 1000
    batch_size: int = 1  # per process
    learning_rate: float = 1e-5
    mu: float = 1.5
    gradient_accumulation: int = 1
    mixed_precision: str | None = None  # "no", "fp16", "bf16"; None: from `accelerate launch`/its config, else "no"
    downsample: float = 1.0  # patch-wise: crops are downsampled by this factor
    full_canvas: bool = False  # no patch-wise crops
    save_every: int = 500
    log_every: int = 10
    seed: int = 0
    prompt: str = "manga"
    from_scratch: bool = False  # guide from the UNet and a fresh rank-64 LoRA, not GraySD
    device: str = "auto"
    ema_decay: float = 0.0  # > 0: keep an EMA of the trained weights (diffusers EMAModel); outputs use it
    sample_every: int = 0  # > 0: colorize the held-out page every N steps into DIR/samples/
    sample_steps: int = 10  # denoising steps of those samples
    tensorboard: bool = True  # log to DIR/logs through accelerate's tracker when tensorboard is installed


def sample_generator(seed: int, position: int) -> torch.Generator:
    """The random stream of the sample at global position `position` of the seeded order."""
    import torch

    return torch.Generator().manual_seed(sample_rng(seed, "noise", position).getrandbits(63))


def _vae_latents(vae, images, generator) -> torch.Tensor:
    import torch

    from engine.icp.colorize import to_tensor

    batch = torch.cat([to_tensor(im) for im in images]).to(vae.device, vae.dtype)
    posterior = vae.encode(batch).latent_dist
    noise = torch.randn(posterior.mean.shape, generator=generator, dtype=torch.float32)
    return (posterior.mean + posterior.std * noise.to(posterior.mean)) * vae.config.scaling_factor


def conditioning(vae, grays, masks, page_boxes, generator) -> torch.Tensor:
    """The guide's 9 channels for a batch, as Colorizer.conditioning: latent(references only) |
    mask (1 on references, bilinear to the latent grid) | latent(page area alone)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    rows = []
    for gray, mask, box in zip(grays, masks, page_boxes):
        references_only, page_only = guide_images_at(gray, box)
        latents = _vae_latents(vae, [references_only, page_only], generator)
        array = 1.0 - torch.from_numpy(np.asarray(mask.convert("L"), dtype=np.float32)) / 255.0
        mask_latent = F.interpolate(array[None, None], size=tuple(latents.shape[2:]), mode="bilinear", align_corners=False)
        rows.append(torch.cat([latents[:1], mask_latent.to(latents), latents[1:]], dim=1))
    return torch.cat(rows)


class ICPTrainer:
    """Loads the models, runs training steps and writes checkpoints in the official layout."""

    def __init__(self, models: ModelPaths, dataset: Path, out: Path, config: ICPTrainConfig,
                 emit: Callable[[Event], None] = ignore, printer: Callable[[str], None] | None = print) -> None:
        import torch
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration, is_tensorboard_available, set_seed

        self.models, self.out, self.config, self.emit, self.printer = models, Path(out), config, emit, printer
        self.out.mkdir(parents=True, exist_ok=True)
        self.data = TrainingSet(dataset, seed=config.seed)
        if config.sample_every > 0 and len(self.data) < 2:
            raise InputError(f"{dataset}: --sample-every holds one page out of training; the dataset needs 2 or more")
        # The dataset's last page is held out for the sample colorizations; the rest are trained on.
        self.held_out = len(self.data) - 1 if config.sample_every > 0 else None
        self.train_indices = [i for i in range(len(self.data)) if i != self.held_out]
        log_with = "tensorboard" if config.tensorboard and is_tensorboard_available() else None
        cpu = config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available())
        self.accelerator = Accelerator(
            mixed_precision=config.mixed_precision,
            gradient_accumulation_steps=config.gradient_accumulation,
            cpu=cpu,
            log_with=log_with,
            project_config=ProjectConfiguration(project_dir=str(self.out), logging_dir=str(self.out / "logs")),
        )
        if config.tensorboard and not log_with and printer and self.accelerator.is_main_process:
            printer("TensorBoard logging off (pip install tensorboard or tensorboardX); losses go to DIR/log.jsonl")
        set_seed(config.seed)
        self._load_models()
        self.step = 0  # optimizer steps done
        self.batches = 0  # micro-batches drawn by this process
        self.losses: list[float] = []  # loss of every optimizer step of this run (all processes' mean)
        self._trackers = False

    # --- models ---------------------------------------------------------------------------
    def _load_models(self) -> None:
        import torch
        from diffusers import DDPMScheduler
        from diffusers.training_utils import cast_training_params

        from engine.icp.guide import ColorGuiderSDModel
        from engine.loading import load_diffusion
        from engine.models.checkpoints import attach_lora
        from engine.training.icp_model import GuidedDenoiser, keep_trainable, load_trainable

        acc, cfg = self.accelerator, self.config
        c = load_diffusion(self.models, "cpu", dtype=torch.float32)
        unet, guide = c.unet, c.guide
        if cfg.from_scratch:
            unet.delete_adapters("default")
            guide = ColorGuiderSDModel.from_unet(unet)
            attach_lora(unet)
        self.multiple = c.vae_scale * 2 ** (len(unet.config.block_out_channels) - 1)
        self.noise_scheduler = DDPMScheduler.from_config(c.scheduler_config)
        with torch.no_grad():
            ids = c.tokenizer([cfg.prompt], padding="max_length", max_length=c.tokenizer.model_max_length,
                              truncation=True, return_tensors="pt").input_ids
            self.text = c.text_encoder(ids)[0]
        unet.requires_grad_(False)
        for name, parameter in unet.named_parameters():
            if ".lora_" in name:
                parameter.requires_grad_(True)
        guide.requires_grad_(True)
        # Frozen weights in the autocast dtype, as diffusers' training scripts: half the memory
        # of the 859 M-parameter UNet base; the trained guide and LoRA stay fp32 (master weights).
        weights = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(acc.mixed_precision, torch.float32)
        unet.to(dtype=weights)
        cast_training_params(unet, dtype=torch.float32)
        model = GuidedDenoiser(guide, unet)
        model.train()
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(self.trainable, lr=cfg.learning_rate)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        acc.register_save_state_pre_hook(keep_trainable)
        acc.register_load_state_pre_hook(load_trainable)
        self.model, self.optimizer, self.schedule = acc.prepare(model, optimizer, schedule)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.guide, self.unet = guide, unet  # the modules inside the prepared wrapper
        self.ema = None
        if cfg.ema_decay > 0:
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(self.trainable, decay=cfg.ema_decay)
            acc.register_for_checkpointing(self.ema)
        self.vae = c.vae.to(acc.device, weights)
        self.text = self.text.to(acc.device)
        c.text_encoder.to(acc.device, weights)
        self.components = c

    # --- data -----------------------------------------------------------------------------
    def _batch_positions(self) -> list[int]:
        """Global positions of this process's next micro-batch (common.batch_positions)."""
        acc = self.accelerator
        return batch_positions(self.batches, self.config.batch_size, acc.num_processes, acc.process_index)

    def _index_at(self, position: int) -> tuple[int, int]:
        """(epoch, dataset index) at a global position, among the training (not held-out) pages."""
        return index_at(position, self.train_indices, self.config.seed)

    def _batch(self):
        """(positions, samples) of the next micro-batch; one crop size per micro-batch, the same on
        every process (a batch needs one shape)."""
        positions = self._batch_positions()
        full = self.data.size.canvas
        page = self.data.size.query_box_in_canvas
        crop = draw_crop_size(sample_rng(self.config.seed, "crop-size", self.batches), full, page, self.multiple,
                              self.config.full_canvas)
        self.batches += 1
        samples = []
        for position in positions:
            epoch, index = self._index_at(position)
            samples.append(self.data.sample(index, epoch, crop, self.config.downsample, self.multiple))
        return positions, samples

    # --- training -------------------------------------------------------------------------
    def inputs(self, samples, positions):
        """(noisy latents, timesteps, conditioning, target) of a batch; each sample's draws come
        from its own generator (sample_generator), in a fixed order."""
        import torch

        vae, total = self.vae, self.noise_scheduler.config.num_train_timesteps
        rows = []
        with torch.no_grad():
            for sample, position in zip(samples, positions):
                generator = sample_generator(self.config.seed, position)
                latents = _vae_latents(vae, [sample.color], generator).float()
                cond = conditioning(vae, [sample.gray], [sample.mask], [sample.page_box], generator).float()
                timestep = sample_timesteps(1, self.config.mu, total, generator)
                noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32)
                rows.append((latents, cond, timestep, noise))
        device = self.accelerator.device
        latents, cond, timesteps, noise = (torch.cat([r[i] for r in rows]).to(device) for i in range(4))
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        return noisy, timesteps, cond, target

    def loss(self, samples, positions) -> torch.Tensor:
        """Noise-prediction MSE of a batch (paper eq. 4)."""
        import torch.nn.functional as F

        noisy, timesteps, cond, target = self.inputs(samples, positions)
        text = self.text.expand(len(samples), -1, -1)
        with self.accelerator.autocast():
            prediction = self.model(noisy, timesteps, cond, text)
        return F.mse_loss(prediction.float(), target.float())

    def train(self, until: int | None = None) -> int:
        """Train to `until` (default: config.steps); checkpoints every save_every and at config.steps."""
        acc, cfg = self.accelerator, self.config
        until = cfg.steps if until is None else min(until, cfg.steps)
        self._start_trackers()
        self.emit(Progress("train", self.step, cfg.steps))
        started, first_step, running = time.perf_counter(), self.step, 0.0
        while self.step < until:
            with acc.accumulate(self.model):
                positions, samples = self._batch()
                loss = self.loss(samples, positions)
                acc.backward(loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(self.trainable, 1.0)
                self.optimizer.step()
                self.schedule.step()
                self.optimizer.zero_grad()
            running += acc.gather(loss.detach()[None]).mean().item() / cfg.gradient_accumulation
            if not acc.sync_gradients:
                continue
            self.step += 1
            if self.ema is not None:
                self.ema.step(self.trainable)
            self.losses.append(running)
            self.emit(Progress("train", self.step, cfg.steps))
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                self._log(running, started, first_step)
            running = 0.0
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
            acc.init_trackers("icp", config=simple)
            self._trackers = True

    def _log(self, loss: float, started: float, first_step: int) -> None:
        acc = self.accelerator
        lr = self.schedule.get_last_lr()[0]
        if self._trackers:
            acc.log({"loss": loss, "lr": lr}, step=self.step)
        if not acc.is_main_process:
            return
        with open(self.out / LOG_FILE, "a") as handle:  # line-append: a kill loses at most this line
            handle.write(json.dumps({"step": self.step, "loss": loss, "lr": lr, "time": time.time()}) + "\n")
        if self.printer:
            self.printer(progress_line(self.step, self.config.steps, loss, self.step - first_step,
                                       time.perf_counter() - started))

    # --- EMA, samples -----------------------------------------------------------------------
    def _with_ema(self, action: Callable[[], object]) -> object:
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
        """Colorize the held-out page with the real inference loop (EMA weights when kept) into
        DIR/samples/step_XXXXXX.png, written atomically; None on other processes."""
        from accelerate.utils import DistributedType

        acc = self.accelerator
        path = None
        # Under FSDP every forward gathers parameters (a collective): all processes colorize alike.
        if acc.is_main_process or acc.distributed_type == DistributedType.FSDP:
            path = self._with_ema(self._colorize_held_out)
        acc.wait_for_everyone()
        return path if acc.is_main_process else None

    def _colorize_held_out(self) -> Path:
        import numpy as np
        import torch

        from engine.icp.colorize import Colorizer, ColorizeSettings
        from engine.icp.components import DiffusionComponents
        from engine.io.fileio import atomic_save_image
        from engine.rap.canvas import build_mask

        c, size = self.components, self.data.size
        full = self.data.full_sample(self.held_out, ratio=0.5)  # G, the input inference sees
        components = DiffusionComponents(self.unet, self.guide, self.vae, c.text_encoder, c.tokenizer,
                                         c.scheduler_config, c.fusion, self.accelerator.device, torch.float32)
        settings = ColorizeSettings(steps=self.config.sample_steps, seed=self.config.seed, preview_every=0)
        self.model.eval()
        try:
            with self.accelerator.autocast():
                page = Colorizer(components)(full.gray, build_mask(size), size, settings)
        finally:
            self.model.train()
        path = self.out / SAMPLES_DIR / f"step_{self.step:06d}.png"
        if not self.accelerator.is_main_process:
            return path
        atomic_save_image(page, path)
        if self._trackers:
            tracker = self.accelerator.get_tracker("tensorboard", unwrap=True)
            tracker.add_image("sample", np.asarray(page), self.step, dataformats="HWC")
        return path

    # --- checkpoints ----------------------------------------------------------------------
    def save(self) -> None:
        """The resume state (trainable weights, optimizer, schedule, RNG, EMA, data position),
        replacing DIR/state/ only once complete, and the weights in the official layout."""
        acc = self.accelerator
        save_state_atomically(acc, self.out, {
            "step": self.step, "samples_seen": self.batches * self.config.batch_size * acc.num_processes,
            "held_out": self.held_out, "config": asdict(self.config),
        })
        self._with_ema(self._write_models)
        acc.wait_for_everyone()

    def _write_models(self) -> None:
        # get_state_dict gathers the full weights under FSDP/DeepSpeed (a collective: every
        # process calls it); with DDP or one process it is the model's own state.
        state = self.accelerator.get_state_dict(self.model)
        if self.accelerator.is_main_process:
            write_layout(self.models, self.out, self.guide, self.unet, state)

    def resume(self) -> int:
        """Load DIR/state/ (or DIR/state.old/ when a kill fell between the two renames of save)."""
        acc = self.accelerator
        state, saved = find_state(self.out)
        if "samples_seen" not in saved:
            raise InputError(f"{state}: written by an older ColorFlow (whole-UNet state); it cannot be resumed, "
                             "start again from its saved models with --models")
        if bool(saved["config"].get("ema_decay")) != (self.ema is not None):
            raise InputError(f"{state}: saved {'with' if saved['config'].get('ema_decay') else 'without'} an EMA; "
                             "resume with the same --ema-decay setting")
        if saved.get("held_out") != self.held_out:
            raise InputError(f"{state}: saved with held-out page {saved.get('held_out')}, now {self.held_out}; "
                             "resume with the same --sample-every setting (0 or not)")
        acc.load_state(str(state))
        per_batch = self.config.batch_size * acc.num_processes
        seen = int(saved["samples_seen"])
        if seen % per_batch:
            raise InputError(f"{state}: {seen} samples seen is not a whole number of batches of {per_batch} "
                             "(batch size x processes); resume with the batch size and process count it used")
        self.step, self.batches = int(saved["step"]), seen // per_batch
        return self.step


def write_layout(base: ModelPaths, out: Path, guide, unet, state: dict | None = None) -> ModelPaths:
    """DIR/sd15 -> the base SD1.5 (symlink), DIR/colorflow/{image_encoder, ScreenStyle, ...} -> the
    base's (symlinks), DIR/colorflow/GraySD/ = the trained guide (config + safetensors), the LoRA
    (unet_lora.safetensors, peft in-model key names) and the base's other GraySD files (a file
    another trainer wrote there, e.g. `train gsrp`'s MultiResNetModel.bin, is kept, not linked over).
    `state`: the GuidedDenoiser's full state dict ("guide.*", "unet.*"), else the modules' own."""
    from engine.io.fileio import atomic_write

    paths = link_base(base, out, lambda name: name.startswith(("diffusion_pytorch_model", "unet_lora"))
                      or name == "config.json")
    graysd = paths.graysd
    if state is None:
        state = {**{f"guide.{k}": v for k, v in guide.state_dict().items()},
                 **{f"unet.{k}": v for k, v in unet.state_dict().items()}}
    guide_state = {k[6:]: v.detach().float().cpu().contiguous() for k, v in state.items() if k.startswith("guide.")}
    lora = {k[5:]: v.detach().float().cpu().contiguous() for k, v in state.items()
            if k.startswith("unet.") and ".lora_" in k}
    atomic_write(graysd / "diffusion_pytorch_model.safetensors", lambda h: h.write(_safetensors_bytes(guide_state)))
    atomic_write(graysd / "unet_lora.safetensors", lambda h: h.write(_safetensors_bytes(lora)))
    atomic_write(graysd / "config.json", lambda h: h.write(json.dumps(dict(guide.config), indent=2).encode()))
    return paths


def _safetensors_bytes(state) -> bytes:
    from safetensors.torch import save

    return save(state)
