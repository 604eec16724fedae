"""Pyramid Squeeze Attention.

Zhang, Zu, Lu, Zou and Meng, "EPSANet: An Efficient Pyramid Squeeze Attention Block on
Convolutional Neural Network", ACCV 2022 (arXiv 2021).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import AttentionMap
from .se import global_avg_pool


def _positive_ints(option: str, value: Sequence[int]) -> tuple[int, ...]:
    """``value`` (a list or tuple, as Hydra or Python gives it) as a non-empty tuple of positive ints."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"PSA {option} must be a non-empty list of positive integers, got {value!r}")
    values = tuple(value)
    if not all(isinstance(item, int) and not isinstance(item, bool) and item >= 1 for item in values):
        raise ValueError(f"PSA {option} must be a non-empty list of positive integers, got {value!r}")
    return values


class PSA(nn.Module):
    """Pyramid Squeeze Attention: a conv per kernel size, SE weights softmaxed across scales (Zhang et al. 2022).

    Scale i is a conv channels -> channels / S (S = len(kernels)) with ``kernels[i]`` and
    ``conv_groups[i]``; one SE weight module (GAP -> Linear -> ReLU -> Linear -> sigmoid),
    shared by the scales as in the official code, weighs each; a softmax across the scales
    per channel mixes them, and the output is the concatenation of the weighted scales.
    """

    placement = "residual"

    def __init__(
        self,
        channels: int,
        kernels: Sequence[int] = (3, 5, 7, 9),
        conv_groups: Sequence[int] = (1, 4, 8, 16),
        reduction: int = 16,
    ) -> None:
        super().__init__()
        kernels, conv_groups = _positive_ints("kernels", kernels), _positive_ints("conv_groups", conv_groups)
        if any(kernel % 2 == 0 for kernel in kernels):
            raise ValueError(f"PSA kernels must be odd, so that padding k // 2 keeps the size; got {kernels}")
        if len(conv_groups) != len(kernels):
            raise ValueError(f"PSA needs one conv_groups entry per kernel; got kernels={kernels}, "
                             f"conv_groups={conv_groups}")
        if not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f"PSA reduction must be a positive integer, got {reduction!r}")
        scales = len(kernels)
        if channels % scales:
            raise ValueError(f"PSA needs channels divisible by the number of kernels; got channels={channels}, "
                             f"{scales} kernels")
        split = channels // scales
        for groups in conv_groups:
            if channels % groups or split % groups:
                raise ValueError(f"PSA conv_groups entry {groups} must divide both channels={channels} and "
                                 f"channels / {scales} = {split}")
        self.convs = nn.ModuleList(
            nn.Conv2d(channels, split, kernel, padding=kernel // 2, groups=groups, bias=False)
            for kernel, groups in zip(kernels, conv_groups)
        )
        hidden = max(split // reduction, 1)
        self.se = nn.Sequential(nn.Linear(split, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, split))
        self.channel_map = AttentionMap("channel")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [conv(x) for conv in self.convs]
        # The scales' descriptors stacked (N, S, C/S): one call of the shared SE for all.
        pooled = torch.stack([global_avg_pool(feature) for feature in features], dim=1)
        weights = self.se(pooled).sigmoid().softmax(dim=1)
        weights = self.channel_map(weights.flatten(1))  # (N, C), in the concatenation's order
        return torch.cat(features, dim=1) * weights[:, :, None, None]
