"""GSRP training (paper 3.3, 4.1): the fusion network on L1 between the guided VAE decode and the high-resolution colored page, via accelerate.

Per sample, at the GSRP frame (the working size x GSRP_SCALE, framed exactly as inference frames
a page): the target is the colored page in the frame; the low-resolution input stands in for the
ICP output: the colored page at the working size, upsampled to the frame as `Upscaler` does; the
gray input is the screenstyle mix of the frame (as ICP training, paper 3.3) or its grayscale. The
three are cropped alike (patch-wise, so the decoder's activations fit in memory). The VAE encodes
both inputs and the fused features go into the decoder exactly as inference does
(`encode_with_features` / `decode_with_features`); only the fusion network is trained, the VAE is
frozen. Writes DIR/colorflow/GraySD/MultiResNetModel.bin (official name and format) with the
other model files linked from --models, so `colorflow colorize --models DIR` uses it.
"""

from __future__ import annotations

import io
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from PIL import Image

from engine.errors import InputError
from engine.events import Event, Progress, ignore
from engine.models import ModelPaths
from engine.rap.canvas import Box, WorkSize
from engine.training.common import (
    batch_positions, find_state, index_at, link_base, make_accelerator, progress_line, remove_files,
    save_state_atomically,
)
from engine.training.data import read_index, sample_rng, screen_mix

if TYPE_CHECKING:  # torch is imported where it runs: `colorflow --help` stays light
    import torch

GRAY_INPUTS = ("screen", "gray")
FUSION_FILE = "MultiResNetModel.bin"  # the official file name and format (a pickled state dict)
FRAMES_CACHE = "cache/gsrp-frames"  # G of each page at the frame size, computed once
# Not ICP's DIR/state: both trainers may write into one DIR, and each must keep its own resume state.
STATE_DIR = "state-gsrp"


@dataclass
class GSRPTrainConfig:
    """Options of `colorflow train gsrp` (defaults: paper 4.1 where it says)."""

    steps: int = 30000  # paper 4.1: GSRP trained for 30,000 iterations
    batch_size: int = 1
    learning_rate: float = 1e-5  # paper 4.1: the same learning rate as ICP
    gradient_accumulation: int = 1
    mixed_precision: str | None = None  # "no", "fp16", "bf16"; None: from `accelerate launch`/its config, else "no"
    crop: tuple[int, int] | None = (512, 512)  # high-res patch (W, H); None: the whole frame
    gray_input: str = "screen"  # "screen": screenstyle mix as ICP training; "gray": the grayscale page
    max_grad_norm: float = 1.0
    save_every: int = 500
    log_every: int = 10
    seed: int = 0
    from_scratch: bool = False  # a freshly initialised fusion network instead of --models' one
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.gray_input not in GRAY_INPUTS:
            raise InputError(f"gray input must be one of {GRAY_INPUTS}, got {self.gray_input!r}")
        if self.crop is not None:
            self.crop = (int(self.crop[0]), int(self.crop[1]))


@dataclass
class GSRPSample:
    """One training example, all at the GSRP frame's resolution and cropped alike."""

    gray: Image.Image  # RGB, the high-resolution black-and-white page
    color: Image.Image  # RGB, the high-resolution colored target
    low: Image.Image  # RGB, the working-size colored page upsampled to the frame (ICP output stand-in)
    box: Box  # the crop inside the frame
    ratio: float  # screenstyle interpolation ratio of `gray` (0: grayscale)


def frame_crop_box(rng: random.Random, frame: tuple[int, int], content: Box, crop: tuple[int, int]) -> Box:
    """A crop of size `crop` inside the frame, on the page's content: inside it where the content
    is larger than the crop, else holding all of it (the letterbox margins teach nothing)."""
    def axis(lo: int, hi: int, length: int, size: int) -> int:
        if hi - lo >= size:
            first, last = lo, hi - size
        else:
            first, last = max(0, hi - size), min(lo, length - size)
        return rng.randint(first, max(first, last))

    cw, ch = crop
    if cw > frame[0] or ch > frame[1]:
        raise ValueError(f"crop {cw}x{ch} is larger than the GSRP frame {frame[0]}x{frame[1]}")
    left = axis(content[0], content[2], frame[0], cw)
    top = axis(content[1], content[3], frame[1], ch)
    return left, top, left + cw, top + ch


