"""Convolutional Block Attention Module, with the variants of the paper's ablations.

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

# The ablation axes of the paper (Tables 1-3); the first of each is CBAM as published.
CHANNEL_POOLS = ("avgmax", "avg", "max")
SPATIAL_DESCRIPTORS = ("avgmax", "conv", "none")
ARRANGEMENTS = ("channel_first", "spatial_first", "parallel")


def global_max_pool(x: torch.Tensor) -> torch.Tensor:
    """Max of (N, C, H, W) over H and W, shaped (N, C); the gradient goes to one maximum.

    ``max_pool2d`` over the whole map, as in the reference; unlike ``adaptive_max_pool2d``
    its CUDA backward is deterministic, and it keeps channels_last inputs as they are.
    """
    return F.max_pool2d(x, kernel_size=x.shape[-2:]).flatten(1)


def _check_choice(option: str, value: object, choices: tuple[str, ...], meaning: str) -> None:
    if value not in choices:
        raise ValueError(f"CBAM {option}={value!r} is not a choice: use one of {', '.join(choices)} ({meaning}).")


class ChannelGate(nn.Module):
    """CBAM channel attention: one MLP shared by the average- and max-pooled descriptors.

    ``pool`` keeps one descriptor for the ablation of Table 1: "avg" is SE's squeeze, "max" the
    max-pooled one alone.
    """

    def __init__(self, channels: int, reduction: int = 16, pool: str = "avgmax", logits_tap: bool = False) -> None:
        super().__init__()
        hidden = reduced_channels(channels, reduction)
        self.pool = pool
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels),
        )
        # In the parallel arrangement the gate hands on logits, which a viewer squashes itself.
        self.channel_map = AttentionMap("channel", activation="sigmoid" if logits_tap else None)

    def scale(self, average: torch.Tensor, maximum: torch.Tensor) -> torch.Tensor:
        """The channel weights (N, C) from the average- and max-pooled (N, C) descriptors."""
        batch = average.shape[0]
        # mlp(avg) + mlp(max) with one MLP call: the descriptors stacked along the batch dim.
        logits = self.mlp(torch.cat([average, maximum]))
        return self.channel_map((logits[:batch] + logits[batch:]).sigmoid_())

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The channel logits (N, C) of x, before the sigmoid."""
        if self.pool == "avg":
            return self.mlp(global_avg_pool(x))
        if self.pool == "max":
            return self.mlp(global_max_pool(x))
        batch = x.shape[0]
        logits = self.mlp(torch.cat([global_avg_pool(x), global_max_pool(x)]))
        return logits[:batch] + logits[batch:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool == "avgmax":
            return x * self.scale(global_avg_pool(x), global_max_pool(x))[:, :, None, None]
        return x * self.channel_map(self.logits(x).sigmoid_())[:, :, None, None]


class SpatialGate(nn.Module):
    """CBAM spatial attention: a channel descriptor -> k x k conv -> BN -> sigmoid.

    The descriptor is [max, mean] over the channels ("avgmax", the paper's), or for the
    ablation of Table 2 a learned 1x1 conv from the ``channels`` to one map ("conv").
    """

    def __init__(self, kernel_size: int = 7, descriptor: str = "avgmax", channels: int | None = None,
                 logits_tap: bool = False) -> None:
        super().__init__()
        if not isinstance(kernel_size, int) or isinstance(kernel_size, bool) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"CBAM kernel_size must be a positive odd integer, got {kernel_size!r}")
        self.descriptor = descriptor
        if descriptor == "conv":
            # The paper says only "a 1x1 convolution reducing the channel dimension into 1": a linear
            # map without bias, BN or ReLU, so that it differs from the pools only in being learned.
            self.conv_reduce = nn.Conv2d(channels, 1, 1, bias=False)
        self.conv = nn.Conv2d(2 if descriptor == "avgmax" else 1, 1, kernel_size, padding=kernel_size // 2,
                              bias=False)
        # momentum 0.01 as in the authors' BasicConv for this gate.
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)
        self.spatial_map = AttentionMap("spatial", activation="sigmoid" if logits_tap else None)

    def gate(self, pooled: torch.Tensor) -> torch.Tensor:
        """The spatial map (N, 1, H, W) from the channel-pooled [max, mean] (N, 2, H, W)."""
        # In-place sigmoid: BatchNorm's backward reads its input, not its output.
        return self.spatial_map(self.bn(self.conv(pooled)).sigmoid_())

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The descriptor the k x k conv reads: (N, 2, H, W) [max, mean], or (N, 1, H, W) from the 1x1 conv."""
        if self.descriptor == "conv":
            return self.conv_reduce(x)
        return torch.cat([x.max(dim=1, keepdim=True).values, mean_by_sum(x, (1,), keepdim=True)], dim=1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The spatial logits (N, 1, H, W) of x, before the sigmoid."""
        return self.bn(self.conv(self.pooled(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.pooled(x))


class CBAM(nn.Module):
    """CBAM: channel gate followed by spatial gate (Woo et al. 2018).

    The defaults are CBAM as published and as the authors' code builds it. The options are the
    paper's ablation axes:

    - ``channel_pool`` (Table 1): the channel gate's descriptors, "avgmax" (both, one shared MLP,
      summed), "avg" (SE's squeeze) or "max".
    - ``spatial`` (Table 2): the spatial gate's descriptor, "avgmax" ([max, mean] over the channels),
      "conv" (a learned 1x1 conv C -> 1; the paper gives no more detail, so it has no bias, BN or
      ReLU, and the k x k conv, BN and sigmoid after it are the avgmax gate's), or "none" (no
      spatial gate: the channel attention alone, as in Table 1 and the first rows of Table 2).
    - ``kernel_size`` (Table 2): the spatial gate's k x k conv.
    - ``arrangement`` (Table 3): "channel_first" (published), "spatial_first", or "parallel". The
      paper does not say how the parallel maps combine and the authors' code has no parallel
      arrangement: here both gates read x, their logits are summed (broadcast to C x H x W) and
      one sigmoid scales x, as BAM combines its parallel branches.

    Where the paper is silent otherwise, the authors' code decides: the BN of the spatial gate
    (momentum 0.01, its weight zeroed by the reference init) and the MLP's biases, for every
    variant. An option that would change nothing (``arrangement`` or ``kernel_size`` without a
    spatial gate) is an error rather than ignored.
    """

    placement = "residual"
    # "auto" | True | False: the fused Triton kernels (``fused/``) or the eager formula; not an option
    # of the block (the parameters are the same either way): ``ResidualNet(fused=...)`` sets it.
    # The kernels implement CBAM as published; the other variants always take the eager path.
    fused: bool | str = "auto"

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7, channel_pool: str = "avgmax",
                 spatial: str = "avgmax", arrangement: str = "channel_first") -> None:
        super().__init__()
        _check_choice("channel_pool", channel_pool, CHANNEL_POOLS,
                      "the channel gate's descriptors: average and max pool, average pool (SE's), max pool")
        _check_choice("spatial", spatial, SPATIAL_DESCRIPTORS,
                      "the spatial gate's descriptor: [max, mean] over the channels, a learned 1x1 conv, or no "
                      "spatial gate")
        _check_choice("arrangement", arrangement, ARRANGEMENTS,
                      "the channel gate first, the spatial gate first, or both on the input with their logits "
                      "summed")
        if spatial == "none" and (arrangement != "channel_first" or kernel_size != 7):
            changed = f"arrangement={arrangement!r}" if arrangement != "channel_first" else f"kernel_size={kernel_size!r}"
            raise ValueError(f"CBAM {changed} needs a spatial gate, and spatial='none' has none: the block is the "
                             f"channel gate alone. Leave {changed.split('=')[0]} at its default, or choose "
                             f"spatial='avgmax' or 'conv'.")
        self.arrangement = arrangement
        parallel = arrangement == "parallel"
        self.channel_gate = ChannelGate(channels, reduction, channel_pool, logits_tap=parallel)
        self.spatial_gate = (None if spatial == "none"
                             else SpatialGate(kernel_size, spatial, channels, logits_tap=parallel))
        # Only CBAM as published has fused kernels (see ``fused/``).
        self.fusable = (channel_pool, spatial, arrangement) == (CHANNEL_POOLS[0], SPATIAL_DESCRIPTORS[0],
                                                                ARRANGEMENTS[0])

    def init_weights(self, scheme: str) -> None:
        if scheme == "reference":
            name_rule_init_(self.named_parameters())
            # The reference zeroes the spatial gate's BN weight: every gate starts at sigmoid(0) = 0.5.
            if self.spatial_gate is not None:
                nn.init.zeros_(self.spatial_gate.bn.weight)
        elif scheme == "torchvision":
            torchvision_rule_init_(self.modules())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fusable and use_fused(self.fused, x):
            return cbam_gates(x, self)
        if self.spatial_gate is None:
            return self.channel_gate(x)
        if self.arrangement == "channel_first":
            return self.spatial_gate(self.channel_gate(x))
        if self.arrangement == "spatial_first":
            return self.channel_gate(self.spatial_gate(x))
        channel = self.channel_gate.channel_map(self.channel_gate.logits(x))[:, :, None, None]
        spatial = self.spatial_gate.spatial_map(self.spatial_gate.logits(x))
        # In-place sigmoid on the fresh full-size sum: an addition's backward does not read its output.
        return x * (channel + spatial).sigmoid_()
