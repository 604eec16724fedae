"""Seeing what attention blocks attend to: record their maps, overlay them on the images.

Every block passes its attention weights through ``AttentionMap`` taps; ``AttentionRecorder``
hooks them for one forward pass. Spatial maps become heat maps over the input images (one per
stage: the stage's last tap), channel weights become per-stage value sets for histograms.
Used by the trainer's TensorBoard images and by ``scripts/visualize_attention.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention_registry import PLACEMENTS
from .models.attention import AttentionMap


@dataclass
class RecordedMap:
    name: str           # the tap's module name, e.g. "layer2.1.attn.spatial_gate.spatial_map"
    kind: str           # "spatial" | "channel"
    value: torch.Tensor  # float32, on the CPU, activation applied

    @property
    def stage(self) -> str:
        return stage_of(self.name)


def stage_of(name: str) -> str:
    """"layer2.1.attn..." -> "stage2"; "stage_attn.0..." -> "stage1" (after stage 1); "head_attn..." -> "head".

    Read through the placement registry: a tap inside a residual block belongs to that block's
    stage, one in a per-stage slot to the stage it follows, one in a network-wide slot to its placement.
    """
    match = re.match(r"layer(\d)\.", name)
    if match:
        return f"stage{match.group(1)}"
    for placement, where in PLACEMENTS.items():
        if where.scope == "stage":
            match = re.match(rf"{re.escape(where.slot)}\.(\d)\.", name)
            if match:
                return f"stage{int(match.group(1)) + 1}"
        elif where.scope == "network" and (name == where.slot or name.startswith(f"{where.slot}.")):
            return placement
    return name.split(".", 1)[0]


class AttentionRecorder:
    """Context manager recording every ``AttentionMap`` of ``model`` during the forward passes inside it."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.maps: list[RecordedMap] = []
        self._handles = []

    def __enter__(self) -> "AttentionRecorder":
        for name, module in self.model.named_modules():
            if isinstance(module, AttentionMap):
                self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name: str):
        def record(module: AttentionMap, inputs, output: torch.Tensor) -> None:
            value = output.detach().float()
            if module.activation == "sigmoid":
                value = value.sigmoid()
            self.maps.append(RecordedMap(name, module.kind, value.cpu()))

        return record

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@torch.no_grad()
def record_attention(model: nn.Module, images: torch.Tensor) -> list[RecordedMap]:
    """The attention maps of one eval-mode forward pass of ``images`` (the model's mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        with AttentionRecorder(model) as recorder:
            model(images)
    finally:
        model.train(was_training)
    return recorder.maps


def spatial_heat(value: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A spatial map (N, C', H', W'), H' or W' possibly 1, as (N, H, W) at ``size`` scaled to [0, 1] per image.

    Channels are averaged; a map over one axis only (Coordinate Attention's) is broadcast along
    the other. Each image's map is min-max scaled, so that weak but structured maps stay visible.
    """
    heat = value.mean(dim=1, keepdim=True)
    heat = F.interpolate(heat, size=size, mode="bilinear", align_corners=False)[:, 0]
    low = heat.flatten(1).min(1).values[:, None, None]
    high = heat.flatten(1).max(1).values[:, None, None]
    return (heat - low) / (high - low).clamp_min(1e-12)


def last_spatial_per_stage(maps: list[RecordedMap]) -> dict[str, list[RecordedMap]]:
    """Stage -> the spatial maps of its last tapped block (all taps of that block: e.g. both of CoordAtt's)."""
    blocks: dict[str, dict[str, list[RecordedMap]]] = {}
    for item in maps:
        if item.kind == "spatial":
            block = block_of(item.name)
            blocks.setdefault(item.stage, {}).setdefault(block, []).append(item)
    return {stage: list(by_block.values())[-1] for stage, by_block in blocks.items()}


def block_of(name: str) -> str:
    """The attention block a tap belongs to: the module path up to its slot ("layer2.1.attn")."""
    match = re.match(_slot_pattern(), name)
    return match.group(1) if match else name.rsplit(".", 1)[0]


def _slot_pattern() -> str:
    """A module path up to its attention slot, from the placement registry: ``layer2.1.attn``,
    ``stage_attn.0``, ``head_attn`` (longer slot names first, so ``post_attn`` is not read as ``attn``)."""
    slots = sorted(PLACEMENTS.values(), key=lambda where: -len(where.slot))
    alternatives = [rf".*?\.{re.escape(w.slot)}" if w.scope == "block" else
                    rf"{re.escape(w.slot)}\.\d" if w.scope == "stage" else re.escape(w.slot) for w in slots]
    return rf"({'|'.join(alternatives)})(?:\.|$)"


def channel_weights_per_stage(maps: list[RecordedMap]) -> dict[str, torch.Tensor]:
    """Stage -> every channel attention weight recorded in it, flattened (for a histogram)."""
    stages: dict[str, list[torch.Tensor]] = {}
    for item in maps:
        if item.kind == "channel":
            stages.setdefault(item.stage, []).append(item.value.flatten())
    return {stage: torch.cat(values) for stage, values in stages.items()}


def displayable(images: torch.Tensor) -> torch.Tensor:
    """Normalized (N, 3, H, W) images scaled to [0, 1] per image, for display."""
    images = images.detach().float().cpu()
    low = images.flatten(1).min(1).values[:, None, None, None]
    high = images.flatten(1).max(1).values[:, None, None, None]
    return (images - low) / (high - low).clamp_min(1e-12)


def jet(heat: torch.Tensor) -> torch.Tensor:
    """(N, H, W) in [0, 1] -> (N, 3, H, W) RGB in the classic "jet" colour map (blue low, red high)."""
    channels = [(1.5 - (4 * heat - offset).abs()).clamp(0, 1) for offset in (3, 2, 1)]
    return torch.stack(channels, dim=1)


def overlay(images01: torch.Tensor, heat: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Blend the jet-coloured ``heat`` (N, H, W) over ``images01`` (N, 3, H, W)."""
    return (1 - alpha) * images01 + alpha * jet(heat)


def stage_overlays(images: torch.Tensor, maps: list[RecordedMap], alpha: float = 0.5) -> dict[str, torch.Tensor]:
    """Stage -> (N, 3, H, W) overlays of the stage's last spatial map on ``images`` (normalized input)."""
    shown = displayable(images)
    size = tuple(images.shape[-2:])
    result = {}
    for stage, items in last_spatial_per_stage(maps).items():
        heat = spatial_heat(items[0].value if len(items) == 1 else _combined(items), size)
        result[stage] = overlay(shown, heat, alpha)
    return result


def _combined(items: list[RecordedMap]) -> torch.Tensor:
    """Several taps of one block (e.g. a height and a width map) as their broadcast product."""
    combined = None
    for item in items:
        value = item.value.mean(dim=1, keepdim=True)
        combined = value if combined is None else combined * value
    return combined
