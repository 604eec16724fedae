"""Convolutional Block Attention Module.

Woo, Park, Lee and Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018.
"""

from __future__ import annotations

import torch
from torch import nn

from .se import reduced_channels


class ChannelGate(nn.Module):
    """CBAM channel attention: one MLP shared by the average- and max-pooled descriptors."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = reduced_channels(channels, reduction)
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3)))
        return x * torch.sigmoid(logits)[:, :, None, None]


class SpatialGate(nn.Module):
    """CBAM spatial attention: [max, mean] over channels -> k x k conv -> BN -> sigmoid."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"CBAM kernel_size must be a positive odd integer, got {kernel_size!r}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        # momentum 0.01 as in the authors' BasicConv for this gate.
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)

    def reference_init_(self) -> None:
        # The reference zeroes this BN's weight, so every gate starts at sigmoid(0) = 0.5.
        nn.init.zeros_(self.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.bn(self.conv(pooled)))


class CBAM(nn.Module):
    """CBAM: channel gate followed by spatial gate (Woo et al. 2018)."""

    placement = "block"

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        self.channel_gate = ChannelGate(channels, reduction)
        self.spatial_gate = SpatialGate(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial_gate(self.channel_gate(x))
