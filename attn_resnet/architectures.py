"""The widened and grouped ResNets (WideResNet, ResNeXt) and their names; torch-free for the config checks.

Three keys beside the depth give a ResNet its shape (``model.width``, ``model.cardinality``,
``model.width_per_group``; ``ResidualNet(width=, cardinality=, width_per_group=)``):

- ``width`` multiplies the channels of every stage (64, 128, 256, 512 at 1); the stem stays at
  64 channels, so the first stage of a widened network opens with a 1x1 projection. This is
  the rule that gives the sizes of the CBAM paper's WideResNet-18 rows (Table 4): 25.88M
  params / 3.866 GFLOPs at widen 1.5 and 45.62M / 6.696 at 2.0. Widening the stem too gives
  25.90M / 3.993 and 45.69M / 7.019, and widening only the first conv of each block gives
  17.18M / 2.652 and 22.68M / 3.490 (docs/ablations.md).
- ``cardinality`` and ``width_per_group`` are torchvision's ``groups`` and ``width_per_group``
  (ResNeXt 32x4d: 32 and 4): the Bottleneck's 3x3 conv has ``cardinality`` groups and
  ``int(planes * width_per_group / 64) * cardinality`` channels. They are not named ``groups``
  because the SK and SA blocks already take a ``groups`` option (``model.groups``). A
  BasicBlock network (depth 18, 34) takes neither, as in torchvision.
"""

from __future__ import annotations

from typing import Any

# The network's shape keys and their defaults: the plain ResNet.
SHAPE_DEFAULTS: dict[str, Any] = {"width": 1.0, "cardinality": 1, "width_per_group": 64}
BASE_WIDTHS = (64, 128, 256, 512)  # the channels of stages 1-4 (before a Bottleneck's expansion)
STEM_WIDTH = 64

# Named networks beyond the plain ``resnet<depth>``: the CBAM paper's Table 4 and torchvision's ResNeXts.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "wide_resnet18_1.5": {"depth": 18, "width": 1.5},
    "wide_resnet18_2": {"depth": 18, "width": 2.0},
    "resnext50_32x4d": {"depth": 50, "cardinality": 32, "width_per_group": 4},
    "resnext101_32x4d": {"depth": 101, "cardinality": 32, "width_per_group": 4},
}


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key}={value!r} is not valid: it must be a positive integer.")
    return value


def stage_widths(width: Any = 1.0) -> tuple[int, ...]:
    """The channels of stages 1-4 for the widening factor ``width``; ValueError unless every stage gets a
    whole number of channels."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or width <= 0:
        raise ValueError(f"width={width!r} is not valid: it must be a positive number, the factor on every "
                         f"stage's channels (1: the plain ResNet; 1.5 and 2: the CBAM paper's WideResNet-18).")
    if STEM_WIDTH * width != round(STEM_WIDTH * width):
        raise ValueError(f"width={width!r} gives the first stage {STEM_WIDTH * width:g} channels: it must give a "
                         f"whole number (64 x width), e.g. 1.5 (96 channels) or 1.25 (80).")
    return tuple(round(base * width) for base in BASE_WIDTHS)


def check_shape(block: str, width: Any = 1.0, cardinality: Any = 1, width_per_group: Any = 64) -> None:
    """ValueError, in one paragraph, for a shape the residual ``block`` ("basic" | "bottleneck") cannot take."""
    stage_widths(width)
    _positive_int("cardinality", cardinality)
    _positive_int("width_per_group", width_per_group)
    if block == "basic" and (cardinality, width_per_group) != (1, 64):
        raise ValueError(f"cardinality={cardinality} and width_per_group={width_per_group} group the 3x3 conv of "
                         f"a Bottleneck block, and depths 18 and 34 are built of BasicBlocks, which take neither "
                         f"(as in torchvision). Use depth 50 or 101 for a ResNeXt (cardinality=32, "
                         f"width_per_group=4), or widen a BasicBlock network with width instead.")
    if int(min(BASE_WIDTHS) * width * width_per_group / 64) < 1:
        raise ValueError(f"width_per_group={width_per_group} leaves the first stage's grouped conv no channels; "
                         f"use a larger width_per_group.")


def bottleneck_width(planes: int, cardinality: int = 1, width_per_group: int = 64) -> int:
    """The channels of a Bottleneck's 3x3 conv (torchvision's rule): ``planes`` for the plain ResNet."""
    return int(planes * (width_per_group / 64.0)) * cardinality


def shape_of(settings: Any) -> dict[str, Any]:
    """The shape keys of a model spec or ``model`` config node, each at its default where not given."""
    return {key: settings.get(key, default) if settings is not None else default
            for key, default in SHAPE_DEFAULTS.items()}


def network_label(depth: Any, width: Any = 1.0, cardinality: Any = 1, width_per_group: Any = 64) -> str:
    """"ResNet-50", "WideResNet-18 (widen 1.5)", "ResNeXt-50 (32x4d)", "ResNet-50 (width per group 128)"."""
    depth = "?" if depth is None else depth
    family = "ResNeXt" if cardinality not in (None, 1) else "WideResNet" if width not in (None, 1) else "ResNet"
    details = []
    if cardinality not in (None, 1):
        details.append(f"{cardinality}x{width_per_group}d")
    elif width_per_group not in (None, 64):
        details.append(f"width per group {width_per_group}")
    if width not in (None, 1):
        details.append(f"widen {float(width):g}")
    return f"{family}-{depth}" + (f" ({', '.join(details)})" if details else "")
