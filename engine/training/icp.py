"""ICP training (paper 3.2, 4.1): the Colorization Guide and the UNet LoRA on noise-prediction MSE, via accelerate.

Z_0 = VAE(colored canvas); the guide sees Z_t plus the 9 conditioning channels exactly as
inference builds them (icp/colorize.py: latent of the canvas with the page blacked out | mask,
1 on the references | latent of the page area alone); the SD1.5 UNet is frozen except its LoRA
(rank 64, alpha 64, the official targets). Timesteps are drawn with the paper's shift (eq. 5).
State (models, optimizer, LR schedule, RNG, samples consumed) is saved with accelerate for
--resume; results are written in the official layout so `--models DIR` loads them.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from engine.events import Event, Progress, ignore
from engine.io.fileio import atomic_write_json
from engine.models import ModelPaths
from engine.training.data import TrainingSet, draw_crop_size, guide_images_at, sample_rng

if TYPE_CHECKING:  # torch is imported where it runs: `colorflow --help` stays light
    import torch

STATE_DIR = "state"
TRAINER_STATE = "trainer_state.json"


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
    batch_size: int = 1
    learning_rate: float = 1e-5
    mu: float = 1.5
    gradient_accumulation: int = 1
    mixed_precision: str = "no"  # "no", "fp16", "bf16"
    downsample: float = 1.0  # patch-wise: crops are downsampled by this factor
    full_canvas: bool = False  # no patch-wise crops
    save_every: int = 500
    log_every: int = 10
    seed: int = 0
    prompt: str = "manga"
    from_scratch: bool = False  # guide from the UNet and a fresh rank-64 LoRA, not GraySD
    device: str = "auto"


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
        from accelerate.utils import ProjectConfiguration, set_seed

        self.models, self.out, self.config, self.emit, self.printer = models, Path(out), config, emit, printer
        cpu = config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available())
        self.accelerator = Accelerator(
            mixed_precision=config.mixed_precision,
            gradient_accumulation_steps=config.gradient_accumulation,
            cpu=cpu,
            project_config=ProjectConfiguration(project_dir=str(self.out)),
        )
        set_seed(config.seed)
        self.data = TrainingSet(dataset, seed=config.seed)
        self._load_models()
        self.step = 0  # optimizer steps done
        self.consumed = 0  # samples consumed, per process

    # --- models ---------------------------------------------------------------------------
    def _load_models(self) -> None:
        import torch

        from engine.icp.guide import ColorGuiderSDModel
        from engine.loading import load_diffusion
        from engine.models.checkpoints import attach_lora

        c = load_diffusion(self.models, "cpu", dtype=torch.float32)
        unet, guide = c.unet, c.guide
        if self.config.from_scratch:
            unet.delete_adapters("default")
            guide = ColorGuiderSDModel.from_unet(unet)
            attach_lora(unet)
        self.components = c
        self.multiple = c.vae_scale * 2 ** (len(unet.config.block_out_channels) - 1)
        from diffusers import DDPMScheduler

        self.noise_scheduler = DDPMScheduler.from_config(c.scheduler_config)
        with torch.no_grad():
            ids = c.tokenizer([self.config.prompt], padding="max_length", max_length=c.tokenizer.model_max_length,
                              truncation=True, return_tensors="pt").input_ids
            self.text = c.text_encoder(ids)[0]
        unet.requires_grad_(False)
        for name, parameter in unet.named_parameters():
            if ".lora_" in name:
                parameter.requires_grad_(True)
        guide.requires_grad_(True)
        guide.train()
        unet.train()
        params = [p for p in guide.parameters()] + [p for p in unet.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.config.learning_rate)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        acc = self.accelerator
        self.guide, self.unet, self.optimizer, self.schedule = acc.prepare(guide, unet, optimizer, schedule)
        self.vae = c.vae.to(acc.device)
        self.text = self.text.to(acc.device)

    # --- data -----------------------------------------------------------------------------
    def _batch_indices(self) -> tuple[int, list[int]]:
        """(epoch, indices) of the next batch from a per-epoch seeded permutation, sharded by process."""
        n, acc = len(self.data), self.accelerator
        out, epoch = [], 0
        for _ in range(self.config.batch_size):
            position = self.consumed * acc.num_processes + acc.process_index
            epoch, offset = divmod(position, n)
            order = list(range(n))
            sample_rng(self.config.seed, "order", epoch).shuffle(order)
            out.append(order[offset])
            self.consumed += 1
        return epoch, out

    def _batch(self):
        epoch, indices = self._batch_indices()
        full = self.data.size.canvas
        page = self.data.size.query_box_in_canvas
        crop = draw_crop_size(sample_rng(self.config.seed, "crop-size", self.consumed), full, page, self.multiple,
                              self.config.full_canvas)
        return [self.data.sample(i, epoch, crop, self.config.downsample, self.multiple) for i in indices]

    # --- training -------------------------------------------------------------------------
    def loss(self, samples, generator=None) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        from engine.icp.guide import guided_unet_forward

        acc, vae = self.accelerator, self.vae
        with torch.no_grad():
            latents = _vae_latents(vae, [s.color for s in samples], generator)
            cond = conditioning(vae, [s.gray for s in samples], [s.mask for s in samples],
                                [s.page_box for s in samples], generator)
        total = self.noise_scheduler.config.num_train_timesteps
        timesteps = sample_timesteps(len(samples), self.config.mu, total, generator).to(acc.device)
        noise = torch.randn(latents.shape, generator=generator).to(latents)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        text = self.text.expand(len(samples), -1, -1)
        with acc.autocast():
            features = self.guide(noisy, timesteps, cond)
            prediction = guided_unet_forward(self.unet, noisy, timesteps, text, features)
        return F.mse_loss(prediction.float(), target.float())

    def train(self) -> int:
        acc, cfg = self.accelerator, self.config
        self.emit(Progress("train", self.step, cfg.steps))
        started, last_step, running = time.perf_counter(), self.step, 0.0
        while self.step < cfg.steps:
            with acc.accumulate(self.guide, self.unet):
                loss = self.loss(self._batch())
                acc.backward(loss)
                if acc.sync_gradients:
                    params = [p for group in self.optimizer.param_groups for p in group["params"]]
                    acc.clip_grad_norm_(params, 1.0)
                self.optimizer.step()
                self.schedule.step()
                self.optimizer.zero_grad()
            running += loss.item()
            if not acc.sync_gradients:
                continue
            self.step += 1
            self.emit(Progress("train", self.step, cfg.steps))
            if self.printer and (self.step % cfg.log_every == 0 or self.step == cfg.steps):
                rate = (self.step - last_step) / max(time.perf_counter() - started, 1e-9)
                self.printer(f"step {self.step}/{cfg.steps}  loss {running / cfg.gradient_accumulation:.4f}  {rate:.2f} steps/s")
            running = 0.0
            if self.step % cfg.save_every == 0 or self.step == cfg.steps:
                self.save()
        return self.step

    # --- checkpoints ----------------------------------------------------------------------
    def save(self) -> None:
        """accelerate state (for --resume) and the weights in the official layout."""
        acc = self.accelerator
        state = self.out / STATE_DIR
        acc.save_state(str(state))
        if acc.is_main_process:
            atomic_write_json(state / TRAINER_STATE, {"step": self.step, "consumed": self.consumed,
                                                     "config": vars(self.config)})
            write_layout(self.models, self.out, acc.unwrap_model(self.guide), acc.unwrap_model(self.unet))
        acc.wait_for_everyone()

    def resume(self) -> int:
        state = self.out / STATE_DIR
        if not (state / TRAINER_STATE).is_file():
            from engine.errors import InputError

            raise InputError(f"{self.out}: nothing to resume (no {STATE_DIR}/{TRAINER_STATE})")
        self.accelerator.load_state(str(state))
        saved = json.loads((state / TRAINER_STATE).read_text())
        self.step, self.consumed = int(saved["step"]), int(saved["consumed"])
        return self.step


def write_layout(base: ModelPaths, out: Path, guide, unet) -> ModelPaths:
    """DIR/sd15 -> the base SD1.5 (symlink), DIR/colorflow/{image_encoder, ScreenStyle, ...} -> the
    base's (symlinks), DIR/colorflow/GraySD/ = the trained guide (config + safetensors), the LoRA
    (unet_lora.safetensors, peft in-model key names) and the base's other GraySD files."""
    from engine.io.fileio import atomic_write
    from engine.models.sources import GRAYSD_SUBDIR

    out = Path(out)
    paths = ModelPaths(out / "sd15", out / "colorflow")
    paths.colorflow.mkdir(parents=True, exist_ok=True)
    _link(Path(base.sd15).resolve(), paths.sd15)
    for entry in Path(base.colorflow).iterdir():
        if entry.name != GRAYSD_SUBDIR:
            _link(entry.resolve(), paths.colorflow / entry.name)
    graysd = paths.graysd
    graysd.mkdir(parents=True, exist_ok=True)
    for entry in Path(base.graysd).iterdir():
        if not (entry.name.startswith(("diffusion_pytorch_model", "unet_lora")) or entry.name == "config.json"):
            _link(entry.resolve(), graysd / entry.name)
    guide_state = {k: v.detach().float().cpu().contiguous() for k, v in guide.state_dict().items()}
    lora = {k: v.detach().float().cpu().contiguous() for k, v in unet.state_dict().items() if ".lora_" in k}
    atomic_write(graysd / "diffusion_pytorch_model.safetensors", lambda h: h.write(_safetensors_bytes(guide_state)))
    atomic_write(graysd / "unet_lora.safetensors", lambda h: h.write(_safetensors_bytes(lora)))
    atomic_write(graysd / "config.json", lambda h: h.write(json.dumps(dict(guide.config), indent=2).encode()))
    return paths


def _safetensors_bytes(state) -> bytes:
    from safetensors.torch import save

    return save(state)


def _link(target: Path, link: Path) -> None:
    if link.is_symlink() or link.exists():
        if link.is_symlink() and Path(os.readlink(link)) == target:
            return
        if link.is_symlink() or link.is_file():
            link.unlink()
        else:
            return  # a real folder the user put there: left alone
    link.symlink_to(target, target_is_directory=target.is_dir())
