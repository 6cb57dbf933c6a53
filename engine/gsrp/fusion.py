"""GSRP fusion network (paper 3.3): five ResNet branches fusing VAE-encoder features of the
colored and the gray page, one per level; names match the official MultiResNetModel file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from engine.io.checkpoints import find_weights, load_strict
from engine.io.weight_files import read_state_dict

# Channels of the SD VAE encoder features GSRP uses (conv_in, down blocks 0-3).
SD_VAE_FEATURE_CHANNELS = (128, 128, 256, 512, 512)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv+BN, projection shortcut when channels change."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class FusionBranch(nn.Module):
    """Four basic blocks fusing one level: [color, gray] features -> decoder injection."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.block1 = BasicBlock(in_channels, out_channels)
        self.block2 = BasicBlock(out_channels, out_channels)
        self.block3 = BasicBlock(out_channels, out_channels)
        self.block4 = BasicBlock(out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block4(self.block3(self.block2(self.block1(x))))


def vae_feature_channels(vae_config) -> list[int]:
    """Channels of the 5 encoder features: conv_in output, then each down block's output."""
    channels = list(vae_config.block_out_channels)
    return [channels[0], *channels]


def branch_out_channels(channels: Sequence[int]) -> list[int]:
    """Output channels per level: the feature channel list shifted by two, capped at the last."""
    return [channels[min(i + 2, len(channels) - 1)] for i in range(len(channels))]


class FusionNet(nn.Module):
    """The official `MultiHiddenResNetModel`: `two_layer_resnets.0-4`."""

    def __init__(self, channels: Sequence[int] = SD_VAE_FEATURE_CHANNELS) -> None:
        super().__init__()
        self.channels = list(channels)
        outs = branch_out_channels(channels)
        self.two_layer_resnets = nn.ModuleList(
            FusionBranch(2 * c, o) for c, o in zip(channels, outs)
        )

    def forward(self, color: Sequence[torch.Tensor], gray: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [
            branch(torch.cat([c, g], dim=1))
            for branch, c, g in zip(self.two_layer_resnets, color, gray)
        ]


FUSION_WEIGHTS = "MultiResNetModel"


def load_fusion(graysd: Path, vae_config: Any) -> torch.nn.Module:
    """The GSRP fusion network sized for the VAE, every key checked."""
    fusion = FusionNet(vae_feature_channels(vae_config))
    weights = find_weights(graysd, FUSION_WEIGHTS)
    load_strict(fusion, read_state_dict(weights), f"GSRP checkpoint {weights} (sized for the SD1.5 VAE config)")
    return fusion
