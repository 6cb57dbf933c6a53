"""ICP: in-context colorization of the canvas with the guided SD1.5 UNet (paper 3.2).

Official defaults (GEOMETRY.md): UniPC multistep, 10 steps, CFG 7.5, prompt "manga", empty
negative prompt, guide scale 1.0. Less work than the official procedure for the same result
up to sampling noise: the guide runs once per step at batch 1 (its features do not depend on
the prompt), the conditioning latents are encoded once, and only the page region of the
canvas latent (plus a margin) is decoded.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .canvas import WorkSize, guide_images
from .errors import ColorFlowError, InputError
from .guide import guided_unet_forward
from .loading import DiffusionComponents

# Rough linear map from SD1.5 latents to RGB, good enough for a live preview.
LATENT_RGB = torch.tensor(
    [[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]]
)


class Interrupted(ColorFlowError):
    """Raised when the step callback asks to stop; no output is produced."""


@dataclass(frozen=True)
class ColorizeSettings:
    """Sampler settings; defaults are the official GrayImage ones."""

    steps: int = 10
    guidance_scale: float = 7.5
    prompt: str = "manga"
    negative_prompt: str = ""
    conditioning_scale: float = 1.0
    seed: int = 0
    decode_margin: int = 64  # pixels of canvas decoded around the page to avoid edge seams
    preview_every: int = 2  # 0 disables previews

    def check(self) -> None:
        if not 1 <= self.steps <= 100:
            raise InputError(f"steps must be between 1 and 100, got {self.steps}")
        if self.guidance_scale < 0:
            raise InputError(f"guidance scale must be >= 0, got {self.guidance_scale}")
        if not 0 <= self.seed < 2**63:
            raise InputError(f"seed must be a non-negative integer, got {self.seed}")


@dataclass(frozen=True)
class StepInfo:
    """What the step callback sees; return False from the callback to interrupt."""

    step: int  # 1-based
    total: int
    timestep: int
    preview: Image.Image | None


StepCallback = Callable[[StepInfo], "bool | None"]


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL -> (1, 3, H, W) in [-1, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)


def to_image(tensor: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) in [-1, 1] -> RGB PIL (rounded)."""
    array = ((tensor[0].float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, "RGB")


def latent_preview(latents: torch.Tensor) -> Image.Image:
    """A cheap RGB look at latents (no VAE), one pixel per latent cell."""
    rgb = torch.einsum("bchw,cr->brhw", latents.float().cpu(), LATENT_RGB)
    return to_image(rgb.clamp(-1, 1))


class Colorizer:
    """The guided denoising loop on loaded components."""

    def __init__(self, components: DiffusionComponents, low_vram: bool = False, unet_forward=guided_unet_forward) -> None:
        self.c = components
        self.low_vram = low_vram
        # The guided UNet call (unet, sample, timestep, text, features) -> noise; replaceable
        # so a test can drive the loop with a stub UNet that returns known predictions.
        self.unet_forward = unet_forward
        self._prompt_cache: dict[tuple[str, str], torch.Tensor] = {}

    @contextlib.contextmanager
    def _placed(self, module: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """In low-VRAM mode, bring a module to the device only while it is used."""
        if not self.low_vram or self.c.device.type == "cpu":
            yield module
            return
        module.to(self.c.device)
        try:
            yield module
        finally:
            module.to("cpu")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def check_inputs(self, canvas: Image.Image, mask: Image.Image, size: WorkSize, settings: ColorizeSettings) -> None:
        settings.check()
        if canvas.size != size.canvas:
            raise InputError(f"canvas is {canvas.size[0]}x{canvas.size[1]}, expected {size.canvas[0]}x{size.canvas[1]}")
        if mask.size != size.canvas:
            raise InputError(f"mask is {mask.size[0]}x{mask.size[1]}, expected {size.canvas[0]}x{size.canvas[1]}")
        scale = self.c.vae_scale
        if (size.width // 2) % scale or (size.height // 2) % scale:
            raise InputError(f"working size {size} does not fit the VAE's 1/{scale} latent grid")

    def prompt_embeddings(self, prompt: str, negative: str) -> torch.Tensor:
        """[negative, prompt] text embeddings (batch 2), computed once per prompt pair."""
        key = (prompt, negative)
        if key not in self._prompt_cache:
            tokenizer = self.c.tokenizer
            ids = tokenizer(
                [negative, prompt], padding="max_length", max_length=tokenizer.model_max_length,
                truncation=True, return_tensors="pt",
            ).input_ids
            with self._placed(self.c.text_encoder) as encoder:
                embeddings = encoder(ids.to(self.c.device))[0]
            self._prompt_cache[key] = embeddings.to(self.c.dtype)
        return self._prompt_cache[key]

    def encode(self, images: list[Image.Image], generator: torch.Generator) -> torch.Tensor:
        """VAE latents (sampled, scaled) of RGB images, one encode pass."""
        batch = torch.cat([to_tensor(im) for im in images]).to(self.c.device, self.c.dtype)
        with self._placed(self.c.vae) as vae:
            posterior = vae.encode(batch).latent_dist
            noise = torch.randn(posterior.mean.shape, generator=generator, dtype=torch.float32)
            latents = posterior.mean + posterior.std * noise.to(posterior.mean.device, posterior.mean.dtype)
        return latents * vae.config.scaling_factor

    def conditioning(self, canvas: Image.Image, mask: Image.Image, size: WorkSize, generator: torch.Generator) -> torch.Tensor:
        """The guide's 9 conditioning channels: latent(references only) | mask | latent(page)."""
        references_only, page_only = guide_images(canvas, size)
        latents = self.encode([references_only, page_only], generator)
        mask_array = 1.0 - np.asarray(mask.convert("L"), dtype=np.float32) / 255.0  # 1 on references
        mask_tensor = torch.from_numpy(mask_array)[None, None]
        mask_latent = F.interpolate(mask_tensor, size=latents.shape[2:], mode="bilinear", align_corners=False)
        mask_latent = mask_latent.to(self.c.device, self.c.dtype)
        return torch.cat([latents[:1], mask_latent, latents[1:]], dim=1)

    def decode_page(self, latents: torch.Tensor, size: WorkSize, margin_px: int) -> Image.Image:
        """Decode the page region of the canvas latent plus a margin; return W x H."""
        scale = self.c.vae_scale
        margin = max(0, margin_px // scale)
        x0, y0, x1, y1 = self._page_latent_box(size)
        crop = latents[:, :, max(0, y0 - margin) : y1 + margin, max(0, x0 - margin) : x1 + margin]
        with self._placed(self.c.vae) as vae:
            decoded = vae.decode(crop / vae.config.scaling_factor, return_dict=False)[0]
        left, top = (x0 - max(0, x0 - margin)) * scale, (y0 - max(0, y0 - margin)) * scale
        page = decoded[:, :, top : top + size.height, left : left + size.width]
        return to_image(page)

    @torch.inference_mode()
    def __call__(
        self,
        canvas: Image.Image,
        mask: Image.Image,
        size: WorkSize,
        settings: ColorizeSettings = ColorizeSettings(),
        callback: StepCallback | None = None,
    ) -> Image.Image:
        """Colorize the page region of a RAP canvas; returns the page at working size (W x H)."""
        from diffusers import UniPCMultistepScheduler

        self.check_inputs(canvas, mask, size, settings)
        generator = torch.Generator("cpu").manual_seed(settings.seed)
        # Initial noise first, then the two conditioning encodes: one fixed RNG order.
        latent_shape = (1, 4, size.canvas[1] // self.c.vae_scale, size.canvas[0] // self.c.vae_scale)
        latents = torch.randn(latent_shape, generator=generator, dtype=torch.float32)
        conditioning = self.conditioning(canvas, mask, size, generator)
        text = self.prompt_embeddings(settings.prompt, settings.negative_prompt)
        scheduler = UniPCMultistepScheduler.from_config(self.c.scheduler_config)
        scheduler.set_timesteps(settings.steps, device=self.c.device)
        latents = (latents * scheduler.init_noise_sigma).to(self.c.device, self.c.dtype)
        use_cfg = settings.guidance_scale > 1.0
        total = len(scheduler.timesteps)
        for index, timestep in enumerate(scheduler.timesteps):
            model_input = scheduler.scale_model_input(latents, timestep)
            features = self.c.guide(model_input, timestep, conditioning, settings.conditioning_scale)
            if use_cfg:
                noise = self.unet_forward(self.c.unet, torch.cat([model_input] * 2), timestep, text, features)
                uncond, cond = noise.chunk(2)
                noise = uncond + settings.guidance_scale * (cond - uncond)
            else:
                noise = self.unet_forward(self.c.unet, model_input, timestep, text[1:], features)
            latents = scheduler.step(noise, timestep, latents, return_dict=False)[0]
            if callback is not None:
                step = index + 1
                wants_preview = settings.preview_every and (step % settings.preview_every == 0 or step == total)
                preview = latent_preview(self._page_latent(latents, size)) if wants_preview else None
                if callback(StepInfo(step, total, int(timestep), preview)) is False:
                    raise Interrupted(f"interrupted after step {step} of {total}")
        return self.decode_page(latents, size, settings.decode_margin)

    def _page_latent_box(self, size: WorkSize) -> tuple[int, int, int, int]:
        """The page area of the canvas in latent cells (x0, y0, x1, y1)."""
        x0, y0, x1, y1 = size.query_box_in_canvas
        scale = self.c.vae_scale
        return x0 // scale, y0 // scale, x1 // scale, y1 // scale

    def _page_latent(self, latents: torch.Tensor, size: WorkSize) -> torch.Tensor:
        x0, y0, x1, y1 = self._page_latent_box(size)
        return latents[:, :, y0:y1, x0:x1]
