"""ICP training (paper 3.2, 4.1): the Colorization Guide and the UNet LoRA on noise-prediction MSE, via accelerate.

Z_0 = VAE(colored canvas); the guide sees Z_t plus the 9 conditioning channels exactly as
inference builds them (icp/colorize.py: latent of the canvas with the page blacked out | mask,
1 on the references | latent of the page area alone); the SD1.5 UNet is frozen except its LoRA
(rank 64, alpha 64, the official targets). Timesteps are drawn with the paper's shift (eq. 5).

The conditioning and the latents come from the stage's own functions (icp/conditioning.py), the
loop from loop.py. Every random draw of a sample (VAE posterior noise, timestep, diffusion noise)
comes from a generator seeded by (seed, the sample's global position in the seeded order), so a
run is the same whatever the number of processes (DDP with batch 1 on 2 processes = batch 2 on
one) and a resumed run is the same as an uninterrupted one. The resume state (DIR/state/) holds
the trainable weights only (guide + LoRA, see icp_model.py), the optimizer, the LR schedule, the
RNG states, the EMA and the data position. Results are written in the official layout so
`--models DIR` loads them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from engine.core.events import Event, ignore
from engine.models import ModelPaths
from engine.training.common import link_base, position_generator
from engine.training.data import Sample, TrainingSet, draw_crop_size, sample_rng
from engine.training.loop import TrainConfig, Trainer

if TYPE_CHECKING:  # torch is imported where it runs: `colorflow --help` stays light
    import torch
    from PIL import Image


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
class ICPTrainConfig(TrainConfig):
    """Options of `colorflow train icp` (the loop's, and these; defaults: paper 4.1 where it says).
    from_scratch: the guide from the UNet and a fresh rank-64 LoRA, not GraySD's."""

    mu: float = 1.5
    downsample: float = 1.0  # patch-wise: crops are downsampled by this factor
    full_canvas: bool = False  # no patch-wise crops
    prompt: str = "manga"
    sample_steps: int = 10  # denoising steps of the held-out page's samples (DIR/samples/)


def sample_generator(seed: int, position: int) -> torch.Generator:
    """The random stream of the sample at global position `position` of the seeded order."""
    return position_generator(seed, "noise", position)


class ICPTrainer(Trainer):
    """Loads the models, runs training steps (loop.Trainer) and writes checkpoints in the official layout."""

    NAME = "icp"

    def __init__(self, models: ModelPaths, dataset: Path, out: Path, config: ICPTrainConfig,
                 emit: Callable[[Event], None] = ignore, printer: Callable[[str], None] | None = print) -> None:
        super().__init__(models, out, config, emit, printer)
        self.data = TrainingSet(dataset, seed=config.seed)
        self.hold_out(len(self.data), dataset)
        self._load_models()

    # --- models ---------------------------------------------------------------------------
    def _load_models(self) -> None:
        import torch
        from diffusers import DDPMScheduler
        from diffusers.training_utils import cast_training_params

        from engine.icp.guide import ColorGuiderSDModel
        from engine.models.loading import load_diffusion
        from engine.io.checkpoints import attach_lora
        from engine.core.offload import Runner
        from engine.preprocess.tensors import downscale_factor
        from engine.training.icp_model import GuidedDenoiser, keep_trainable, load_trainable

        acc, cfg = self.accelerator, self.config
        c = load_diffusion(self.models, "cpu", dtype=torch.float32)
        unet, guide = c.unet, c.guide
        if cfg.from_scratch:
            unet.delete_adapters("default")
            guide = ColorGuiderSDModel.from_unet(unet)
            attach_lora(unet)
        self.multiple = c.vae_scale * downscale_factor(unet.config)
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
        acc.register_save_state_pre_hook(keep_trainable)
        acc.register_load_state_pre_hook(load_trainable)
        self.prepare(model)
        self.guide, self.unet = guide, unet  # the modules inside the prepared wrapper
        self.vae = c.vae.to(acc.device, weights)
        self.vae_runner = Runner(self.vae)
        self.text = self.text.to(acc.device)
        c.text_encoder.to(acc.device, weights)
        self.components = c

    # --- data -----------------------------------------------------------------------------
    def samples_at(self, positions: list[int]) -> list[Sample]:
        """One crop size per micro-batch, the same on every process (a batch needs one shape)."""
        full = self.data.size.canvas
        page = self.data.size.query_box_in_canvas
        crop = draw_crop_size(sample_rng(self.config.seed, "crop-size", self.batches), full, page, self.multiple,
                              self.config.full_canvas)
        samples = []
        for position in positions:
            epoch, index = self.index_at(position)
            samples.append(self.data.sample(index, epoch, crop, self.config.downsample, self.multiple))
        return samples

    # --- training -------------------------------------------------------------------------
    def inputs(self, samples: list[Sample], positions: list[int]):
        """(noisy latents, timesteps, conditioning, target) of a batch; each sample's draws come
        from its own generator (sample_generator), in a fixed order."""
        import torch

        from engine.icp.conditioning import conditioning, encode_latents

        vae, total = self.vae, self.noise_scheduler.config.num_train_timesteps
        rows = []
        with torch.no_grad():
            for sample, position in zip(samples, positions):
                generator = sample_generator(self.config.seed, position)
                latents = encode_latents(self.vae_runner, [sample.color], generator, device=vae.device,
                                         dtype=vae.dtype).float()
                cond = conditioning(self.vae_runner, sample.gray, sample.mask, sample.page_box, generator,
                                    device=vae.device, dtype=vae.dtype).float()
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

    def loss(self, samples: list[Sample], positions: list[int]) -> torch.Tensor:
        """Noise-prediction MSE of a batch (paper eq. 4)."""
        import torch.nn.functional as F

        noisy, timesteps, cond, target = self.inputs(samples, positions)
        text = self.text.expand(len(samples), -1, -1)
        with self.accelerator.autocast():
            prediction = self.model(noisy, timesteps, cond, text)
        return F.mse_loss(prediction.float(), target.float())

    def batch_loss(self, positions: list[int], samples: list[Sample]) -> torch.Tensor:
        return self.loss(samples, positions)

    # --- samples, checkpoints ---------------------------------------------------------------
    def sample_image(self) -> Image.Image:
        """The held-out page colorized by the real inference loop, from G (the input inference sees)."""
        import torch

        from engine.icp.colorize import Colorizer, ColorizeSettings
        from engine.icp.components import DiffusionComponents
        from engine.rap.canvas import build_mask

        c, size = self.components, self.data.size
        full = self.data.full_sample(self.held_out, ratio=0.5)
        components = DiffusionComponents(self.unet, self.guide, self.vae, c.text_encoder, c.tokenizer,
                                         c.scheduler_config, c.fusion, self.accelerator.device, torch.float32)
        settings = ColorizeSettings(steps=self.config.sample_steps, seed=self.config.seed, preview_every=0)
        return Colorizer(components)(full.gray, build_mask(size), size, settings)

    def write_models(self) -> None:
        # get_state_dict gathers the full weights under FSDP/DeepSpeed (a collective: every
        # process calls it); with DDP or one process it is the model's own state.
        state = self.accelerator.get_state_dict(self.model)
        if self.accelerator.is_main_process:
            write_layout(self.models, self.out, self.guide, self.unet, state)

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
