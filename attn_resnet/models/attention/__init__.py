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
import inspect
from collections.abc import Iterator, Mapping
from functools import lru_cache

import torch
from torch import nn

from ...attention_registry import (BLOCKS, DEFAULT_PLACEMENT, NO_ATTENTION, PLACEMENTS, attention_names,
                                  canonical_attention, placement_choices, placement_names,
                                  register_block)
from ...registry import RegistryError
from .base import AttentionMap, name_rule_init_, torchvision_rule_init_


class AttentionConfigError(ValueError):
    """A block option or placement that the chosen block does not take, or a block that breaks the contract."""


class _BlockClasses(Mapping):
    """Every block known by name (built-in, registered, entry points) -> its class, imported on first use."""

    def __getitem__(self, name: str) -> type[nn.Module]:
        if name not in BLOCKS.names():
            raise KeyError(name)
        return block_class(name)

    def __iter__(self) -> Iterator[str]:
        return iter(BLOCKS.names())

    def __len__(self) -> int:
        return len(BLOCKS.names())


ATTENTION_BLOCKS: Mapping[str, type[nn.Module]] = _BlockClasses()

# The built-in classes by their own names: ``from attn_resnet.models.attention import CBAM``.
globals().update({name: BLOCKS.load(name) for name in BLOCKS if not BLOCKS.find(name).external})


def attention_choices() -> list[str]:
    """Every valid ``att_type`` spelling in its canonical case, "none" first."""
    return list(attention_names())


def canonical_name(att_type) -> str:
    """Map a case-insensitive ``att_type`` (a name, an import path, a class, or None) to its registry spelling;
    ValueError otherwise."""
    name = canonical_attention(att_type)
    if name is not None:
        return name
    raise ValueError(
        f"Unknown att_type {att_type!r}. Valid choices (case-insensitive): {', '.join(attention_choices())}; or a "
        f"block of your own by its import path (package.module:Class) or a class."
    )


def block_class(att_type) -> type[nn.Module]:
    """The class of a block (by name, import path or class), checked against the block contract's static rules."""
    name = canonical_name(att_type)
    if name == NO_ATTENTION:
        raise ValueError("att_type=none has no block class.")
    try:
        cls = BLOCKS.load(name)
    except RegistryError as error:
        raise AttentionConfigError(str(error)) from None
    return _checked_class(name, cls)


@lru_cache(maxsize=None)
def _checked_class(name: str, cls) -> type[nn.Module]:
    def broken(rule: str) -> AttentionConfigError:
        found = BLOCKS.find(name)
        where = f" ({found.target})" if found is not None and found.external else ""
        return AttentionConfigError(f"The attention block {name}{where} breaks the block contract: {rule}. See "
                                    f"the block contract in docs/extending.md.")

    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise broken(f"it must be a torch.nn.Module subclass, and {cls!r} is not")
    try:
        parameters = list(inspect.signature(cls).parameters.values())
    except (TypeError, ValueError):
        parameters = []
    if not parameters or parameters[0].name != "channels" or parameters[0].kind not in (
            inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
        first = parameters[0].name if parameters else "nothing"
        raise broken(f"its constructor must take the number of channels first, as a positional argument named "
                     f"'channels' (it takes {first} first): __init__(self, channels, <options with defaults>)")
    placement = getattr(cls, "placement", None)
    if placement not in PLACEMENTS:
        raise broken(f"its class attribute 'placement' (where it goes by default) must be one of "
                     f"{', '.join(PLACEMENTS)}, and it is {placement!r}")
    allowed = getattr(cls, "placements", None)
    if allowed is not None:
        unknown = [place for place in allowed if place not in PLACEMENTS]
        if unknown or placement not in allowed:
            raise broken(f"its 'placements' must be registered placements ({', '.join(PLACEMENTS)}) including its "
                         f"own placement {placement!r}, and they are {tuple(allowed)!r}")
    return cls


def check_block_contract(att_type, options: dict | None = None, channels: int = 64) -> None:
    """Build the block with ``options`` and run it once: AttentionConfigError naming the rule it breaks
    (the static rules of ``block_class``; the output must keep the input's shape; it must be differentiable)."""
    name = canonical_name(att_type)
    if name == NO_ATTENTION:
        return
    cls = block_class(name)
    check_options(name, options or {})
    _check_forward(name, cls, tuple(sorted((options or {}).items(), key=lambda item: item[0])), channels)


@lru_cache(maxsize=64)
def _check_forward(name: str, cls, options: tuple, channels: int) -> None:
    with torch.device("cpu"):  # a real run, also when the network is being built on the meta device
        _run_once(name, cls, dict(options), channels)


def _run_once(name: str, cls, options: dict, channels: int) -> None:
    block = cls(channels, **options)
    if not isinstance(block, nn.Module):
        raise AttentionConfigError(f"The attention block {name} breaks the block contract: building it gave "
                                   f"{type(block).__name__}, not a torch.nn.Module.")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, channels, 8, 8, generator=generator, requires_grad=True)
    try:
        y = block(x)
    except Exception as error:  # noqa: BLE001 - the user's block failed: say where
        raise AttentionConfigError(f"The attention block {name} breaks the block contract: it failed on an input "
                                   f"of shape (2, {channels}, 8, 8) with {type(error).__name__}: {error}. A block "
                                   f"takes (N, C, H, W) and returns the same shape.") from error
    if not isinstance(y, torch.Tensor) or y.shape != x.shape:
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise AttentionConfigError(f"The attention block {name} breaks the block contract: it changed the output "
                                   f"shape, (2, {channels}, 8, 8) in and {shape} out. A block must return a tensor "
                                   f"of its input's shape (it re-weights the features; it does not resize them).")


def block_options(att_type: str | None) -> dict[str, object]:
    """The options a block takes and their defaults (its constructor's keyword arguments); {} for "none"."""
    name = canonical_name(att_type)
    if name == NO_ATTENTION:
        return {}
    parameters = list(inspect.signature(block_class(name)).parameters.values())[1:]  # after channels
    return {p.name: p.default for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def block_placements(att_type: str | None) -> tuple[str, ...]:
    """The placements a block may take (all of ``PLACEMENTS`` unless it declares fewer)."""
    name = canonical_name(att_type)
    if name == NO_ATTENTION:
        return ()
    return tuple(getattr(block_class(name), "placements", placement_names()))


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
    block = block_class(name)
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
    return block_class(name)(channels, **options)


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
    "block_class",
    "canonical_name",
    "check_block_contract",
    "check_options",
    "init_block_",
    "name_rule_init_",
    "register_block",
    "resolve_placement",
    "torchvision_rule_init_",
    *(name for name in BLOCKS if not BLOCKS.find(name).external),
]
