"""Attention blocks and the one registry that maps a name to a block.

Adding a block: write one module with a class that takes ``channels`` first and
keyword options with defaults, set its
``placement`` ("block": inside every residual block, on the residual branch before
the addition; "stage": on the output of stages 1-3), and add one line to
``ATTENTION_BLOCKS``. The generic tests pick every registered block up.
"""

from __future__ import annotations

import inspect

from torch import nn

from .bam import BAM
from .cbam import CBAM
from .se import SE

ATTENTION_BLOCKS: dict[str, type[nn.Module]] = {
    "SE": SE,
    "CBAM": CBAM,
    "BAM": BAM,
}

NO_ATTENTION = "none"


def attention_choices() -> list[str]:
    """Every valid ``att_type`` spelling in its canonical case, "none" first."""
    return [NO_ATTENTION, *ATTENTION_BLOCKS]


def canonical_name(att_type: str | None) -> str:
    """Map a case-insensitive ``att_type`` (or None) to its registry spelling; ValueError otherwise."""
    if att_type is None:
        return NO_ATTENTION
    if isinstance(att_type, str):
        lowered = att_type.lower()
        for name in attention_choices():
            if name.lower() == lowered:
                return name
    raise ValueError(
        f"Unknown att_type {att_type!r}. Valid choices (case-insensitive): {', '.join(attention_choices())}."
    )


def attention_placement(att_type: str | None) -> str | None:
    """Where the block goes ("block" or "stage"), or None for no attention."""
    name = canonical_name(att_type)
    return None if name == NO_ATTENTION else ATTENTION_BLOCKS[name].placement


def build_attention(att_type: str | None, channels: int, **options: object) -> nn.Module:
    """Build the named block for ``channels`` channels; "none" gives ``nn.Identity``.

    ``options`` may hold options of several blocks (e.g. ``reduction``, ``kernel_size``,
    ``combine``); each block receives only the ones its constructor names.
    """
    name = canonical_name(att_type)
    if name == NO_ATTENTION:
        return nn.Identity()
    block = ATTENTION_BLOCKS[name]
    accepted = inspect.signature(block).parameters
    return block(channels, **{key: value for key, value in options.items() if key in accepted})


__all__ = [
    "ATTENTION_BLOCKS",
    "BAM",
    "CBAM",
    "SE",
    "attention_choices",
    "attention_placement",
    "build_attention",
    "canonical_name",
]
