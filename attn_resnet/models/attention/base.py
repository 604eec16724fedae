"""What every attention block shares: the tap its attention maps pass through, and the two inits."""

from __future__ import annotations

from typing import Iterable

from torch import nn

MAP_KINDS = ("spatial", "channel")


class AttentionMap(nn.Identity):
    """An identity that a block passes its attention weights through, so that they can be seen.

    ``kind`` is "spatial" for a map over positions, shaped (N, 1, H, W) (or broadcastable to
    it), or "channel" for weights per channel, shaped (N, C) or (N, C, 1, 1). Nothing is stored
    unless someone registers a forward hook on it (``attn_resnet.visualize`` does), so it costs
    nothing in training and compiles away. ``activation="sigmoid"`` says that what passes is a
    logit, to be squashed by whoever looks at it (so the block computes nothing extra for it).
    """

    def __init__(self, kind: str, activation: str | None = None) -> None:
        super().__init__()
        if kind not in MAP_KINDS:
            raise ValueError(f"AttentionMap kind must be one of {MAP_KINDS}, got {kind!r}")
        if activation not in (None, "sigmoid"):
            raise ValueError(f"AttentionMap activation must be None or 'sigmoid', got {activation!r}")
        self.kind = kind
        self.activation = activation

    def extra_repr(self) -> str:
        return self.kind + (f", activation={self.activation}" if self.activation else "")


def name_rule_init_(named_parameters: Iterable[tuple[str, nn.Parameter]]) -> None:
    """The CBAM/BAM authors' name-based init over ``(name, parameter)`` pairs, in that order.

    A weight whose name contains "conv" -> kaiming normal (fan_out); one whose name contains
    "bn" -> 1; every bias -> 0; any other weight keeps its constructor's init.
    """
    for name, param in named_parameters:
        kind = name.rsplit(".", 1)[-1]
        if kind == "weight":
            if "conv" in name:
                nn.init.kaiming_normal_(param, mode="fan_out")
            if "bn" in name:
                nn.init.ones_(param)
        elif kind == "bias":
            nn.init.zeros_(param)


def torchvision_rule_init_(modules: Iterable[nn.Module]) -> None:
    """torchvision's ResNet init over ``modules``: convs kaiming normal (fan_out, relu), norms 1 and 0."""
    for module in modules:
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
            if module.weight is not None:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
