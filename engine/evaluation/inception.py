"""The FID Inception-v3 network (TF graph 2015-12-05, pool3 features), built lazily without torchvision."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

# The network every common FID tool uses (pytorch-fid, torch-fidelity, torchmetrics): the
# TensorFlow Inception graph of 2015-12-05 ported to PyTorch. Its state-dict keys follow
# torchvision's Inception3 naming (Conv2d_1a_3x3.conv.weight, Mixed_5b.branch1x1.bn.bias, ...)
# and include the 1008-way `fc` layer, which FID does not use but a strict load expects.
INPUT_SIZE = 299
FEATURE_DIM = 2048


def resize_like_tf1(images: "torch.Tensor", size: int) -> "torch.Tensor":
    """Bilinear resize of (N, C, H, W) floats as TensorFlow 1.x `resize_bilinear` with
    align_corners=False did: output pixel i samples input coordinate i * in/out (no half-pixel
    offset), between floor and min(floor + 1, in - 1). FID reference statistics were made so."""
    import torch

    def axis(length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        coords = torch.arange(size, dtype=images.dtype, device=images.device) * (length / size)
        low = coords.long().clamp_max(length - 1)
        high = (low + 1).clamp_max(length - 1)
        return low, high, coords - low.to(images.dtype)

    y0, y1, fy = axis(images.shape[2])
    x0, x1, fx = axis(images.shape[3])
    top, bottom = images[:, :, y0, :], images[:, :, y1, :]
    # Along x first, then y: the order TF used, so results agree to the last bit on the CPU.
    upper = top[:, :, :, x0] + (top[:, :, :, x1] - top[:, :, :, x0]) * fx.view(1, 1, 1, -1)
    lower = bottom[:, :, :, x0] + (bottom[:, :, :, x1] - bottom[:, :, :, x0]) * fx.view(1, 1, 1, -1)
    return upper + (lower - upper) * fy.view(1, 1, -1, 1)


@functools.lru_cache(maxsize=None)
def fid_inception_class():
    """The network class (defined on first use so importing this module needs no torch)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Conv(nn.Module):
        """Convolution without bias, batch norm (eps 1e-3), ReLU."""

        def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0) -> None:
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
            self.bn = nn.BatchNorm2d(cout, eps=0.001)

        def forward(self, x):
            return F.relu(self.bn(self.conv(x)))

    def avg_pool(x):  # TF's average pool ignores the zero padding
        return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)

    def max_pool(x):
        return F.max_pool2d(x, 3, stride=2)

    class BlockA(nn.Module):
        def __init__(self, cin: int, pool_features: int) -> None:
            super().__init__()
            self.branch1x1 = Conv(cin, 64, 1)
            self.branch5x5_1 = Conv(cin, 48, 1)
            self.branch5x5_2 = Conv(48, 64, 5, padding=2)
            self.branch3x3dbl_1 = Conv(cin, 64, 1)
            self.branch3x3dbl_2 = Conv(64, 96, 3, padding=1)
            self.branch3x3dbl_3 = Conv(96, 96, 3, padding=1)
            self.branch_pool = Conv(cin, pool_features, 1)

        def forward(self, x):
            return torch.cat([
                self.branch1x1(x),
                self.branch5x5_2(self.branch5x5_1(x)),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                self.branch_pool(avg_pool(x)),
            ], 1)

    class BlockB(nn.Module):
        def __init__(self, cin: int) -> None:
            super().__init__()
            self.branch3x3 = Conv(cin, 384, 3, stride=2)
            self.branch3x3dbl_1 = Conv(cin, 64, 1)
            self.branch3x3dbl_2 = Conv(64, 96, 3, padding=1)
            self.branch3x3dbl_3 = Conv(96, 96, 3, stride=2)

        def forward(self, x):
            return torch.cat([
                self.branch3x3(x),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                max_pool(x),
            ], 1)

    class BlockC(nn.Module):
        def __init__(self, cin: int, c7: int) -> None:
            super().__init__()
            row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
            self.branch1x1 = Conv(cin, 192, 1)
            self.branch7x7_1 = Conv(cin, c7, 1)
            self.branch7x7_2 = Conv(c7, c7, **row)
            self.branch7x7_3 = Conv(c7, 192, **col)
            self.branch7x7dbl_1 = Conv(cin, c7, 1)
            self.branch7x7dbl_2 = Conv(c7, c7, **col)
            self.branch7x7dbl_3 = Conv(c7, c7, **row)
            self.branch7x7dbl_4 = Conv(c7, c7, **col)
            self.branch7x7dbl_5 = Conv(c7, 192, **row)
            self.branch_pool = Conv(cin, 192, 1)

        def forward(self, x):
            double = x
            for i in range(1, 6):
                double = getattr(self, f"branch7x7dbl_{i}")(double)
            return torch.cat([
                self.branch1x1(x),
                self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
                double,
                self.branch_pool(avg_pool(x)),
            ], 1)

    class BlockD(nn.Module):
        def __init__(self, cin: int) -> None:
            super().__init__()
            self.branch3x3_1 = Conv(cin, 192, 1)
            self.branch3x3_2 = Conv(192, 320, 3, stride=2)
            self.branch7x7x3_1 = Conv(cin, 192, 1)
            self.branch7x7x3_2 = Conv(192, 192, (1, 7), padding=(0, 3))
            self.branch7x7x3_3 = Conv(192, 192, (7, 1), padding=(3, 0))
            self.branch7x7x3_4 = Conv(192, 192, 3, stride=2)

        def forward(self, x):
            seven = x
            for i in range(1, 5):
                seven = getattr(self, f"branch7x7x3_{i}")(seven)
            return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), seven, max_pool(x)], 1)

    class BlockE(nn.Module):
        """The last two blocks; the FID graph average-pools in the first, max-pools in the second."""

        def __init__(self, cin: int, pool: str) -> None:
            super().__init__()
            row, col = dict(kernel=(1, 3), padding=(0, 1)), dict(kernel=(3, 1), padding=(1, 0))
            self.pool = pool
            self.branch1x1 = Conv(cin, 320, 1)
            self.branch3x3_1 = Conv(cin, 384, 1)
            self.branch3x3_2a = Conv(384, 384, **row)
            self.branch3x3_2b = Conv(384, 384, **col)
            self.branch3x3dbl_1 = Conv(cin, 448, 1)
            self.branch3x3dbl_2 = Conv(448, 384, 3, padding=1)
            self.branch3x3dbl_3a = Conv(384, 384, **row)
            self.branch3x3dbl_3b = Conv(384, 384, **col)
            self.branch_pool = Conv(cin, 192, 1)

        def forward(self, x):
            single = self.branch3x3_1(x)
            double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            pooled = avg_pool(x) if self.pool == "avg" else F.max_pool2d(x, 3, stride=1, padding=1)
            return torch.cat([
                self.branch1x1(x),
                self.branch3x3_2a(single), self.branch3x3_2b(single),
                self.branch3x3dbl_3a(double), self.branch3x3dbl_3b(double),
                self.branch_pool(pooled),
            ], 1)

    class FidInceptionV3(nn.Module):
        """uint8 RGB (N, 3, H, W) -> (N, 2048) float32 pool3 features, in eval mode."""

        def __init__(self) -> None:
            super().__init__()
            self.Conv2d_1a_3x3 = Conv(3, 32, 3, stride=2)
            self.Conv2d_2a_3x3 = Conv(32, 32, 3)
            self.Conv2d_2b_3x3 = Conv(32, 64, 3, padding=1)
            self.Conv2d_3b_1x1 = Conv(64, 80, 1)
            self.Conv2d_4a_3x3 = Conv(80, 192, 3)
            self.Mixed_5b = BlockA(192, 32)
            self.Mixed_5c = BlockA(256, 64)
            self.Mixed_5d = BlockA(288, 64)
            self.Mixed_6a = BlockB(288)
            self.Mixed_6b = BlockC(768, 128)
            self.Mixed_6c = BlockC(768, 160)
            self.Mixed_6d = BlockC(768, 160)
            self.Mixed_6e = BlockC(768, 192)
            self.Mixed_7a = BlockD(768)
            self.Mixed_7b = BlockE(1280, "avg")
            self.Mixed_7c = BlockE(2048, "max")
            self.fc = nn.Linear(2048, 1008)  # classifier of the graph: kept for a strict load only
            self.eval()

        def forward(self, images):
            if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
                raise ValueError(f"expected uint8 images of shape (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
            x = resize_like_tf1(images.to(self.fc.weight.dtype), INPUT_SIZE)
            x = (x - 128) / 128  # the graph's input scaling of 8-bit values
            x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
            x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(max_pool(x)))
            x = max_pool(x)
            for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
                x = getattr(self, f"Mixed_{name}")(x)
            return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1).float()

        def train(self, mode: bool = True):
            return super().train(False)  # batch norm always uses the stored statistics

    return FidInceptionV3


def build_fid_inception():
    """A randomly initialised FID Inception-v3 (load the real weights with fid.load_inception)."""
    return fid_inception_class()()