class GSRPData:
    """GSRP samples of a prepared dataset; every random choice comes from (seed, epoch, index)."""

    def __init__(self, dataset: Path, seed: int = 0, gray_input: str = "screen", screen_networks=None,
                 cache_dir: Path | None = None) -> None:
        from engine.preprocess.page import PagePreparer

        self.root = Path(dataset)
        self.index = read_index(self.root)
        self.size = WorkSize(*self.index["work_size"])
        self.seed, self.gray_input = seed, gray_input
        if gray_input == "screen" and screen_networks is None:
            raise ValueError("gray input 'screen' needs the ScreenStyle networks")
        self.preparer = PagePreparer(screen_networks, cache_dir, memory_items=4)

    def __len__(self) -> int:
        return len(self.index["samples"])

    def full_frames(self, index: int, epoch: int = 0) -> tuple[GSRPSample, Box]:
        """The whole frames of sample `index` and where the page's pixels sit in them."""
        from engine.io.chapter import ImageSource, load_image
        from engine.preprocess.page import frame_page

        entry = self.index["samples"][index]
        page = load_image(ImageSource.parse(entry["page"]), "RGB")
        framed, fit, working, _ = frame_page(page.image, self.size)  # the framing inference uses
        low = working.resize(framed.size, Image.BICUBIC)  # as Upscaler upsamples the ICP output
        gray_page = framed.convert("L")
        if self.gray_input == "screen":
            ratio = sample_rng(self.seed, "ratio", epoch, index).random()  # the ratio ICP training draws
            # G at the frame size, the pass inference runs (seeded as `train prepare` seeded this page's)
            blended = self.preparer.prepare(page.image, page.sha256, self.size, "screen",
                                            seed=self.index["seed"] + index).frame
            gray = screen_mix(gray_page, blended, ratio)
        else:
            ratio, gray = 0.0, gray_page.convert("RGB")
        frame_box = (0, 0, *framed.size)
        return GSRPSample(gray, framed, low, frame_box, ratio), fit.content_box

    def sample(self, index: int, epoch: int, crop: tuple[int, int] | None) -> GSRPSample:
        """Sample `index` cropped to `crop` (None: the whole frame) on the page's content."""
        full, content = self.full_frames(index, epoch)
        if crop is None:
            return full
        box = frame_crop_box(sample_rng(self.seed, "gsrp-crop", epoch, index), full.color.size, content, crop)
        return GSRPSample(full.gray.crop(box), full.color.crop(box), full.low.crop(box), box, full.ratio)


def noise_generator(seed: int, position: int) -> torch.Generator:
    """The generator of the latent sample of the sample at global position `position` of the seeded
    order (per sample, so the draws do not depend on how samples are split into batches or processes)."""
    import torch

    return torch.Generator().manual_seed(sample_rng(seed, "gsrp-noise", position).getrandbits(63))


def guided_decode(vae, fusion, low: torch.Tensor, gray: torch.Tensor,
                  generators: list[torch.Generator] | torch.Generator | None, autocast=None) -> torch.Tensor:
    """Upscaler's computation with gradients to the fusion network: encode both inputs (frozen VAE,
    no graph), fuse, decode a sample of the low-res colored input's posterior with the fused maps."""
    import contextlib

    import torch

    from engine.gsrp.upscale import decode_with_features, encode_with_features

    autocast = autocast or contextlib.nullcontext
    with torch.no_grad(), autocast():
        moments, color_features = encode_with_features(vae, low)
        _, gray_features = encode_with_features(vae, gray)
    mean, logvar = moments.float().chunk(2, dim=1)
    if not isinstance(generators, (list, tuple)):
        generators = [generators] * len(mean)
    noise = torch.stack([torch.randn(mean.shape[1:], generator=g, dtype=torch.float32) for g in generators])
    noise = noise.to(mean.device)
    latents = mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * noise
    with autocast():
        fused = fusion(color_features, gray_features)
        return decode_with_features(vae, latents.to(vae.dtype), fused)


