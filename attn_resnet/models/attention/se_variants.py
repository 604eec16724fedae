"""Squeeze-and-Excitation with the ablation paper's choices of squeeze, excitation and reduction.

Hu, Shen, Sun, Albanie and Wu, "Squeeze-and-Excitation Networks", TPAMI 2019 (CVPR 2018).

The ablations of the paper's Section 6: reduction ratio r in {2, 4, 8, 16, 32}, squeeze by
average or max pooling, excitation by sigmoid, ReLU or tanh. With its defaults the block is ``SE``.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import AttentionMap, name_rule_init_
from .cbam import global_max_pool
from .se import global_avg_pool, reduced_channels

SQUEEZE_CHOICES = ("avg", "max")
EXCITATION_CHOICES = ("sigmoid", "relu", "tanh")


class SEVar(nn.Module):
    """SE ablation: avg or max pool -> MLP -> sigmoid, ReLU or tanh channel scale (Hu et al. 2019)."""

    placement = "residual"

    def __init__(self, channels: int, reduction: int = 16, squeeze: str = "avg", excitation: str = "sigmoid") -> None:
        super().__init__()
        if squeeze not in SQUEEZE_CHOICES:
            raise ValueError(f"SEVar squeeze must be one of {SQUEEZE_CHOICES}, got {squeeze!r}")
        if excitation not in EXCITATION_CHOICES:
            raise ValueError(f"SEVar excitation must be one of {EXCITATION_CHOICES}, got {excitation!r}")
        self.squeeze = squeeze
        self.excitation = excitation
        hidden = reduced_channels(channels, reduction)
        # SE's names, so that an SE state_dict loads into SEVar with the defaults.
        self.fc1 = nn.Linear(channels, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels)
        self.channel_map = AttentionMap("channel")

    def extra_repr(self) -> str:
        return f"squeeze={self.squeeze}, excitation={self.excitation}"

    def init_weights(self, scheme: str) -> None:
        if scheme == "reference":  # SE's rule, so that the defaults start from SE's init too
            name_rule_init_(self.named_parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = global_avg_pool(x) if self.squeeze == "avg" else global_max_pool(x)
        logits = self.fc2(self.relu(self.fc1(pooled)))
        # In place: the Linear's backward does not read its output, and sigmoid's, ReLU's and
        # tanh's backward read only their own output.
        if self.excitation == "sigmoid":
            scale = logits.sigmoid_()
        elif self.excitation == "relu":
            scale = logits.relu_()
        else:
            scale = logits.tanh_()
        return x * self.channel_map(scale)[:, :, None, None]
