"""GSRP training (paper 3.3, 4.1): the fusion network on L1 between the guided VAE decode and the high-resolution colored page, via accelerate.

Per sample, at the GSRP frame (the working size x GSRP_SCALE, framed exactly as inference frames
a page): the target is the colored page in the frame; the low-resolution input stands in for the
ICP output: the colored page at the working size, upsampled to the frame as `Upscaler` does; the
gray input is the screenstyle mix of the frame (as ICP training, paper 3.3) or its grayscale. The
three are cropped alike (patch-wise, so the decoder's activations fit in memory). The VAE encodes
both inputs and the fused features go into the decoder by inference's own function
(gsrp/upscale.py `guided_decode`); only the fusion network is trained, the VAE is frozen. The
loop (EMA, samples: the held-out page super-resolved by `Upscaler`, logs, resume) is loop.py's.
Writes DIR/colorflow/GraySD/MultiResNetModel.bin (official name and format) with the other model
files linked from --models, so `colorflow colorize --models DIR` uses it.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from PIL import Image

from engine.core.options import InputStyle
from engine.core.errors import InputError
from engine.core.events import Event, ignore
from engine.models import ModelPaths
from engine.core.geometry import Box, WorkSize
from engine.training.common import link_base, position_generator, remove_files
from engine.training.data import read_index, sample_rng, screen_mix
from engine.training.loop import TrainConfig, Trainer

if TYPE_CHECKING:  # torch is imported where it runs: `colorflow --help` stays light
    import torch

# The gray page as the SD family's input styles make it: the line-art styles' GSRP belongs to the
# PixArt family's weights (sketch/, shading/), and auto picks per page, so neither trains this network.
GRAY_INPUTS = (InputStyle.SCREEN, InputStyle.GRAY)
FUSION_FILE = "MultiResNetModel.bin"  # the official file name and format (a pickled state dict)
FRAMES_CACHE = "cache/gsrp-frames"  # G of each page at the frame size, computed once


@dataclass
class GSRPTrainConfig(TrainConfig):
    """Options of `colorflow train gsrp` (the loop's, and these; defaults: paper 4.1 where it says).
    from_scratch: a freshly initialised fusion network instead of --models' one."""

    steps: int = 30000  # paper 4.1: GSRP trained for 30,000 iterations (learning rate: ICP's)
    crop: tuple[int, int] | None = (512, 512)  # high-res patch (W, H); None: the whole frame
    gray_input: str = "screen"  # "screen": screenstyle mix as ICP training; "gray": the grayscale page

    def __post_init__(self) -> None:
        if self.gray_input not in GRAY_INPUTS:
            raise InputError(f"gray input must be one of {', '.join(GRAY_INPUTS)}, got {self.gray_input!r} (GSRP "
                             "training is for the screen and gray styles' network; sketch and sketch-shading have "
                             "their own in the line-art weights, auto picks per page)")
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

    def full_frames(self, index: int, epoch: int = 0, ratio: float | None = None) -> tuple[GSRPSample, Box]:
        """The whole frames of sample `index` and where the page's pixels sit in them; the screenstyle
        ratio is this epoch's (or `ratio`: 0.5 is G, the input inference sees)."""
        from engine.io.chapter import ImageSource, load_image
        from engine.preprocess.page import frame_page

        entry = self.index["samples"][index]
        page = load_image(ImageSource.parse(entry["page"]), "RGB")
        framed, fit, working, _ = frame_page(page.image, self.size)  # the framing inference uses
        low = working.resize(framed.size, Image.BICUBIC)  # as Upscaler upsamples the ICP output
        gray_page = framed.convert("L")
        if self.gray_input == "screen":
            if ratio is None:
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
    """The generator of the latent sample of the sample at global position `position` of the seeded order."""
    return position_generator(seed, "gsrp-noise", position)


def per_sample_noise(generators: list[torch.Generator] | torch.Generator | None):
    """guided_decode's noise: one standard-normal draw per sample, each from its own generator (one
    generator: drawn from it in turn; None: the global RNG), in float32 on the CPU."""
    import torch

    def noise(mean: torch.Tensor) -> torch.Tensor:
        drawn = generators if isinstance(generators, (list, tuple)) else [generators] * len(mean)
        return torch.stack([torch.randn(mean.shape[1:], generator=g, dtype=torch.float32) for g in drawn])

    return noise


class GSRPTrainer(Trainer):
    """Loads the VAE and the fusion network; loop.Trainer trains it and writes it in the official layout."""

    NAME = "gsrp"
    # Not ICP's DIR/state, log or samples: both trainers may write into one DIR.
    STATE_DIR = "state-gsrp"
    LOG_FILE = "log-gsrp.jsonl"
    SAMPLES_DIR = "samples-gsrp"

    def __init__(self, models: ModelPaths, dataset: Path, out: Path, config: GSRPTrainConfig,
                 emit: Callable[[Event], None] = ignore, printer: Callable[[str], None] | None = print,
                 screen_networks=None) -> None:
        super().__init__(models, out, config, emit, printer)
        read_index(dataset)  # a folder without index.json fails here, before any model loads
        if config.gray_input == "screen" and screen_networks is None:
            from engine.preprocess.screenstyle import load_screenstyle

            screen_networks = load_screenstyle(models.colorflow, self.accelerator.device)
        self.data = GSRPData(dataset, config.seed, config.gray_input, screen_networks, self.out / FRAMES_CACHE)
        self.hold_out(len(self.data), dataset)
        self._load_models()
        self.crop = self._check_crop(config.crop)

    @property
    def fusion(self):
        """The fusion network as accelerate prepared it."""
        return self.model

    # --- models ---------------------------------------------------------------------------
    def _load_models(self) -> None:
        from diffusers import AutoencoderKL

        from engine.gsrp.fusion import FUSION_WEIGHTS, FusionNet, load_fusion, vae_feature_channels
        from engine.io.checkpoints import load_pretrained, reading_model
        from engine.io.weight_files import require_model_file
        from engine.core.offload import Runner
        from engine.preprocess.tensors import downscale_factor

        require_model_file(self.models.sd15 / "vae", "sd15/vae")
        vae = load_pretrained(AutoencoderKL, self.models.sd15 / "vae", "the SD1.5 VAE",
                              "diffusion_pytorch_model.safetensors", use_safetensors=True)
        if self.config.from_scratch:
            fusion = FusionNet(vae_feature_channels(vae.config))
        else:
            with reading_model(self.models.graysd / FUSION_WEIGHTS, "the GSRP network"):
                fusion = load_fusion(self.models.graysd, vae.config)
        # The VAE is the unmodified SD1.5 VAE at inference (docs/reference/checkpoints.md) and the
        # official release ships no trained VAE: it stays frozen; gradients only flow through it.
        vae.requires_grad_(False)
        vae.eval()
        fusion.requires_grad_(True)
        fusion.train()  # BatchNorm on batch statistics, as the official app runs it
        self.prepare(fusion)
        self.vae = vae.to(self.accelerator.device)
        self.vae_runner = Runner(self.vae)
        self.grid = downscale_factor(vae.config)

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

    # --- data, training -------------------------------------------------------------------
    def samples_at(self, positions: list[int]) -> list[GSRPSample]:
        return [self.data.sample(index, epoch, self.crop) for epoch, index in map(self.index_at, positions)]

    def loss(self, samples: list[GSRPSample], generators: list[torch.Generator] | torch.Generator | None = None
             ) -> torch.Tensor:
        """Mean absolute error (on [-1, 1] pixels) between the guided decode and the colored target;
        the latent sample's noise from `generators` (per_sample_noise)."""
        import torch
        import torch.nn.functional as F

        from engine.gsrp.upscale import guided_decode
        from engine.preprocess.tensors import to_tensor

        device, dtype = self.accelerator.device, self.vae.dtype

        def stack(images):
            return torch.cat([to_tensor(im.convert("RGB")) for im in images]).to(device, dtype)

        low, gray = stack([s.low for s in samples]), stack([s.gray for s in samples])
        # The sample in float32 whatever the autocast dtype: training keeps it exact.
        with self.accelerator.autocast():
            decoded = guided_decode(self.vae_runner, self.model, low, gray, per_sample_noise(generators),
                                    sample_dtype=torch.float32)
        return F.l1_loss(decoded.float(), stack([s.color for s in samples]).float())

    def batch_loss(self, positions: list[int], samples: list[GSRPSample]) -> torch.Tensor:
        return self.loss(samples, [noise_generator(self.config.seed, p) for p in positions])

    # --- samples, checkpoints ---------------------------------------------------------------
    def sample_image(self) -> Image.Image:
        """The held-out page super-resolved by the real inference code (Upscaler), from its working-size
        colored page upsampled to the frame and G (the gray guide inference sees)."""
        from engine.gsrp.upscale import Upscaler, UpscaleSettings

        full, _ = self.data.full_frames(self.held_out, ratio=0.5)
        upscaler = Upscaler(self.vae_runner, self.accelerator.unwrap_model(self.model), self.accelerator.device,
                            self.vae.dtype)
        return upscaler(full.low, full.gray, UpscaleSettings(seed=self.config.seed))

    def write_models(self) -> None:
        if self.accelerator.is_main_process:
            write_layout(self.models, self.out, self.accelerator.unwrap_model(self.model))

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
