"""The official ScreenStyle pass: page -> G, a 50/50 blend of its grayscale and a ScreenVAE re-screening.

Follows docs/reference/screenstyle.md. Two networks run: G_RGB2INTSCR (gray + RGB -> 4-channel
screen code, eval mode) and the ScreenVAE decoder (screen code -> screentone, left in training
mode by the official app: its two dropouts and its noise injections are live). Written on plain
torch modules with the official Sequential layout, so the official `.pth` files load strictly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import nn

from engine.preprocess.tensors import to_tensor
from engine.core.rng import official_seeding

# Hub files of the two networks used, relative to the ColorFlow repo root.
RGB_TO_SCREEN_FILE = "ScreenStyle/color2manga/color2manga_cycle_ganstft/latest_net_G_RGB2INTSCR.pth"
SCREEN_DECODER_FILE = "ScreenStyle/ScreenVAE/latest_net_dec.pth"
SCREENSTYLE_FILES = (RGB_TO_SCREEN_FILE, SCREEN_DECODER_FILE)

BASE_CHANNELS = 48  # ngf of both networks
INPUT_MULTIPLE = 256  # the page is padded right/bottom to multiples of this
DECODER_MULTIPLE = 128  # the decoder pads to the next multiple ABOVE the size
HALVE_ABOVE = 2500  # pages taller than this are halved first (official rule)


class LayerNormNoAffine(nn.Module):
    """LayerNorm over (C, H, W) of each sample, no parameters (the official `norm='layer'`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[1:])


