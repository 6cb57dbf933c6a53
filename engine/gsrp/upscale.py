"""GSRP: guided super-resolution (paper 3.3) and the final page at its own size.

The colored working-size page is upsampled; the VAE encoder runs on it and on the
high-resolution gray page, keeping 5 multi-scale features each; the fusion network fuses
them per level and they are added into the VAE decoder, which decodes a fresh sample of the
colored page's posterior. Runs at the official 1.5x of the working size; the last step to
the page's own size is a resize, and with keep-ink the lightness comes from the page itself.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np
import torch
from PIL import Image

from engine.gsrp.settings import GSRP_SCALE, UpscaleSettings  # noqa: F401 (re-exported)
from engine.preprocess.tensors import downscale_factor, to_tensor
from engine.core.geometry import WorkSize
from engine.core.rng import GSRP, stream_generator

INK_CHROMA_FADE_L = 15.0  # CIELAB lightness below which keep-ink fades the color out


def gsrp_size(size: WorkSize, scale: float, multiple: int) -> tuple[int, int]:
    """GSRP frame size: scale x working size, rounded to the VAE's grid."""
    def snap(value: float) -> int:
        return max(multiple, int(round(value / multiple)) * multiple)

    return snap(size.width * scale), snap(size.height * scale)


def encode_with_features(vae, pixels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """VAE encoder moments plus its conv_in output and each down block's output."""
    encoder = vae.encoder
    hidden = encoder.conv_in(pixels)
    features = [hidden]
    for block in encoder.down_blocks:
        hidden = block(hidden)
        features.append(hidden)
    hidden = encoder.conv_out(encoder.conv_act(encoder.conv_norm_out(encoder.mid_block(hidden))))
    if vae.quant_conv is not None:
        hidden = vae.quant_conv(hidden)
    return hidden, features


def decode_with_features(vae, latents: torch.Tensor, fused: list[torch.Tensor]) -> torch.Tensor:
    """VAE decoder with the fused maps added: deepest after conv_in, the others before each
    up block from the deepest level to the full-resolution one."""
    decoder = vae.decoder
    if vae.post_quant_conv is not None:
        latents = vae.post_quant_conv(latents)
    hidden = decoder.conv_in(latents) + fused[-1]
    hidden = decoder.mid_block(hidden, None)
    n_up = len(decoder.up_blocks)
    for index, block in enumerate(decoder.up_blocks):
        hidden = block(hidden + fused[n_up - 1 - index], None)
    hidden = decoder.conv_out(decoder.conv_act(decoder.conv_norm_out(hidden)))
    return hidden


def sample_posterior(moments: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """A sample of the VAE posterior from standard-normal `noise`: mean + std * noise in the
    moments' dtype, log-variance clamped to [-30, 20] as diffusers' DiagonalGaussianDistribution."""
    mean, logvar = moments.chunk(2, dim=1)
    return mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * noise.to(mean.device, mean.dtype)


def guided_decode(vae, fusion, color: torch.Tensor, gray: torch.Tensor, noise: Callable[[torch.Tensor], torch.Tensor],
                  *, sample_dtype: torch.dtype | None = None) -> torch.Tensor:
    """GSRP on tensors, for inference and training alike: the VAE encodes the upsampled colored page
    and the gray page (no graph: the VAE is frozen), the fusion network fuses their features, and
    the decoder decodes a sample of the colored page's posterior with the fused maps added.

    `vae` is a Runner over the VAE (offload.Runner); `noise(mean)` gives the standard-normal draw
    for the posterior mean `mean`; `sample_dtype` (training: float32) is the dtype the sample is
    drawn in, else the moments' own (fp16 at fp16 inference, as the official app); the decoder
    gets it in the moments' dtype."""
    with torch.no_grad():
        moments, color_features = vae(encode_with_features, color)
        _, gray_features = vae(encode_with_features, gray)
    fused = fusion(color_features, gray_features)
    drawn = moments if sample_dtype is None else moments.to(sample_dtype)
    latents = sample_posterior(drawn, noise(drawn.chunk(2, dim=1)[0]))
    return vae(decode_with_features, latents.to(moments.dtype), fused)


@contextlib.contextmanager
def _batch_norm_mode(module: torch.nn.Module, mode: str):
    """"batch": per-call statistics like the official app (BatchNorm in training mode) but
    with momentum 0, so the stored running statistics stay intact; "running": eval mode."""
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.momentum) for m in norms]
    for norm in norms:
        norm.train(mode == "batch")
        norm.momentum = 0.0
    try:
        yield
    finally:
        for norm, (training, momentum) in zip(norms, saved):
            norm.train(training)
            norm.momentum = momentum


