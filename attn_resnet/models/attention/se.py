"""Squeeze-and-Excitation channel attention.

Hu, Shen and Sun, "Squeeze-and-Excitation Networks", CVPR 2018.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import AttentionMap, name_rule_init_
from .fused import se_gate, use_fused


def reduced_channels(channels: int, reduction: int) -> int:
    """Hidden width of a bottleneck MLP; the reference code uses plain integer division."""
    if reduction < 1:
        raise ValueError(f"reduction must be a positive integer, got {reduction!r}")
    if channels // reduction < 1:
        raise ValueError(
            f"reduction={reduction} leaves no hidden units for {channels} channels; "
            f"use reduction <= {channels}"
        )
    return channels // reduction


def mean_by_sum(x: torch.Tensor, dim: tuple[int, ...], keepdim: bool = False) -> torch.Tensor:
    """``x.mean(dim, keepdim)`` written as a sum times 1/count.

    The same value, but the backward of a sum is a broadcast view of the small gradient,
    where the backward of ``mean`` writes a full-size divided copy that autograd then adds
    to the input's other gradients. A float16 sum is taken in float32, as ``mean`` does,
    so that a large map cannot overflow float16's range.
    """
    count = 1
    for axis in dim:
        count *= x.shape[axis]
    if x.dtype == torch.float16:
        return (x.sum(dim=dim, keepdim=keepdim, dtype=torch.float32) * (1.0 / count)).to(x.dtype)
    return x.sum(dim=dim, keepdim=keepdim) * (1.0 / count)


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """Mean of (N, C, H, W) over H and W, shaped (N, C)."""
    return mean_by_sum(x, (2, 3))


class SE(nn.Module):
    """Squeeze-and-Excitation: global average pool -> MLP -> sigmoid channel scale (Hu et al. 2018)."""

    placement = "residual"
    # "auto" | True | False: the fused Triton kernels (``fused/``) or the eager formula; not an option
    # of the block (the parameters are the same either way): ``ResidualNet(fused=...)`` sets it.
    fused: bool | str = "auto"

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = reduced_channels(channels, reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels)
        self.channel_map = AttentionMap("channel")

    def init_weights(self, scheme: str) -> None:
        if scheme == "reference":  # the authors' rule: its Linear biases -> 0, weights as constructed
            name_rule_init_(self.named_parameters())

    def scale(self, squeezed: torch.Tensor) -> torch.Tensor:
        """The channel weights (N, C) from the squeezed (N, C) descriptor."""
        # In-place sigmoid: the Linear's backward does not read its output.
        return self.channel_map(self.fc2(self.relu(self.fc1(squeezed))).sigmoid_())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if use_fused(self.fused, x):
            return se_gate(x, self)
        return x * self.scale(global_avg_pool(x))[:, :, None, None]
