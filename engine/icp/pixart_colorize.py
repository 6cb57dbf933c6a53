"""ICP for the line-art styles: the guided PixArt-α denoising loop of the official ColorFlow PixArt pipeline.

Official defaults (../shared/reference/SKETCH.md): the PixArt repo's DPM-Solver++ scheduler as
shipped, CFG 4.5 (the run's guidance), prompt "manga" and negative "" embedded once by T5
(icp/text_embeddings.py), the transformer's cross-attention masked with a -10000 bias, micro-conditions
resolution [2H, 2W] and aspect ratio 2H/2W of the canvas. Each step: the guide sees x_t with the 9
conditioning channels (icp/conditioning.py: A | mask | B) at the same timestep and micro-conditions
and its outputs join the transformer after its first blocks (icp/pixart_forward.py); CFG on all 8
output channels, then the first 4 (learned sigma) step the scheduler. Procedures as the SD path
(icp/colorize.py, whose helpers this loop reuses): "official" draws the start noise from a generator
seeded with the seed and each CFG copy's conditioning sample from the global RNG (guide at batch 2);
"ours" draws both from the seed's own streams and runs the guide once per step for both CFG halves
(exact: the guide takes no text). At 1 step the official loop asks for the scheduler's
pred_original_sample, which DPM-Solver's output lacks; its last step ends at sigma 0, so the sample
it returns is that prediction, and is used.
"""

from __future__ import annotations

import torch

from engine.core.errors import InputError
from engine.core.geometry import WorkSize
from engine.icp.colorize import Colorizer, StepCallback
from engine.icp.pixart_components import PixArtComponents
from engine.icp.pixart_forward import guided_transformer_forward
from engine.icp.settings import ColorizeSettings


