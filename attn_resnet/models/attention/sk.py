"""Selective Kernel attention.

Li, Wang, Hu and Yang, "Selective Kernel Networks", CVPR 2019.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import AttentionMap
from .se import global_avg_pool


class SK(nn.Module):
    """Selective Kernel: dilated grouped 3x3 branches mixed by a per-channel softmax (Li et al. 2019).

    Branch i is a 3x3 conv with dilation i + 1 -> BN -> ReLU (the paper's 5x5 branch as a
    dilated 3x3, as the paper suggests); s = GAP(sum of branches) -> Linear -> BN -> ReLU to
    max(channels // reduction, min_dim) units -> one Linear per branch -> softmax over branches.
    """

    placement = "residual"

    def __init__(
        self, channels: int, branches: int = 2, groups: int = 32, reduction: int = 16, min_dim: int = 32
    ) -> None:
        super().__init__()
        for option, value in (("branches", branches), ("groups", groups), ("reduction", reduction),
                              ("min_dim", min_dim)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"SK {option} must be a positive integer, got {value!r}")
        if channels % groups:
            raise ValueError(f"SK groups={groups} must divide channels={channels}; choose a divisor of {channels}")
        self.branches = branches
        self.convs = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, groups=groups, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            )
            for dilation in range(1, branches + 1)
        )
        hidden = max(channels // reduction, min_dim)
        self.fc = nn.Linear(channels, hidden, bias=False)  # BN follows: a bias would cancel out
        self.bn = nn.BatchNorm1d(hidden)
        self.relu = nn.ReLU(inplace=True)
        # The paper's per-branch matrices (A, B, ...) without bias, as one Linear: one matmul for all.
        self.select = nn.Linear(hidden, branches * channels, bias=False)
        self.channel_map = AttentionMap("channel")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [conv(x) for conv in self.convs]
        # GAP is linear: the sum of the branches' pools is GAP(U) without a full-size sum U.
        pooled = global_avg_pool(features[0])
        for feature in features[1:]:
            pooled = pooled + global_avg_pool(feature)
        logits = self.select(self.relu(self.bn(self.fc(pooled))))
        weights = logits.unflatten(1, (self.branches, -1)).softmax(dim=1)  # (N, branches, C)
        out = features[0] * self.channel_map(weights[:, 0])[:, :, None, None]
        for index in range(1, self.branches):
            out = torch.addcmul(out, features[index], weights[:, index, :, None, None])
        return out
