"""Efficient Channel Attention.

Wang, Wu, Zhu, Li, Zuo and Hu, "ECA-Net: Efficient Channel Attention for Deep Convolutional
Neural Networks", CVPR 2020.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import AttentionMap
from .se import global_avg_pool


def adaptive_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """The paper's k = |log2(C) / gamma + b / gamma| taken to an odd integer, as the authors' code does."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class ECA(nn.Module):
    """ECA: global average pool -> 1D conv across channels -> sigmoid channel scale (Wang et al. 2020)."""

    placement = "residual"

    def __init__(self, channels: int, k_size: int | None = None, gamma: int = 2, b: int = 1) -> None:
        super().__init__()
        if isinstance(gamma, bool) or not isinstance(gamma, int) or gamma < 1:
            raise ValueError(f"ECA gamma must be a positive integer (2 in the paper), got {gamma!r}")
        if isinstance(b, bool) or not isinstance(b, int):
            raise ValueError(f"ECA b must be an integer (1 in the paper), got {b!r}")
        if k_size is None:
            k_size = adaptive_kernel_size(channels, gamma, b)
        elif isinstance(k_size, bool) or not isinstance(k_size, int) or k_size < 1 or k_size % 2 == 0:
            # An even kernel cannot be padded symmetrically, so channel i would not be centred on itself.
            raise ValueError(
                f"ECA k_size must be a positive odd integer (or None for the paper's adaptive size), got {k_size!r}"
            )
        self.k_size = k_size
        self.conv = nn.Conv1d(1, 1, k_size, padding=k_size // 2, bias=False)
        self.channel_map = AttentionMap("channel")

    def extra_repr(self) -> str:
        return f"k_size={self.k_size}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The channels are the sequence of a one-channel 1D signal: (N, C) -> (N, 1, C).
        logits = self.conv(global_avg_pool(x)[:, None, :])
        # In-place sigmoid: the conv's backward does not read its output.
        scale = self.channel_map(logits.sigmoid_().flatten(1))
        return x * scale[:, :, None, None]