def micro_conditions(size: WorkSize, rows: int, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """PixArt's added conditions for the 2W x 2H canvas the pipeline runs at: resolution
    [[2H, 2W]] and aspect ratio [[2H / 2W]], one row per batch row."""
    width, height = size.canvas
    resolution = torch.tensor([[float(height), float(width)]]).repeat(rows, 1)
    aspect_ratio = torch.tensor([[float(height / width)]]).repeat(rows, 1)
    return {"resolution": resolution.to(device, dtype), "aspect_ratio": aspect_ratio.to(device, dtype)}


class PixArtColorizer(Colorizer):
    """The guided PixArt denoising loop on loaded components; the interface of icp.colorize.Colorizer
    (check_inputs, __call__, colorize_batch, conditioning, decode) so a page's pipeline runs either."""

    def __init__(self, components: PixArtComponents, transformer_forward=guided_transformer_forward) -> None:
        super().__init__(components)  # type: ignore[arg-type]  (the same runners, device and VAE)
        self.c: PixArtComponents = components  # type: ignore[assignment]
        # (transformer, sample, timestep, text, text_mask, micro-conditions, controls) -> output;
        # replaceable so a test can watch what the transformer is given.
        self.transformer_forward = transformer_forward

    @property
    def components(self) -> PixArtComponents:  # type: ignore[override]
        """The loaded models this loop runs on (a page's caller offloads them or lowers their memory)."""
        return self.c

    def check_inputs(self, canvas, mask, size: WorkSize, settings: ColorizeSettings) -> None:
        super().check_inputs(canvas, mask, size, settings)
        patch, scale = self.c.patch_size, self.c.vae_scale
        if (size.canvas[0] // scale) % patch or (size.canvas[1] // scale) % patch:
            raise InputError(f"working size {size}: the canvas latent does not divide into the transformer's "
                             f"{patch}x{patch} patches")
        if (settings.prompt, settings.negative_prompt) != tuple(self.c.prompts):
            raise InputError(f"the line-art styles run with the prompt {self.c.prompts[0]!r} and negative prompt "
                             f"{self.c.prompts[1]!r} embedded when the models were loaded; got prompt "
                             f"{settings.prompt!r}, negative {settings.negative_prompt!r}")

    def prompt_embeddings(self, prompt: str, negative: str) -> torch.Tensor:
        """[negative, prompt] T5 embeddings (batch 2), computed once when the models were loaded."""
        if (prompt, negative) != tuple(self.c.prompts):
            raise InputError(f"no T5 embeddings loaded for prompt {prompt!r}, negative {negative!r}")
        return self.c.text.embeds.to(self.c.device, self.c.dtype)

    def _text_rows(self, pages: int, use_cfg: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings and keep-masks for the transformer's batch: [negative x N, prompt x N] with
        CFG, else [prompt x N]."""
        embeds = self.prompt_embeddings(*self.c.prompts)
        mask = self.c.text.mask.to(self.c.device)
        if use_cfg:
            return embeds.repeat_interleave(pages, dim=0), mask.repeat_interleave(pages, dim=0)
        return embeds[1:].repeat(pages, 1, 1), mask[1:].repeat(pages, 1)

    @torch.inference_mode()
    def denoise(self, latents: torch.Tensor, conditioning: torch.Tensor, size: WorkSize, settings: ColorizeSettings,
                callback: StepCallback | None = None) -> torch.Tensor:
        """The guided DPM-Solver++ loop from start latents of N pages (conditioning of N, or of the
        2 CFG copies of one page for the official procedure); returns the final latents."""
        from diffusers import DPMSolverMultistepScheduler

        c = self.c
        use_cfg = settings.guidance_scale > 1.0
        pages = latents.shape[0]
        rows = 2 * pages if use_cfg else pages
        guide_rows = conditioning.shape[0]  # official: the CFG copies; ours: one per page, shared by both halves
        text, text_mask = self._text_rows(pages, use_cfg)
        micro = micro_conditions(size, rows, c.device, c.dtype)
        guide_micro = micro_conditions(size, guide_rows, c.device, c.dtype)
        scheduler = DPMSolverMultistepScheduler.from_config(c.scheduler_config)
        scheduler.set_timesteps(settings.steps, device="cpu")  # integer timesteps: no device sync in the loop
        latents = (latents * scheduler.init_noise_sigma).to(c.device, c.dtype)
        conditioning = conditioning.to(c.device, c.dtype)
        channels = latents.shape[1]
        learned_sigma = c.transformer.config.out_channels // 2 == channels
        total = len(scheduler.timesteps)
        for index, timestep in enumerate(scheduler.timesteps):
            model_input = scheduler.scale_model_input(torch.cat([latents] * 2) if use_cfg else latents, timestep)
            step_time = timestep.reshape(1).to(c.device)
            controls = c.guide(torch.cat([model_input[:guide_rows], conditioning], dim=1),
                               step_time.expand(guide_rows), guide_micro)
            if settings.conditioning_scale != 1.0:
                controls = [control * settings.conditioning_scale for control in controls]
            if guide_rows != rows and guide_rows > 1:  # several pages (ours): the same outputs for both halves
                controls = [torch.cat([control] * (rows // guide_rows)) for control in controls]
            output = c.transformer_runner(self.transformer_forward, model_input, step_time.expand(rows), text,
                                          text_mask, micro, controls)
            if use_cfg:
                uncond, cond = output.chunk(2)
                output = uncond + settings.guidance_scale * (cond - uncond)
            noise = output.chunk(2, dim=1)[0] if learned_sigma else output
            latents = scheduler.step(noise, timestep, latents, return_dict=False)[0]
            self.report_step(callback, latents, size, settings, index + 1, total, int(timestep))
        if c.offload is not None:
            c.offload.offload("guide")
        return latents

    def _denoise(self, latents: torch.Tensor, conditioning: torch.Tensor, size: WorkSize,
                 settings: ColorizeSettings, callback: StepCallback | None) -> list:
        """Colorizer's loop step for this family: denoise, then each page decoded alone."""
        latents = self.denoise(latents, conditioning, size, settings, callback)
        return [self.decode(latents[i : i + 1], size, settings) for i in range(latents.shape[0])]
