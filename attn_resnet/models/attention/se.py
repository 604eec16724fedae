"""Squeeze-and-Excitation channel attention.

Hu, Shen and Sun, "Squeeze-and-Excitation Networks", CVPR 2018.
"""

from __future__ import annotations

import torch
from torch import nn


def reduced_channels(channels: int, reduction: int) -> int:
    """Hidden width of a bottleneck MLP; the reference code uses plain integer division."""
    if reduction < 1:
        raise ValueError(f"reduction must be a positive integer, got {reduction!r}")
    if channels // reduction < 1:
        raise ValueError(
            f"reduction={reduction} leaves no hidden units for {channels} channels; "
            f"use reduction <= {channels}"
        )
    return channels // reduction


class SE(nn.Module):
    """Squeeze-and-Excitation: global average pool -> MLP -> sigmoid channel scale (Hu et al. 2018)."""

    placement = "block"

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = reduced_channels(channels, reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = x.mean(dim=(2, 3))
        scale = torch.sigmoid(self.fc2(self.relu(self.fc1(squeezed))))
        return x * scale[:, :, None, None]
