"""Bottleneck Attention Module.

Park, Woo, Lee and Kweon, "BAM: Bottleneck Attention Module", BMVC 2018.

Written for speed without changing the formula (tests/test_fast_blocks.py holds the plain
formula and checks outputs and gradients against it).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import AttentionMap, name_rule_init_, torchvision_rule_init_
from .se import global_avg_pool, reduced_channels

COMBINE_CHOICES = ("product", "sum")


class ChannelGate(nn.Module):
    """BAM channel branch Mc: global average pool -> Linear -> BN1d -> ReLU -> Linear."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = reduced_channels(channels, reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.bn(self.fc1(global_avg_pool(x)))))[:, :, None, None]


class SpatialGate(nn.Module):
    """BAM spatial branch Ms: 1x1 reduce -> two dilated 3x3 convs -> 1x1 to one map."""

    def __init__(self, channels: int, reduction: int = 16, dilation: int = 4, num_dilated: int = 2) -> None:
        super().__init__()
        hidden = reduced_channels(channels, reduction)
        self.conv_reduce = nn.Conv2d(channels, hidden, 1)
        self.bn_reduce = nn.BatchNorm2d(hidden)
        self.conv_dilated = nn.ModuleList(
            nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation) for _ in range(num_dilated)
        )
        self.bn_dilated = nn.ModuleList(nn.BatchNorm2d(hidden) for _ in range(num_dilated))
        self.conv_final = nn.Conv2d(hidden, 1, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn_reduce(self.conv_reduce(x)))
        for conv, bn in zip(self.conv_dilated, self.bn_dilated):
            x = self.relu(bn(conv(x)))
        return self.conv_final(x)


class BAM(nn.Module):
    """BAM: x * (1 + sigmoid(combine(Mc(x), Ms(x)))) at the end of a stage (Park et al. 2018).

    ``combine="product"`` is what the authors' released code and checkpoint use;
    ``combine="sum"`` is the formula printed in the paper.
    """

    placement = "stage"

    def __init__(
        self, channels: int, reduction: int = 16, combine: str = "product", dilation: int = 4
    ) -> None:
        super().__init__()
        if combine not in COMBINE_CHOICES:
            raise ValueError(f"BAM combine must be one of {COMBINE_CHOICES}, got {combine!r}")
        self.combine = combine
        self.channel_gate = ChannelGate(channels, reduction)
        self.spatial_gate = SpatialGate(channels, reduction, dilation)
        self.channel_map = AttentionMap("channel", activation="sigmoid")
        self.spatial_map = AttentionMap("spatial", activation="sigmoid")

    def init_weights(self, scheme: str) -> None:
        if scheme == "reference":
            name_rule_init_(self.named_parameters())
        elif scheme == "torchvision":
            torchvision_rule_init_(self.modules())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            raise ValueError(
                "BAM's channel gate uses BatchNorm1d, which cannot compute batch statistics from a "
                "single sample in training mode. Use a batch size of at least 2 (and drop_last=True "
                "in the data loader so the last batch is never 1), or call model.eval() for inference."
            )
        channel, spatial = self.channel_map(self.channel_gate(x)), self.spatial_map(self.spatial_gate(x))
        logits = channel * spatial if self.combine == "product" else channel + spatial
        # In-place sigmoid on the fresh full-size logits: neither a product's nor a sum's
        # backward reads its output, so this saves one full-size tensor.
        return x * (1 + logits.sigmoid_())
