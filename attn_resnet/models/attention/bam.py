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

COMBINE_CHOICES = ("product", "sum", "max")
# Which branches the block has (the paper's ablation of each branch alone).
BRANCH_CHOICES = ("both", "channel", "spatial")


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
    ``combine="sum"`` is the formula printed in the paper; ``combine="max"`` is the element-wise
    maximum, the third way of joining the branches that the paper's ablation compares (its
    published ranking: sum ahead of product). ``branches`` keeps the channel branch Mc or the
    spatial branch Ms alone (x * (1 + sigmoid(M(x)))), as the ablation of each branch does;
    the paper gives no other detail of those variants, so the branch is the full block's. An
    option that would change nothing (``combine`` with one branch, ``dilation`` without the
    spatial one) is an error rather than ignored.
    """

    placement = "stage"

    def __init__(
        self, channels: int, reduction: int = 16, combine: str = "product", dilation: int = 4,
        branches: str = "both",
    ) -> None:
        super().__init__()
        if combine not in COMBINE_CHOICES:
            raise ValueError(f"BAM combine={combine!r} is not a choice: use one of {', '.join(COMBINE_CHOICES)} "
                             f"(how the channel and spatial logits join before the sigmoid: their product, as the "
                             f"authors' code; their sum, as the paper's formula; or their element-wise maximum).")
        if branches not in BRANCH_CHOICES:
            raise ValueError(f"BAM branches={branches!r} is not a choice: use one of {', '.join(BRANCH_CHOICES)} "
                             f"(both branches, the channel branch alone, or the spatial branch alone).")
        unused = ([f"combine={combine!r}"] if branches != "both" and combine != "product" else []) + (
            [f"dilation={dilation!r}"] if branches == "channel" and dilation != 4 else [])
        if unused:
            raise ValueError(f"BAM {unused[0]} has no effect with branches={branches!r}: the block has only its "
                             f"{branches} branch. Leave {unused[0].split('=')[0]} at its default, or use "
                             f"branches='both'.")
        self.combine = combine
        self.branches = branches
        self.channel_gate = ChannelGate(channels, reduction) if branches != "spatial" else None
        self.spatial_gate = SpatialGate(channels, reduction, dilation) if branches != "channel" else None
        self.channel_map = AttentionMap("channel", activation="sigmoid") if self.channel_gate else None
        self.spatial_map = AttentionMap("spatial", activation="sigmoid") if self.spatial_gate else None

    def init_weights(self, scheme: str) -> None:
        if scheme == "reference":
            name_rule_init_(self.named_parameters())
        elif scheme == "torchvision":
            torchvision_rule_init_(self.modules())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channel_gate is not None and self.training and x.shape[0] == 1:
            raise ValueError(
                "BAM's channel gate uses BatchNorm1d, which cannot compute batch statistics from a "
                "single sample in training mode. Use a batch size of at least 2 (and drop_last=True "
                "in the data loader so the last batch is never 1), or call model.eval() for inference."
            )
        if self.spatial_gate is None:
            logits = self.channel_map(self.channel_gate(x))
        elif self.channel_gate is None:
            logits = self.spatial_map(self.spatial_gate(x))
        else:
            channel, spatial = self.channel_map(self.channel_gate(x)), self.spatial_map(self.spatial_gate(x))
            if self.combine == "product":
                logits = channel * spatial
            elif self.combine == "sum":
                logits = channel + spatial
            else:
                logits = torch.maximum(channel, spatial)
            # In-place sigmoid on the fresh full-size logits: neither a product's nor a sum's nor a
            # maximum's backward reads its output, so this saves one full-size tensor.
            return x * (1 + logits.sigmoid_())
        # One branch: its map (N, C, 1, 1) or (N, 1, H, W) is small; the product broadcasts it over x.
        return x * (1 + logits.sigmoid())
