"""Global Context block.

Cao, Xu, Lin, Wei and Hu, "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and
Beyond", ICCV Workshops 2019.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import AttentionMap
from .se import reduced_channels

FUSION_CHOICES = ("add", "mul")


class GC(nn.Module):
    """GC: softmax-weighted global context -> bottleneck transform -> added to (or gating) x (Cao et al. 2019)."""

    placement = "residual"

    def __init__(self, channels: int, reduction: int = 16, fusion: str = "add") -> None:
        super().__init__()
        if fusion not in FUSION_CHOICES:
            raise ValueError(f"GC fusion must be one of {FUSION_CHOICES}, got {fusion!r}")
        self.fusion = fusion
        hidden = reduced_channels(channels, reduction)
        self.conv_mask = nn.Conv2d(channels, 1, 1)
        self.transform = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.LayerNorm([hidden, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
        )
        self.spatial_map = AttentionMap("spatial")
        self.channel_map = AttentionMap("channel") if fusion == "mul" else None
        # The authors' init: the context conv kaiming normal (fan_in), and the transform's last
        # conv zero, so that "add" starts as the identity and "mul" as a uniform 0.5 gate.
        nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.conv_mask.bias)
        nn.init.zeros_(self.transform[-1].weight)
        nn.init.zeros_(self.transform[-1].bias)

    def extra_repr(self) -> str:
        return f"fusion={self.fusion}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.conv_mask(x)  # (N, 1, H, W)
        weights = self.spatial_map(logits.flatten(2).softmax(-1).view_as(logits))
        # Context = sum over positions of weight * x, one batched matmul: (N, C, HW) @ (N, HW, 1).
        context = torch.bmm(x.flatten(2), weights.flatten(2).transpose(1, 2))[..., None]  # (N, C, 1, 1)
        term = self.transform(context)
        if self.channel_map is None:
            return x + term
        # In-place sigmoid: the conv's backward does not read its output.
        return x * self.channel_map(term.sigmoid_())
