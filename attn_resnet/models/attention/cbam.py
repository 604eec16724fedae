"""Convolutional Block Attention Module.

Woo, Park, Lee and Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018.

Written for speed without changing the formula (tests/test_fast_blocks.py holds the plain
formula and checks outputs and gradients against it): the two pooled descriptors go
through the shared MLP in one call, and the max pools keep the index of the maximum, as
the reference's ``max_pool2d`` and ``torch.max`` do, so that their backward is a scatter
rather than the several full-size passes of ``amax``'s backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import AttentionMap, name_rule_init_, torchvision_rule_init_
from .fused import cbam_gates, use_fused
from .se import global_avg_pool, mean_by_sum, reduced_channels


def global_max_pool(x: torch.Tensor) -> torch.Tensor:
    """Max of (N, C, H, W) over H and W, shaped (N, C); the gradient goes to one maximum.

    ``max_pool2d`` over the whole map, as in the reference; unlike ``adaptive_max_pool2d``
    its CUDA backward is deterministic, and it keeps channels_last inputs as they are.
    """
    return F.max_pool2d(x, kernel_size=x.shape[-2:]).flatten(1)


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
        self.channel_map = AttentionMap("channel")

    def scale(self, average: torch.Tensor, maximum: torch.Tensor) -> torch.Tensor:
        """The channel weights (N, C) from the average- and max-pooled (N, C) descriptors."""
        batch = average.shape[0]
        # mlp(avg) + mlp(max) with one MLP call: the descriptors stacked along the batch dim.
        logits = self.mlp(torch.cat([average, maximum]))
        return self.channel_map((logits[:batch] + logits[batch:]).sigmoid_())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale(global_avg_pool(x), global_max_pool(x))[:, :, None, None]


class SpatialGate(nn.Module):
    """CBAM spatial attention: [max, mean] over channels -> k x k conv -> BN -> sigmoid."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"CBAM kernel_size must be a positive odd integer, got {kernel_size!r}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        # momentum 0.01 as in the authors' BasicConv for this gate.
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)
        self.spatial_map = AttentionMap("spatial")

    def gate(self, pooled: torch.Tensor) -> torch.Tensor:
        """The spatial map (N, 1, H, W) from the channel-pooled [max, mean] (N, 2, H, W)."""
        # In-place sigmoid: BatchNorm's backward reads its input, not its output.
        return self.spatial_map(self.bn(self.conv(pooled)).sigmoid_())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.max(dim=1, keepdim=True).values, mean_by_sum(x, (1,), keepdim=True)], dim=1)
        return x * self.gate(pooled)


class CBAM(nn.Module):
    """CBAM: channel gate followed by spatial gate (Woo et al. 2018)."""

    placement = "residual"
    # "auto" | True | False: the fused Triton kernels (``fused/``) or the eager formula; not an option
    # of the block (the parameters are the same either way): ``ResidualNet(fused=...)`` sets it.
    fused: bool | str = "auto"

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        self.channel_gate = ChannelGate(channels, reduction)
        self.spatial_gate = SpatialGate(kernel_size)

    def init_weights(self, scheme: str) -> None:
        if scheme == "reference":
            name_rule_init_(self.named_parameters())
            # The reference zeroes the spatial gate's BN weight: every gate starts at sigmoid(0) = 0.5.
            nn.init.zeros_(self.spatial_gate.bn.weight)
        elif scheme == "torchvision":
            torchvision_rule_init_(self.modules())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if use_fused(self.fused, x):
            return cbam_gates(x, self)
        return self.spatial_gate(self.channel_gate(x))
