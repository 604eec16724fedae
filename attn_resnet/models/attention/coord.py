"""Coordinate Attention.

Hou, Zhou and Feng, "Coordinate Attention for Efficient Mobile Network Design", CVPR 2021.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import AttentionMap
from .se import mean_by_sum

MIN_HIDDEN = 8  # the authors' floor on the shared conv's width: mip = max(8, C // reduction)


class CoordAtt(nn.Module):
    """Coordinate attention: pools along W and along H -> shared 1x1 conv -> x * a_h * a_w (Hou et al. 2021)."""

    placement = "residual"

    def __init__(self, channels: int, reduction: int = 32) -> None:
        super().__init__()
        if isinstance(reduction, bool) or not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f"CoordAtt reduction must be a positive integer (32 in the paper), got {reduction!r}")
        hidden = max(MIN_HIDDEN, channels // reduction)
        self.conv1 = nn.Conv2d(channels, hidden, 1)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.act = nn.Hardswish()  # h-swish; not in place, as its backward reads its input
        self.conv_h = nn.Conv2d(hidden, channels, 1)
        self.conv_w = nn.Conv2d(hidden, channels, 1)
        self.height_map = AttentionMap("spatial")
        self.width_map = AttentionMap("spatial")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pooled_h = mean_by_sum(x, (3,), keepdim=True)  # (N, C, H, 1)
        pooled_w = mean_by_sum(x, (2,), keepdim=True)  # (N, C, 1, W)
        # Both directions through the shared conv and BN in one call, stacked along the spatial dim.
        y = torch.cat([pooled_h, pooled_w.transpose(2, 3)], dim=2)  # (N, C, H + W, 1)
        y = self.act(self.bn1(self.conv1(y)))
        y_h, y_w = torch.split(y, [height, width], dim=2)
        # In-place sigmoid: the conv's backward does not read its output.
        a_h = self.height_map(self.conv_h(y_h).sigmoid_())  # (N, C, H, 1)
        a_w = self.width_map(self.conv_w(y_w.transpose(2, 3)).sigmoid_())  # (N, C, 1, W)
        return x * a_h * a_w
