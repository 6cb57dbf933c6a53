"""ICP: in-context colorization of the canvas with the guided SD1.5 UNet (paper 3.2).

Official defaults (docs/reference/geometry.md): UniPC multistep, 10 steps, CFG 7.5, prompt "manga", empty
negative prompt, guide scale 1.0, the whole 2W x 2H canvas decoded. Two procedures:
"official" draws every random number as the official app does (global RNG; each CFG copy's
conditioning latents sampled separately, so the guide runs at batch 2); "ours" (default) samples
the two conditioning latents once from their own stream and runs the guide once per step at
batch 1 for both CFG halves (its features do not depend on the prompt), which is exact for those
samples and halves the guide's work. Under "ours", colorize_batch runs several pages of one working
size through the same loop at once (icp/batch.py); one page is the batch of one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from engine.core.geometry import WorkSize
from engine.core.errors import ColorFlowError, InputError
from engine.icp.batch import cfg_features, check_batch
from engine.icp.conditioning import conditioning
from engine.icp.guide import guided_unet_forward
from engine.icp.components import DiffusionComponents
from engine.icp.settings import ColorizeSettings  # noqa: F401 (re-exported for callers)
from engine.core.rng import CONDITIONING, START_NOISE, stream_generator

# Rough linear map from SD1.5 latents to RGB, good enough for a live preview.
LATENT_RGB = torch.tensor(
    [[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]]
)


class Interrupted(ColorFlowError):
    """Raised when the step callback asks to stop; no output is produced."""


@dataclass(frozen=True)
class StepInfo:
    """What the step callback sees; return False from the callback to interrupt."""

    step: int  # 1-based
    total: int
    timestep: int
    preview: Image.Image | None  # the first page's (the only one's, but in a batch)
    previews: tuple[Image.Image | None, ...] = ()  # one per page of the batch, in order


StepCallback = Callable[[StepInfo], "bool | None"]


def to_image(tensor: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) in [-1, 1] -> RGB PIL, rounded as diffusers' image postprocessing does."""
    array = (tensor[0].float() / 2 + 0.5).clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray((array * 255).round().astype(np.uint8), "RGB")


def latent_preview(latents: torch.Tensor) -> Image.Image:
    """A cheap RGB look at latents (no VAE), one pixel per latent cell."""
    rgb = torch.einsum("bchw,cr->brhw", latents.float().cpu(), LATENT_RGB)
    return to_image(rgb.clamp(-1, 1))


def _decode(vae, latents: torch.Tensor) -> torch.Tensor:
    return vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]