class GSRPTrainer:
    """Loads the VAE and the fusion network, runs training steps, writes checkpoints in the official layout."""

    def __init__(self, models: ModelPaths, dataset: Path, out: Path, config: GSRPTrainConfig,
                 emit: Callable[[Event], None] = ignore, printer: Callable[[str], None] | None = print,
                 screen_networks=None) -> None:
        from accelerate.utils import set_seed

        self.models, self.out, self.config, self.emit, self.printer = models, Path(out), config, emit, printer
        self.accelerator = make_accelerator(self.out, config.device, config.mixed_precision,
                                            config.gradient_accumulation)
        set_seed(config.seed)
        read_index(dataset)  # a folder without index.json fails here, before any model loads
        if config.gray_input == "screen" and screen_networks is None:
            from engine.preprocess.screenstyle import load_screenstyle

            screen_networks = load_screenstyle(models.colorflow, self.accelerator.device)
        self.data = GSRPData(dataset, config.seed, config.gray_input, screen_networks, self.out / FRAMES_CACHE)
        self._load_models()
        self.crop = self._check_crop(config.crop)
        self.step = 0  # optimizer steps done
        self.consumed = 0  # samples consumed, per process
        self.losses: list[tuple[int, float]] = []  # (step, loss averaged over its accumulation)

    # --- models ---------------------------------------------------------------------------
    def _load_models(self) -> None:
        import torch
        from diffusers import AutoencoderKL

        from engine.gsrp.fusion import FUSION_WEIGHTS, FusionNet, load_fusion, vae_feature_channels
        from engine.models.checkpoints import load_pretrained, reading_model, require_model_file

        require_model_file(self.models.sd15 / "vae", "sd15/vae")
        vae = load_pretrained(AutoencoderKL, self.models.sd15 / "vae", "the SD1.5 VAE",
                              "diffusion_pytorch_model.safetensors", use_safetensors=True)
        if self.config.from_scratch:
            fusion = FusionNet(vae_feature_channels(vae.config))
        else:
            with reading_model(self.models.graysd / FUSION_WEIGHTS, "the GSRP network"):
                fusion = load_fusion(self.models.graysd, vae.config)
        # The VAE is the unmodified SD1.5 VAE at inference (reference/CHECKPOINTS.md) and the
        # official release ships no trained VAE: it stays frozen; gradients only flow through it.
        vae.requires_grad_(False)
        vae.eval()
        fusion.requires_grad_(True)
        fusion.train()  # BatchNorm on batch statistics, as the official app runs it
        optimizer = torch.optim.AdamW(fusion.parameters(), lr=self.config.learning_rate)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        acc = self.accelerator
        self.fusion, self.optimizer, self.schedule = acc.prepare(fusion, optimizer, schedule)
        self.vae = vae.to(acc.device)
        self.grid = 2 ** (len(vae.config.block_out_channels) - 1)

    def _check_crop(self, crop: tuple[int, int] | None) -> tuple[int, int] | None:
        from engine.preprocess.page import frame_size

        frame = frame_size(self.data.size)
        if frame[0] % self.grid or frame[1] % self.grid:
            raise InputError(f"GSRP frame {frame[0]}x{frame[1]} is not a multiple of the VAE's {self.grid}")
        if crop is None:
            return None
        if crop[0] % self.grid or crop[1] % self.grid or min(crop) <= 0:
            raise InputError(f"--crop {crop[0]}x{crop[1]} must be a multiple of {self.grid} (the VAE's grid)")
        # A crop larger than the frame is the whole frame.
        return None if crop[0] >= frame[0] and crop[1] >= frame[1] else (min(crop[0], frame[0]), min(crop[1], frame[1]))

    # --- data -----------------------------------------------------------------------------
    def next_batch(self) -> tuple[list[GSRPSample], list[torch.Generator]]:
        """The next batch of the seeded order and each sample's latent-noise generator; advances the data position."""
        acc, seed, size = self.accelerator, self.config.seed, self.config.batch_size
        positions = batch_positions(self.consumed // size, size, acc.num_processes, acc.process_index)
        self.consumed += size
        picks = [index_at(position, range(len(self.data)), seed) for position in positions]
        return ([self.data.sample(i, epoch, self.crop) for epoch, i in picks],
                [noise_generator(seed, p) for p in positions])

    # --- training -------------------------------------------------------------------------
    def loss(self, samples: list[GSRPSample], generators: list[torch.Generator] | torch.Generator | None = None
             ) -> torch.Tensor:
        """Mean absolute error (on [-1, 1] pixels) between the guided decode and the colored target."""
        import torch
        import torch.nn.functional as F

        from engine.icp.colorize import to_tensor

        device, dtype = self.accelerator.device, self.vae.dtype
        def stack(images):
            return torch.cat([to_tensor(im) for im in images]).to(device, dtype)

        decoded = guided_decode(self.vae, self.fusion, stack([s.low for s in samples]), stack([s.gray for s in samples]),
                                generators, self.accelerator.autocast)
        return F.l1_loss(decoded.float(), stack([s.color for s in samples]).float())

    def train(self) -> int:
        acc, cfg = self.accelerator, self.config
        self.emit(Progress("train", self.step, cfg.steps))
        started, first_step, running = time.perf_counter(), self.step, 0.0
        while self.step < cfg.steps:
            with acc.accumulate(self.fusion):
                samples, generators = self.next_batch()
                loss = self.loss(samples, generators)
                acc.backward(loss)
                if acc.sync_gradients and cfg.max_grad_norm > 0:
                    acc.clip_grad_norm_(self.fusion.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                self.schedule.step()
                self.optimizer.zero_grad()
            running += acc.reduce(loss.detach(), reduction="mean").item()  # all processes' mean
            if not acc.sync_gradients:
                continue
            self.step += 1
            self.losses.append((self.step, running / cfg.gradient_accumulation))
            running = 0.0
            self.emit(Progress("train", self.step, cfg.steps))
            if self.printer and acc.is_main_process and (self.step % cfg.log_every == 0 or self.step == cfg.steps):
                self.printer(progress_line(self.step, cfg.steps, self.losses[-1][1], self.step - first_step,
                                           time.perf_counter() - started))
            if self.step % cfg.save_every == 0 or self.step == cfg.steps:
                self.save()
        return self.step

    # --- checkpoints ----------------------------------------------------------------------
    def save(self) -> None:
        """The resume state (fusion weights, optimizer, RNG, data position), replacing DIR/state-gsrp/
        only once complete, and the fusion network in the official layout."""
        acc = self.accelerator
        save_state_atomically(acc, self.out, {"step": self.step, "consumed": self.consumed,
                                              "config": vars(self.config)}, STATE_DIR)
        if acc.is_main_process:
            write_layout(self.models, self.out, acc.unwrap_model(self.fusion))
        acc.wait_for_everyone()

    def resume(self) -> int:
        state, saved = find_state(self.out, STATE_DIR)
        consumed = int(saved["consumed"])
        if consumed % self.config.batch_size:
            raise InputError(f"{state}: {consumed} samples seen is not a whole number of batches of "
                             f"{self.config.batch_size}; resume with the batch size it used")
        self.accelerator.load_state(str(state))
        self.step, self.consumed = int(saved["step"]), consumed
        return self.step


def fusion_state_bytes(fusion) -> bytes:
    """The fusion network's state dict as the official file holds it: fp32 tensors plus the int64
    BatchNorm counters, pickled by torch.save (tensors only, so it loads with weights_only=True)."""
    import torch

    state = {k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().contiguous().clone()
             for k, v in fusion.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def write_layout(base: ModelPaths, out: Path, fusion) -> ModelPaths:
    """DIR/sd15 and DIR/colorflow/* linked to the base's (trained files already in DIR/GraySD,
    e.g. `train icp`'s guide and LoRA, are kept), DIR/colorflow/GraySD/MultiResNetModel.bin = the
    trained fusion network (written atomically; other formats of that file are removed, since a
    MultiResNetModel.safetensors would be found first)."""
    from engine.gsrp.fusion import FUSION_WEIGHTS
    from engine.io.fileio import atomic_write_bytes

    stem = FUSION_WEIGHTS + "."
    paths = link_base(base, out, skip_graysd=lambda name: name.startswith(stem))
    data = fusion_state_bytes(fusion)
    atomic_write_bytes(paths.graysd / FUSION_FILE, data)
    remove_files(p for p in paths.graysd.glob(FUSION_WEIGHTS + ".*") if p.name != FUSION_FILE)
    return paths
