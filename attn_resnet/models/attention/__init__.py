"""Attention blocks, resolved from the one registry (``attn_resnet.attention_registry``).

A block is a module whose constructor takes ``channels`` first and its options as keyword
arguments with defaults (those are its options: ``model.<option>=`` reaches them), keeps the
input's shape, and says where it goes:

- ``placement``: its default place, one of ``PLACEMENTS`` ("residual" for SE/CBAM, "stage" for BAM);
- ``placements`` (optional): the places it may go, if not all of them;
- ``init_weights(scheme)`` (optional): its own init for the network's ``init`` scheme
  ("reference" or "torchvision"); without it, the block keeps its constructor's init;
- ``AttentionMap`` taps on its attention weights, so that they can be visualised;
- ``fused`` (optional; SE and CBAM): "auto", True or False, whether it runs its fused Triton
  kernels (``fused/``). Not an option of the block: the network's ``fused`` sets it.

The generic tests pick every registered block up.
"""

from __future__ import annotations

import difflib
import importlib
import inspect

from torch import nn

from ...attention_registry import (BLOCKS, DEFAULT_PLACEMENT, NO_ATTENTION, PLACEMENTS, attention_names,
                                  canonical_attention, placement_choices, placement_names)
from .base import AttentionMap, name_rule_init_, torchvision_rule_init_


def _resolve(target: str) -> type[nn.Module]:
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(f"{__name__}.{module_name}"), class_name)


ATTENTION_BLOCKS: dict[str, type[nn.Module]] = {name: _resolve(target) for name, target in BLOCKS.items()}

globals().update({cls.__name__: cls for cls in ATTENTION_BLOCKS.values()})  # from .attention import CBAM


class AttentionConfigError(ValueError):
    """A block option or placement that the chosen block does not take."""


def attention_choices() -> list[str]:
    """Every valid ``att_type`` spelling in its canonical case, "none" first."""
    return list(attention_names())


def canonical_name(att_type: str | None) -> str:
    """Map a case-insensitive ``att_type`` (or None) to its registry spelling; ValueError otherwise."""
    name = canonical_attention(att_type)
    if name is not None:
        return name
    raise ValueError(
        f"Unknown att_type {att_type!r}. Valid choices (case-insensitive): {', '.join(attention_choices())}."
    )


def block_options(att_type: str | None) -> dict[str, object]:
    """The options a block takes and their defaults (its constructor's keyword arguments); {} for "none"."""
    name = canonical_name(att_type)
    if name == NO_ATTENTION:
        return {}
    parameters = list(inspect.signature(ATTENTION_BLOCKS[name]).parameters.values())[1:]  # after channels
    return {p.name: p.default for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def block_placements(att_type: str | None) -> tuple[str, ...]:
    """The placements a block may take (all of ``PLACEMENTS`` unless it declares fewer)."""
    name = canonical_name(att_type)
    if name == NO_ATTENTION:
        return ()
    return tuple(getattr(ATTENTION_BLOCKS[name], "placements", placement_names()))


def check_options(att_type: str | None, options: dict, other_keys: tuple[str, ...] = (), prefix: str = "") -> None:
    """Raise ``AttentionConfigError`` naming the block's options if ``options`` holds one it does not take.

    ``other_keys`` are the names valid beside the block's options (the network's own), used only
    for a "did you mean"; ``prefix`` (e.g. "model.") is how the message spells a key.
    """
    name = canonical_name(att_type)
    accepted = block_options(name)
    unknown = [key for key in options if key not in accepted]
    if not unknown:
        return
    key = unknown[0]
    close = difflib.get_close_matches(key, [*accepted, *other_keys], n=1)
    hint = f" Did you mean {prefix}{close[0]}?" if close else ""
    if name == NO_ATTENTION:
        takes = "att_type=none takes no block options"
    elif accepted:
        takes = (f"the {name} block takes "
                 + ", ".join(f"{prefix}{option} (default {default!r})" for option, default in accepted.items()))
    else:
        takes = f"the {name} block takes no options"
    raise AttentionConfigError(
        f"Unknown option {prefix}{key}={options[key]!r} for att_type={name}: {takes}."
        f"{hint} Block options are the keyword arguments of the block's constructor."
    )


def resolve_placement(att_type: str | None, placement: str | None = DEFAULT_PLACEMENT) -> str | None:
    """The placement to use: the block's default for "default"/None; None for no attention.

    Raises ``AttentionConfigError`` for an unknown placement or one the block does not take.
    """
    name = canonical_name(att_type)
    placement = DEFAULT_PLACEMENT if placement is None else placement
    if placement != DEFAULT_PLACEMENT and placement not in PLACEMENTS:
        raise AttentionConfigError(
            f"Unknown att_placement {placement!r}. Valid choices: {', '.join(placement_choices())}."
        )
    if name == NO_ATTENTION:
        if placement != DEFAULT_PLACEMENT:
            raise AttentionConfigError(
                f"att_placement={placement} needs a block: att_type=none places nothing. Choose an att_type "
                f"({', '.join(BLOCKS)}) or leave att_placement=default."
            )
        return None
    block = ATTENTION_BLOCKS[name]
    if placement == DEFAULT_PLACEMENT:
        return block.placement
    allowed = block_placements(name)
    if placement not in allowed:
        reason = getattr(block, "placement_note", "")
        raise AttentionConfigError(
            f"att_type={name} cannot go at att_placement={placement}: it goes at {', '.join(allowed)} "
            f"(default {block.placement}).{' ' + reason if reason else ''}"
        )
    return placement


def build_attention(att_type: str | None, channels: int, **options: object) -> nn.Module:
    """Build the named block for ``channels`` channels with ``options``; "none" gives ``nn.Identity``.

    An option the block does not take is an error that names the options it does take.
    """
    name = canonical_name(att_type)
    check_options(name, options)
    if name == NO_ATTENTION:
        return nn.Identity()
    return ATTENTION_BLOCKS[name](channels, **options)


def init_block_(block: nn.Module, scheme: str) -> None:
    """Let ``block`` initialise itself for the network's ``scheme``; blocks without ``init_weights`` keep theirs."""
    init = getattr(block, "init_weights", None)
    if init is not None:
        init(scheme)


__all__ = [
    "ATTENTION_BLOCKS",
    "AttentionConfigError",
    "AttentionMap",
    "DEFAULT_PLACEMENT",
    "NO_ATTENTION",
    "PLACEMENTS",
    "attention_choices",
    "block_options",
    "block_placements",
    "build_attention",
    "canonical_name",
    "check_options",
    "init_block_",
    "name_rule_init_",
    "resolve_placement",
    "torchvision_rule_init_",
    *(cls.__name__ for cls in ATTENTION_BLOCKS.values()),
]