def _to_image_truncated(tensor: torch.Tensor) -> Image.Image:
    # Official output: clamp, map to [0, 255] and truncate (not round).
    array = ((tensor[0].float().clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, "RGB")


class Upscaler:
    """GSRP on loaded components (VAE + fusion network)."""

    def __init__(self, vae, fusion, device: torch.device, dtype: torch.dtype) -> None:
        from engine.core.offload import Runner

        # Every VAE use goes through a Runner (shared with ICP when given one), so low-VRAM
        # offload hooks place the VAE on the device before it runs.
        self.vae = vae if isinstance(vae, Runner) else Runner(vae)
        self.fusion, self.device, self.dtype = fusion, device, dtype

    @property
    def grid(self) -> int:
        return downscale_factor(self.vae.config)

    def frame_size(self, size: WorkSize, scale: float = GSRP_SCALE) -> tuple[int, int]:
        return gsrp_size(size, scale, self.grid)

    @torch.inference_mode()
    def __call__(self, colored: Image.Image, gray_frame: Image.Image, settings: UpscaleSettings = UpscaleSettings()) -> Image.Image:
        """Super-resolve a colored working-size page guided by the gray page in the GSRP frame
        (G, same framing as the working image); returns the colored frame at the gray frame's size."""
        width, height = gray_frame.size
        if width % self.grid or height % self.grid:
            raise ValueError(f"GSRP frame {width}x{height} must be a multiple of {self.grid}")
        color_frame = colored.convert("RGB").resize((width, height), Image.BICUBIC)
        color = to_tensor(color_frame).to(self.device, self.dtype)
        gray = to_tensor(gray_frame.convert("RGB")).to(self.device, self.dtype)

        def noise(mean: torch.Tensor) -> torch.Tensor:
            if settings.procedure == "official":  # diffusers' latent_dist.sample(): the global RNG
                return torch.randn(mean.shape, device=mean.device, dtype=mean.dtype)
            return torch.randn(mean.shape, generator=stream_generator(settings.seed, GSRP), dtype=torch.float32)

        # The VAE has no BatchNorm: the mode reaches the fusion network alone.
        with _batch_norm_mode(self.fusion, settings.batch_norm):
            decoded = guided_decode(self.vae, self.fusion, color, gray, noise)
        return _to_image_truncated(decoded)


def keep_ink(colored: Image.Image, gray_page: Image.Image) -> Image.Image:
    """Lightness from the original page, color (a*, b*) from the model, in CIELAB: line art,
    text and screentone stay pixel-faithful. `colored` must already have the page's size."""
    from skimage.color import rgb2lab

    if colored.size != gray_page.size:
        raise ValueError("keep_ink needs the colored page at the page's own size")
    gray_rgb = np.asarray(gray_page.convert("L").convert("RGB"), dtype=np.float64) / 255.0
    color_rgb = np.asarray(colored.convert("RGB"), dtype=np.float64) / 255.0
    lightness = rgb2lab(gray_rgb)[..., 0]
    lab = rgb2lab(color_rgb)
    lab[..., 0] = lightness
    # Ink stays ink: fade chroma out in the darkest tones, where it would only tint black lines.
    lab[..., 1:] *= np.clip(lightness / INK_CHROMA_FADE_L, 0.0, 1.0)[..., None]
    rgb = _lab_to_rgb_keeping_lightness(lab)
    return Image.fromarray((rgb * 255.0 + 0.5).astype(np.uint8), "RGB")


def multiply_ink(colored: Image.Image, gray_page: Image.Image) -> Image.Image:
    """Keep-ink for line-art pages: the page's ink multiplied over the colors, as a colorist's line
    layer in multiply mode (out = color x page / 255, rounded): black lines stay black, white paper
    takes the model's color, gray shading darkens it. Taking lightness from the page (keep_ink)
    would leave a line-art page's paper white, so without color."""
    if colored.size != gray_page.size:
        raise ValueError("multiply_ink needs the colored page at the page's own size")
    ink = np.asarray(gray_page.convert("L"), dtype=np.uint32)[..., None]
    color = np.asarray(colored.convert("RGB"), dtype=np.uint32)
    return Image.fromarray(((color * ink + 127) // 255).astype(np.uint8), "RGB")


def _linear_rgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB (D65) -> linear sRGB without clipping (skimage's lab2rgb clips)."""
    import warnings

    from skimage.color import lab2xyz
    from skimage.color.colorconv import rgb_from_xyz

    with warnings.catch_warnings():  # negative Z (far out of gamut) is clipped; bisection follows
        warnings.simplefilter("ignore", UserWarning)
        return lab2xyz(lab) @ rgb_from_xyz.T


def _in_gamut(linear: np.ndarray) -> np.ndarray:
    return np.all((linear >= -1e-6) & (linear <= 1 + 1e-6), axis=-1)


def _lab_to_rgb_keeping_lightness(lab: np.ndarray, iterations: int = 12) -> np.ndarray:
    """CIELAB -> sRGB where colors outside the gamut lose chroma (bisection) instead of being
    clipped per channel, which would change their lightness."""
    linear = _linear_rgb(lab)
    outside = ~_in_gamut(linear)
    if outside.any():
        pixels = lab[outside]
        low, high = np.zeros(len(pixels)), np.ones(len(pixels))
        for _ in range(iterations):
            middle = (low + high) / 2
            trial = pixels.copy()
            trial[:, 1:] *= middle[:, None]
            fits = _in_gamut(_linear_rgb(trial))
            low, high = np.where(fits, middle, low), np.where(fits, high, middle)
        pixels[:, 1:] *= low[:, None]
        linear[outside] = _linear_rgb(pixels)
    linear = np.clip(linear, 0.0, 1.0)
    # sRGB transfer curve
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * np.power(linear, 1 / 2.4) - 0.055)
