"""The official line extractor (LE/erika.pth) on plain torch modules, line extraction and the Sketch_Shading rule.

As the official app's Sketch and Sketch_Shading styles (`res_skip`, `extract_lines`): a residual U-shaped
network on the raw gray page (0..255, not normalised), BatchNorm (eps 1e-3) in eval mode,
LeakyReLU 0.2, nearest 2x upsampling; the page padded bottom/right to multiples of 16, the output
clipped to 0..255 and truncated to uint8. Module names follow the official file's keys, so it
loads strictly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

LINE_MULTIPLE = 16  # four stride-2 stages: the padded page divides by 16
# The official code pads with np.ones: 1.0, nearly black on the 0..255 scale (a quirk); ours pads
# with white paper. Only frames that are not multiples of 16 are padded (never a run's 1.5x frame).
OFFICIAL_PAD_VALUE = 1.0
OURS_PAD_VALUE = 255.0
BN_EPS = 1e-3
SLOPE = 0.2

OFFICIAL_WIDTHS = (24, 48, 96, 192, 384)  # the five encoder stages
OFFICIAL_DEPTHS = (2, 3, 5, 7, 12)  # residual blocks per encoder stage
OFFICIAL_UP_DEPTHS = (7, 5, 3, 2)  # per decoder stage, deepest first
OFFICIAL_HEAD = (16, 2)  # width and depth of the last stage before the 1x1 output unit
MAX_DEPTH = 64  # a file claiming deeper stages is refused before anything is built


class _Unit(nn.Module):
    """BatchNorm -> LeakyReLU -> conv (k x k, 'same' padding), optionally followed by 2x nearest upsampling."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, up: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.BatchNorm2d(cin, eps=BN_EPS), nn.LeakyReLU(SLOPE),
                                   nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)]
        if up:
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class _Projection(nn.Module):
    """The skip path of a block: the input itself, or a 1x1 conv (strided or upsampled) where shapes change."""

    def __init__(self, cin: int, cout: int, stride: int = 1, up: bool = False) -> None:
        super().__init__()
        self.model: nn.Sequential | None = None
        if cin != cout or stride != 1:
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, 1, stride=stride)]
            if up:
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            self.model = nn.Sequential(*layers)

    def forward(self, skip: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        return branch + (skip if self.model is None else self.model(skip))


class _Block(nn.Module):
    """Two units on the branch plus the skip path; `stride` 2 halves, `up` doubles the resolution."""

    def __init__(self, cin: int, cout: int, stride: int = 1, up: bool = False) -> None:
        super().__init__()
        self.conv1 = _Unit(cin, cout, stride=stride, up=up)
        self.residual = _Unit(cout, cout)
        self.shortcut = _Projection(cin, cout, stride=stride, up=up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x, self.residual(self.conv1(x)))


class _Stage(nn.Module):
    """`depth` blocks in `model`: downsampling in the last one, or upsampling in the first one."""

    def __init__(self, cin: int, cout: int, depth: int, kind: str) -> None:
        super().__init__()
        blocks = []
        for i in range(depth):
            first = cin if i == 0 else cout
            if kind == "up":
                blocks.append(_Block(first, cout, up=i == 0))
            else:
                blocks.append(_Block(first, cout, stride=2 if (kind == "down" and i == depth - 1) else 1))
        self.model = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LineExtractor(nn.Module):
    """The official line extractor: 1-channel gray page (0..255) -> 1-channel line image (about 0..255).

    Encoder block0..block4 (block0 keeps the resolution, the others halve it), decoder block5..block8
    (each doubles it) with the matching encoder output added after each (res1..res4, no weights),
    block9 and the 1x1 output unit conv15. Widths and depths default to the official ones."""

    def __init__(self, widths=OFFICIAL_WIDTHS, depths=OFFICIAL_DEPTHS, up_depths=OFFICIAL_UP_DEPTHS,
                 head_width: int = OFFICIAL_HEAD[0], head_depth: int = OFFICIAL_HEAD[1]) -> None:
        super().__init__()
        widths, depths, up_depths = tuple(widths), tuple(depths), tuple(up_depths)
        if len(widths) != 5 or len(depths) != 5 or len(up_depths) != 4:
            raise ValueError("a line extractor has 5 encoder widths and depths and 4 decoder depths")
        if any(a >= b for a, b in zip(widths, widths[1:])):
            raise ValueError(f"encoder widths must grow stage by stage, got {widths}")
        self.fingerprint = ""  # identifies the weight file (load_line_extractor), for caching
        cin = 1
        for i, (width, depth) in enumerate(zip(widths, depths)):
            self.add_module(f"block{i}", _Stage(cin, width, depth, "keep" if i == 0 else "down"))
            cin = width
        for i, depth in enumerate(up_depths):
            self.add_module(f"block{5 + i}", _Stage(cin, widths[3 - i], depth, "up"))
            cin = widths[3 - i]
        self.block9 = _Stage(cin, head_width, head_depth, "keep")
        self.conv15 = _Unit(head_width, 1, kernel=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i in range(5):
            x = getattr(self, f"block{i}")(x)
            skips.append(x)
        for i in range(4):
            x = getattr(self, f"block{5 + i}")(x) + skips[3 - i]
        return self.conv15(self.block9(x))


def _widths_of(state: dict[str, torch.Tensor]) -> dict:
    """The constructor arguments a state dict was saved with (official defaults where a key is absent:
    the strict load then names it)."""
    def width(block: int, default: int) -> int:
        tensor = state.get(f"block{block}.model.0.conv1.model.2.weight")
        return int(tensor.shape[0]) if tensor is not None and tensor.ndim == 4 else default

    def depth(block: int, default: int) -> int:
        prefix = f"block{block}.model."
        found = {int(k[len(prefix):].split(".", 1)[0]) for k in state if k.startswith(prefix)
                 and k[len(prefix):].split(".", 1)[0].isdigit()}
        return max(found) + 1 if found else default

    return dict(widths=tuple(width(i, d) for i, d in enumerate(OFFICIAL_WIDTHS)),
                depths=tuple(depth(i, d) for i, d in enumerate(OFFICIAL_DEPTHS)),
                up_depths=tuple(depth(5 + i, d) for i, d in enumerate(OFFICIAL_UP_DEPTHS)),
                head_width=width(9, OFFICIAL_HEAD[0]), head_depth=depth(9, OFFICIAL_HEAD[1]))


def line_extractor_shapes(**widths) -> dict[str, list[int]]:
    """Key -> shape of LineExtractor(**widths), built on the meta device (no memory)."""
    with torch.device("meta"):
        net = LineExtractor(**widths)
    return {k: list(v.shape) for k, v in net.state_dict().items()}


def load_line_extractor(path: Path, device: str | torch.device = "cpu") -> LineExtractor:
    """The line extractor of a weight file (weights_only, every key checked), eval mode, fp32."""
    from engine.core.errors import ModelError
    from engine.io.checkpoints import load_strict, reading_model
    from engine.io.weight_files import read_state_dict, require_model_file

    path = require_model_file(Path(path), "the line extractor (LE/erika.pth, for the line-art input styles)")
    with reading_model(path, "the line extractor"):
        state = read_state_dict(path)
        arguments = _widths_of(state)
        if max(arguments["depths"] + arguments["up_depths"] + (arguments["head_depth"],)) > MAX_DEPTH:
            raise ModelError(f"{path}: not a line extractor (a stage deeper than {MAX_DEPTH} blocks)")
        try:
            with torch.device("meta"):  # the file's own tensors are assigned: nothing else is allocated
                net = LineExtractor(**arguments)
        except ValueError as exc:
            raise ModelError(f"{path}: not a line extractor ({exc})") from exc
        load_strict(net, state, f"line extractor {path}")
    stat = path.stat()
    net.fingerprint = f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}"
    return net.float().requires_grad_(False).eval().to(device)  # fp32, as the official app runs it


def line_pad_value(procedure: str) -> float:
    """The pad value of a procedure: the official 1.0 or our white paper."""
    return OFFICIAL_PAD_VALUE if str(procedure) == "official" else OURS_PAD_VALUE


@torch.no_grad()
def extract_lines(frame: Image.Image, net: LineExtractor, *, pad_value: float) -> Image.Image:
    """The line image ("L", the frame's size) of a page frame, as the official `extract_lines`.

    The frame's gray values (0..255 floats) go into a canvas of `pad_value` rounded up to multiples
    of 16 at the bottom/right; the output is clipped to 0..255 and truncated to uint8."""
    gray = np.asarray(frame.convert("L"), dtype=np.float32)
    rows, cols = (-(-n // LINE_MULTIPLE) * LINE_MULTIPLE for n in gray.shape)
    canvas = np.full((1, 1, rows, cols), pad_value, dtype=np.float32)
    canvas[0, 0, : gray.shape[0], : gray.shape[1]] = gray
    parameter = next(net.parameters())
    out = net(torch.from_numpy(canvas).to(parameter.device, parameter.dtype))
    lines = out[0, 0, : gray.shape[0], : gray.shape[1]].float().cpu().numpy()
    return Image.fromarray(np.clip(lines, 0, 255).astype(np.uint8), "L")


SHADING_BLACK_BELOW = 0.3 * 255.0  # page darker than this: black in the composite
SHADING_GRAY_BELOW = 145  # page between the two: lines brighter than the gray level become it
SHADING_GRAY = 125


def shading_composite(frame: Image.Image, lines: Image.Image) -> Image.Image:
    """The official Sketch_Shading input (RGB): the lines where the page is light, black where it is
    dark (< 76.5), and lines lighter than 125 lowered to 125 where it is mid-gray (76.5..145),
    applied per channel as the official numpy rule."""
    page = np.asarray(frame.convert("RGB"))
    out = np.array(lines.convert("RGB"))
    out[page < SHADING_BLACK_BELOW] = 0
    mid = (page > SHADING_BLACK_BELOW) & (page < SHADING_GRAY_BELOW)
    out[(out > SHADING_GRAY) & mid] = SHADING_GRAY
    return Image.fromarray(out, "RGB")
