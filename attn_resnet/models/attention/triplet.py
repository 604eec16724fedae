"""Triplet attention.

Misra, Nalamada, Arasanipalai and Hou, "Rotate to Attend: Convolutional Triplet Attention
Module", WACV 2021.

Written without the reference's full-size permutes: each branch's Z-pool reduces the input
over one dim directly, and the three gates, broadcast back to the input's layout, are
averaged before one multiplication (x times the mean gate is the mean of the gated inputs).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import AttentionMap
from .se import mean_by_sum


def z_pool(x: torch.Tensor, dim: int) -> torch.Tensor:
    """[max, mean] of (N, C, H, W) over ``dim``, stacked as the two channels of a (N, 2, ., .) map."""
    return torch.stack([x.max(dim=dim).values, mean_by_sum(x, (dim,))], dim=1)


class ZPoolGate(nn.Module):
    """One triplet branch on a Z-pooled map: k x k conv 2 -> 1 (no bias) -> BN, giving the gate's logit."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)  # the authors' BasicConv

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(pooled))


class Triplet(nn.Module):
    """Triplet attention: gates over the (C, W), (C, H) and (H, W) planes, averaged (Misra et al. 2021).

    ``no_spatial=True`` is the paper's variant without the (H, W) branch (the average of two).
    """

    placement = "residual"

    def __init__(self, channels: int, kernel_size: int = 7, no_spatial: bool = False) -> None:
        super().__init__()
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"Triplet kernel_size must be a positive odd integer, got {kernel_size!r}")
        if not isinstance(no_spatial, bool):
            raise ValueError(f"Triplet no_spatial must be true or false, got {no_spatial!r}")
        self.no_spatial = no_spatial
        self.cw = ZPoolGate(kernel_size)
        self.hc = ZPoolGate(kernel_size)
        self.hw = None if no_spatial else ZPoolGate(kernel_size)
        self.spatial_map = AttentionMap("spatial", activation="sigmoid")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (C, W) branch: H is the pooled "channel"; the (N, 1, C, W) gate is (N, C, 1, W) on x.
        cw = self.cw(z_pool(x, 2)).transpose(1, 2)
        # (C, H) branch: W is the pooled "channel", on the reference's (H, C) plane; (N, C, H, 1) on x.
        hc = self.hc(z_pool(x, 3).transpose(2, 3)).permute(0, 3, 2, 1)
        if self.hw is None:
            hc = self.spatial_map(hc)
        weight = 1 / (2 if self.hw is None else 3)
        # The average taken on the small gates; their broadcast sum is the one full-size map.
        gates = cw.sigmoid() * weight + hc.sigmoid() * weight
        if self.hw is not None:
            hw = self.spatial_map(self.hw(z_pool(x, 1)))  # (N, 1, H, W)
            gates.add_(hw.sigmoid() * weight)  # in place: an addition's backward does not read its output
        return x * gates