class Colorizer:
    """The guided denoising loop on loaded components."""

    def __init__(self, components: DiffusionComponents, unet_forward=guided_unet_forward) -> None:
        self.c = components
        # The guided UNet call (unet, sample, timestep, text, features) -> noise; replaceable
        # so a test can drive the loop with a stub UNet that returns known predictions.
        self.unet_forward = unet_forward
        self._prompt_cache: dict[tuple[str, str], torch.Tensor] = {}

    @property
    def components(self) -> DiffusionComponents:
        """The loaded models this loop runs on (a page's caller offloads them or lowers their memory)."""
        return self.c

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
            embeddings = self.c.text_encoder(ids.to(self.c.device))[0]
            self._prompt_cache[key] = embeddings.to(self.c.device, self.c.dtype)
        return self._prompt_cache[key]

    def conditioning(self, canvas: Image.Image, mask: Image.Image, size: WorkSize, generator: torch.Generator | None,
                     copies: int = 1) -> torch.Tensor:
        """The guide's 9 conditioning channels for the page at the canvas centre (icp/conditioning.py):
        copies=1 (ours) sampled from `generator`, copies=2 (official) from the global RNG."""
        return conditioning(self.c.vae_runner, canvas, mask, size.query_box_in_canvas, generator,
                            device=self.c.device, dtype=self.c.dtype, copies=copies)

    def decode_canvas(self, latents: torch.Tensor, size: WorkSize) -> Image.Image:
        """Decode the whole 2W x 2H canvas latent (as the official) and cut out the page (W x H)."""
        canvas = to_image(self.c.vae_runner(_decode, latents))
        return canvas.crop(size.query_box_in_canvas)

    def decode_page(self, latents: torch.Tensor, size: WorkSize, margin_px: int) -> Image.Image:
        """Decode only the page region of the canvas latent plus a margin; return W x H.
        Less memory than the whole canvas, but not the same pixels (see --help)."""
        scale = self.c.vae_scale
        margin = max(0, margin_px // scale)
        x0, y0, x1, y1 = self._page_latent_box(size)
        crop = latents[:, :, max(0, y0 - margin) : y1 + margin, max(0, x0 - margin) : x1 + margin]
        decoded = self.c.vae_runner(_decode, crop)
        left, top = (x0 - max(0, x0 - margin)) * scale, (y0 - max(0, y0 - margin)) * scale
        return to_image(decoded[:, :, top : top + size.height, left : left + size.width])

    def start_noise(self, size: WorkSize, settings: ColorizeSettings) -> torch.Tensor:
        """The initial latent noise: a generator seeded with the seed (on the device for the
        official procedure, as the official app; on the CPU for ours, the same on every device)."""
        shape = (1, 4, size.canvas[1] // self.c.vae_scale, size.canvas[0] // self.c.vae_scale)
        if settings.procedure == "official":  # as diffusers' prepare_latents: in the model dtype
            generator = torch.Generator(self.c.device).manual_seed(settings.seed)
            return torch.randn(shape, generator=generator, device=self.c.device, dtype=self.c.dtype)
        return torch.randn(shape, generator=stream_generator(settings.seed, START_NOISE), dtype=torch.float32)

    @torch.inference_mode()
    def __call__(
        self,
        canvas: Image.Image,
        mask: Image.Image,
        size: WorkSize,
        settings: ColorizeSettings = ColorizeSettings(),
        callback: StepCallback | None = None,
    ) -> Image.Image:
        """Colorize the page region of a RAP canvas; returns the page at working size (W x H).

        With procedure "official" the conditioning samples come from the global RNG: the
        caller seeds it (see rng.official_seeding) so that the GSRP sample follows them."""
        self.check_inputs(canvas, mask, size, settings)
        if settings.procedure == "official":  # one conditioning sample per CFG copy, from the global RNG
            latents = self.start_noise(size, settings)
            copies = 2 if settings.guidance_scale > 1.0 else 1
            conditioning = self.conditioning(canvas, mask, size, None, copies=copies)
        else:
            latents, conditioning = self._own_streams([canvas], [mask], size, [settings])
        return self._denoise(latents, conditioning, size, settings, callback)[0]

    @torch.inference_mode()
    def colorize_batch(
        self,
        canvases: Sequence[Image.Image],
        masks: Sequence[Image.Image],
        size: WorkSize,
        settings_list: Sequence[ColorizeSettings],
        callback: StepCallback | None = None,
    ) -> list[Image.Image]:
        """Several pages of one working size in one denoising call (icp/batch.py): each page's
        noise and conditioning sample from its own seed, as alone; one callback per step for the
        batch (StepInfo.previews: one per page). Procedure "ours" only; InputError before any
        model work for pages that cannot share a batch."""
        check_batch(canvases, masks, size, settings_list)
        for canvas, mask, settings in zip(canvases, masks, settings_list):
            self.check_inputs(canvas, mask, size, settings)
        latents, conditioning = self._own_streams(canvases, masks, size, settings_list)
        return self._denoise(latents, conditioning, size, settings_list[0], callback)

    def _own_streams(self, canvases: Sequence[Image.Image], masks: Sequence[Image.Image], size: WorkSize,
                     settings_list: Sequence[ColorizeSettings]) -> tuple[torch.Tensor, torch.Tensor]:
        """Procedure "ours": each page's start noise and conditioning sample from its own seed's
        streams, concatenated along the batch."""
        noises, conditionings = [], []
        for canvas, mask, settings in zip(canvases, masks, settings_list):
            noises.append(self.start_noise(size, settings))
            conditionings.append(self.conditioning(canvas, mask, size, stream_generator(settings.seed, CONDITIONING)))
        return torch.cat(noises), torch.cat(conditionings)

    def _denoise(self, latents: torch.Tensor, conditioning: torch.Tensor, size: WorkSize,
                 settings: ColorizeSettings, callback: StepCallback | None) -> list[Image.Image]:
        """The guided UniPC loop over start latents of N pages (conditioning of N, or 2 CFG
        copies of one page for the official procedure), then each page decoded alone."""
        from diffusers import UniPCMultistepScheduler

        official = settings.procedure == "official"
        use_cfg = settings.guidance_scale > 1.0
        pages = latents.shape[0]
        text = self.prompt_embeddings(settings.prompt, settings.negative_prompt)
        # The UNet's batch: [negative x N, prompt x N] with CFG, else [prompt x N].
        text = text.repeat_interleave(pages, dim=0) if use_cfg else text[1:].repeat(pages, 1, 1)
        scheduler = UniPCMultistepScheduler.from_config(self.c.scheduler_config)
        # Timesteps stay on the CPU (integers; UniPC keeps its sigmas there too): the step
        # bookkeeping then never needs device data, and the models get them as scalars.
        scheduler.set_timesteps(settings.steps, device="cpu")
        latents = (latents * scheduler.init_noise_sigma).to(self.c.device, self.c.dtype)
        total = len(scheduler.timesteps)
        for index, timestep in enumerate(scheduler.timesteps):
            model_input = scheduler.scale_model_input(latents, timestep)
            if use_cfg:
                batch = torch.cat([model_input] * 2)
                guide_input = batch if official else model_input
                features = self.c.guide(guide_input, timestep, conditioning, settings.conditioning_scale)
                noise = self.c.unet_runner(self.unet_forward, batch, timestep, text, cfg_features(features, pages))
                uncond, cond = noise.chunk(2)
                noise = uncond + settings.guidance_scale * (cond - uncond)
            else:
                features = self.c.guide(model_input, timestep, conditioning, settings.conditioning_scale)
                noise = self.c.unet_runner(self.unet_forward, model_input, timestep, text, features)
            latents = scheduler.step(noise, timestep, latents, return_dict=False)[0]
            self.report_step(callback, latents, size, settings, index + 1, total, int(timestep))
        if self.c.offload is not None:
            self.c.offload.offload("guide")
        return [self.decode(latents[i : i + 1], size, settings) for i in range(pages)]

    def report_step(self, callback: StepCallback | None, latents: torch.Tensor, size: WorkSize,
                    settings: ColorizeSettings, step: int, total: int, timestep: int) -> None:
        """After denoising step `step` (1-based): the callback gets each page's preview (on the
        settings' preview steps and the last); Interrupted when it returns False."""
        if callback is None:
            return
        wants_preview = settings.preview_every and (step % settings.preview_every == 0 or step == total)
        previews = tuple(latent_preview(self._page_latent(latents[i : i + 1], size)) if wants_preview
                         else None for i in range(latents.shape[0]))
        if callback(StepInfo(step, total, timestep, previews[0], previews)) is False:
            raise Interrupted(f"interrupted after step {step} of {total}")

    def decode(self, latents: torch.Tensor, size: WorkSize, settings: ColorizeSettings) -> Image.Image:
        """One page's final latent to its W x H page, by the settings' decode region."""
        if settings.decode == "page":
            return self.decode_page(latents, size, settings.decode_margin)
        return self.decode_canvas(latents, size)

    def _page_latent_box(self, size: WorkSize) -> tuple[int, int, int, int]:
        """The page area of the canvas in latent cells (x0, y0, x1, y1)."""
        x0, y0, x1, y1 = size.query_box_in_canvas
        scale = self.c.vae_scale
        return x0 // scale, y0 // scale, x1 // scale, y1 // scale

    def _page_latent(self, latents: torch.Tensor, size: WorkSize) -> torch.Tensor:
        x0, y0, x1, y1 = self._page_latent_box(size)
        return latents[:, :, y0:y1, x0:x1]