class NoiseInjection(nn.Module):
    """`x + w * randn_like(x) + b` on the first half of the channels (the official ApplyNoise).
    Draws from the global RNG of x's device, like the official code."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.weight = nn.Parameter(torch.zeros(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.channels // 2
        keep = torch.zeros_like(self.weight)
        keep[:half] = 1.0
        weight = (self.weight * keep).view(1, -1, 1, 1).to(x.device)
        bias = (self.bias * keep).view(1, -1, 1, 1).to(x.device)
        return x + (weight * torch.randn_like(x) + bias).type_as(x)


def _upsample(in_channels: int, out_channels: int, mode: str) -> list[nn.Module]:
    if mode == "basic":
        return [nn.ConvTranspose2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1)]
    return [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True), nn.Conv2d(in_channels, out_channels, 1)]


def _lrelu() -> nn.Module:
    # In place, as the official blocks: the skip then carries LeakyReLU(x), not x.
    return nn.LeakyReLU(0.2, inplace=True)


class _UNetLevel(nn.Module):
    """One U-Net level in the official Sequential layout (index positions give the key names).

    `skip="add"` (G_RGB2INTSCR's UnetBlock_A: spectral-normed convs, output + input) or
    `skip="concat"` (ScreenVAE decoder's UnetBlock_G: output concatenated with input)."""

    def __init__(self, input_nc: int, outer_nc: int, inner_nc: int, submodule: nn.Module | None, *,
                 skip: str, upsample: str, outermost: bool = False, noise: bool = False,
                 dropout: bool = False) -> None:
        super().__init__()
        concat = skip == "concat"
        sn = (lambda m: m) if concat else nn.utils.spectral_norm
        self.outermost, self.concat, self.noise = outermost, concat, noise
        self.noiseblock = NoiseInjection(outer_nc)
        down = [nn.ReplicationPad2d(1), sn(nn.Conv2d(input_nc, inner_nc, 3, stride=2))]
        up_in = inner_nc * 2 if concat and submodule is not None else inner_nc
        if outermost:
            if concat:
                layers = down + [submodule, _lrelu(), *_upsample(up_in, inner_nc, upsample), LayerNormNoAffine(),
                                 _lrelu(), nn.ReplicationPad2d(3), nn.Conv2d(inner_nc, outer_nc, 7)]
            else:
                layers = down + [submodule, _lrelu(), *_upsample(inner_nc, outer_nc, upsample), LayerNormNoAffine(),
                                 _lrelu(), nn.ReplicationPad2d(1), sn(nn.Conv2d(outer_nc, outer_nc, 3))]
        else:
            layers = [_lrelu(), *down]
            if submodule is not None:
                layers += [LayerNormNoAffine(), submodule]
            layers += [_lrelu(), *_upsample(up_in, outer_nc, upsample), LayerNormNoAffine(), _lrelu(),
                       nn.ReplicationPad2d(1), sn(nn.Conv2d(outer_nc, outer_nc, 3)), LayerNormNoAffine()]
            if dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        inner = self.model(x)  # the leading in-place LeakyReLU has changed x too
        if self.noise:
            inner = self.noiseblock(inner)
        if self.concat:
            return torch.cat([inner, x], dim=1)
        if inner.shape[-2:] != x.shape[-2:]:
            inner = F.interpolate(inner, x.shape[2:])
        return inner + x


def _build_unet(input_nc: int, output_nc: int, downs: int, *, skip: str, deep_upsample: str,
                outer_upsample: str, noise_outer: bool, dropout_middle: bool) -> nn.Module:
    ngf, deep = BASE_CHANNELS, BASE_CHANNELS * 8
    common = dict(skip=skip)
    level = _UNetLevel(deep, deep, deep, None, upsample=deep_upsample, **common)
    for _ in range(downs - 5):
        level = _UNetLevel(deep, deep, deep, level, upsample=deep_upsample, dropout=dropout_middle, **common)
    for inner, outer in ((deep, ngf * 4), (ngf * 4, ngf * 2), (ngf * 2, ngf)):
        level = _UNetLevel(outer, outer, inner, level, upsample=outer_upsample, noise=noise_outer, **common)
    return _UNetLevel(input_nc, output_nc, ngf, level, upsample=outer_upsample, outermost=True, **common)


class RGBToScreen(nn.Module):
    """G_RGB2INTSCR: [gray, RGB] (4 ch, [-1, 1]) -> 4-channel screen code, tanh; 8 levels."""

    def __init__(self) -> None:
        super().__init__()
        self.model = _build_unet(4, 4, 8, skip="add", deep_upsample="bilinear", outer_upsample="bilinear",
                                 noise_outer=False, dropout_middle=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.model(x))


class ScreenDecoder(nn.Module):
    """The ScreenVAE decoder: screen code (4 ch) -> screentone (1 ch); 7 levels, noise in the
    three outer levels, dropout in the two middle ones."""

    def __init__(self) -> None:
        super().__init__()
        self.model = _build_unet(4, 1, 7, skip="concat", deep_upsample="bilinear", outer_upsample="basic",
                                 noise_outer=True, dropout_middle=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


@dataclass
class ScreenStyleNetworks:
    """The two networks of the pass, loaded and placed on one device (fp32, as the official app)."""

    rgb_to_screen: RGBToScreen
    decoder: ScreenDecoder
    device: torch.device
    fingerprint: str = ""  # identifies the weight files, for caching G

    def to(self, device) -> "ScreenStyleNetworks":
        self.device = torch.device(device)
        self.rgb_to_screen.to(self.device)
        self.decoder.to(self.device)
        return self


def load_screenstyle(colorflow_root: Path, device: str | torch.device = "cpu") -> ScreenStyleNetworks:
    """Both networks from the official `.pth` files (weights_only), every key checked."""
    from engine.io.checkpoints import load_strict, reading_model
    from engine.io.weight_files import read_state_dict, require_model_file

    networks = []
    stamps = []
    for module, relative in ((RGBToScreen(), RGB_TO_SCREEN_FILE), (ScreenDecoder(), SCREEN_DECODER_FILE)):
        path = require_model_file(Path(colorflow_root) / relative, "a ScreenStyle network")
        with reading_model(path, "a ScreenStyle network"):
            load_strict(module, read_state_dict(path), f"ScreenStyle checkpoint {relative}")
        stat = path.stat()
        stamps.append(f"{relative}:{stat.st_size}:{stat.st_mtime_ns}")
        networks.append(module.requires_grad_(False))
    rgb_to_screen, decoder = networks
    rgb_to_screen.eval()  # the official ScreenModel.eval() reaches this one...
    decoder.train()  # ...but not the ScreenVAE: its dropouts stay live
    return ScreenStyleNetworks(rgb_to_screen, decoder, torch.device("cpu"), "|".join(stamps)).to(device)


def _pad_to_multiple(image: Image.Image, multiple: int) -> Image.Image:
    """Right/bottom padding with fill 255 as `ImageOps.expand` gives it: white for L, but
    RED (255, 0, 0) for RGB — an official quirk the weights were used with."""
    w, h = image.size
    pw, ph = -(-w // multiple) * multiple, -(-h // multiple) * multiple
    if (pw, ph) == (w, h):
        return image
    return ImageOps.expand(image, (0, 0, pw - w, ph - h), fill=255)


def _decode_screen(decoder: ScreenDecoder, code: torch.Tensor, gray: torch.Tensor) -> torch.Tensor:
    """ScreenVAE decoding of a screen code, modulated by the gray page (img_input=False path)."""
    h, w = code.shape[-2:]
    ph, pw = h // DECODER_MULTIPLE * DECODER_MULTIPLE + DECODER_MULTIPLE, w // DECODER_MULTIPLE * DECODER_MULTIPLE + DECODER_MULTIPLE
    padded = F.pad(code, (0, pw - w, 0, ph - h), mode="replicate")
    recons = decoder(padded)[:, :, :h, :w]
    return torch.clamp((recons + 1) * (gray + 1) / 2 - 1, -1, 1)


@torch.no_grad()
def screen_style(page: Image.Image, networks: ScreenStyleNetworks, seed: int) -> Image.Image:
    """G for a page already fitted to 1.5W x 1.5H: returns an RGB (gray) image of the same size.

    The RNG draws (decoder dropouts, then noise) come from the global RNG seeded with `seed`,
    restored afterwards."""
    rgb = page.convert("RGB")
    size = rgb.size
    work = rgb
    if work.size[1] > HALVE_ABOVE:  # official rule; never reached at the official sizes
        work = work.resize((work.size[0] // 2, work.size[1] // 2), Image.LANCZOS)
    w, h = work.size
    device = networks.device
    # to_tensor: torchvision's ToTensor + Normalize(0.5, 0.5), as the official transform
    color = to_tensor(_pad_to_multiple(work, INPUT_MULTIPLE)).to(device)
    gray = to_tensor(_pad_to_multiple(work.convert("L"), INPUT_MULTIPLE)).to(device)
    with official_seeding(seed, device):
        code = networks.rgb_to_screen(torch.cat([gray, color], dim=1))
        tone = _decode_screen(networks.decoder, code, gray)
    toned = ((tone + 1) / 2 * ((gray + 1) / 2)) * 2 - 1
    toned = toned[:, :, :h, :w]
    # BidirectionalTranslation's tensor2im: (x + 1) / 2 * 255, truncated to uint8.
    array = ((toned[0, 0].float().cpu().numpy() + 1) / 2.0 * 255.0).astype(np.uint8)
    screened = Image.fromarray(array, "L")
    if screened.size != size:
        screened = screened.resize(size, Image.BICUBIC)
    return Image.blend(screened.convert("RGB"), rgb.convert("L").convert("RGB"), 0.5)
