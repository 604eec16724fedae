"""Shuffle Attention.

Zhang and Yang, "SA-Net: Shuffle Attention for Deep Convolutional Neural Networks", ICASSP 2021.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import AttentionMap
from .se import mean_by_sum


class SA(nn.Module):
    """Shuffle Attention: per group, a channel gate on one half, a spatial gate on the other (Zhang and Yang 2021).

    The channels split into G groups, each into two halves of K = channels / (2G): the first
    half is scaled by sigmoid(cweight * GAP + cbias), the second by sigmoid(sweight *
    GroupNorm + sbias); the halves are concatenated back and shuffled with 2 groups. The
    parameters start as in the official code (cweight = sweight = 0, cbias = sbias = 1).
    G = min(groups, channels // 2), since ResNet-18's 64-channel stages cannot take the
    paper's G = 64; channels must be divisible by 2G.
    """

    placement = "residual"

    def __init__(self, channels: int, groups: int = 64) -> None:
        super().__init__()
        if not isinstance(groups, int) or groups < 1:
            raise ValueError(f"SA groups must be a positive integer, got {groups!r}")
        self.groups = min(groups, channels // 2)
        if self.groups < 1 or channels % (2 * self.groups):
            raise ValueError(
                f"SA needs channels divisible by 2 * G with G = min(groups, channels // 2) = {self.groups}; "
                f"got channels={channels}, groups={groups}"
            )
        half = channels // (2 * self.groups)
        self.cweight = nn.Parameter(torch.zeros(1, half, 1, 1))
        self.cbias = nn.Parameter(torch.ones(1, half, 1, 1))
        self.sweight = nn.Parameter(torch.zeros(1, half, 1, 1))
        self.sbias = nn.Parameter(torch.ones(1, half, 1, 1))
        self.gn = nn.GroupNorm(half, half)
        self.spatial_map = AttentionMap("spatial", activation="sigmoid")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        halves = x.unflatten(1, (self.groups, 2, -1))  # (N, G, 2, K, H, W), a view
        x_channel, x_spatial = halves[:, :, 0], halves[:, :, 1]
        # The (1, K, 1, 1) parameters broadcast over (N, G, K, 1, 1): shared by every group.
        channel_gate = torch.addcmul(self.cbias, self.cweight, mean_by_sum(x_channel, (3, 4), keepdim=True))
        normalized = self.gn(x_spatial.reshape(n * self.groups, -1, h, w))
        spatial_logits = self.spatial_map(torch.addcmul(self.sbias, self.sweight, normalized).reshape(n, -1, h, w))
        channel_out = x_channel * channel_gate.sigmoid()  # (N, G, K, H, W)
        spatial_out = x_spatial * spatial_logits.sigmoid().view_as(x_spatial)
        # The concatenation and the channel shuffle written as copies into an output laid out like x
        # (channels_last stays channels_last). The shuffle with 2 groups puts channel a * C/2 + j of
        # the concatenation (which keeps the input's channel order) at output channel 2j + a.
        out = torch.empty_like(x, dtype=torch.promote_types(channel_out.dtype, spatial_out.dtype))
        if self.groups % 2 == 0:
            # Input channel (a * G/2 + g, half, k) goes to output (g, half, k, a): one copy per half.
            slots = out.unflatten(1, (self.groups // 2, 2, -1, 2))
            for half, gated in enumerate((channel_out, spatial_out)):
                slots[:, :, half].copy_(gated.unflatten(1, (2, -1)).permute(0, 2, 3, 1, 4, 5))
            return out
        # An odd G splits a group between the two shuffle groups: concatenate first, then shuffle.
        concatenated = torch.empty_like(out)
        for half, gated in enumerate((channel_out, spatial_out)):
            concatenated.unflatten(1, (self.groups, 2, -1))[:, :, half].copy_(gated)
        out.unflatten(1, (-1, 2)).copy_(concatenated.unflatten(1, (2, -1)).transpose(1, 2))
        return out
