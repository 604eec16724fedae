"""Images of the attention maps on a fixed set of val images, and channel-weight histograms.

A trainer callback, at the end of an epoch (every ``every`` epochs and after the last one):
one forward pass of the fixed images in eval mode, in fp32, on the eager model.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from .callbacks import Callback
from ..visualize import channel_weights_per_stage, record_attention, stage_overlays

log = logging.getLogger(__name__)


def has_attention_maps(model: nn.Module) -> bool:
    from ..models.attention import AttentionMap

    return any(isinstance(module, AttentionMap) for module in model.modules())


class AttentionImages(Callback):
    """At the end of an epoch: writes ``attention/<stage>`` images and ``attention_channel/<stage>`` histograms."""

    name = "attention_images"

    def __init__(self, images: torch.Tensor, every: int) -> None:
        if every < 1:
            raise ValueError(f"AttentionImages needs every >= 1, got {every}")
        self.images, self.every = images, every

    def on_epoch_end(self, trainer, epoch: int, record: dict) -> None:
        if not trainer.loggers.takes_images or (epoch % self.every and epoch != trainer.settings.epochs):
            return
        model = trainer.model
        images = self.images.to(trainer.device)
        if trainer.settings.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        maps = record_attention(model, images)
        for stage, grid in stage_overlays(self.images, maps).items():
            trainer.loggers.log_images(f"attention/{stage}", grid, epoch)
        for stage, weights in channel_weights_per_stage(maps).items():
            trainer.loggers.log_histogram(f"attention_channel/{stage}", weights, epoch)


def fixed_images(loader, count: int) -> torch.Tensor:
    """The first ``count`` images of an unshuffled loader's first epoch (the same every time), on the CPU."""
    loader.batch_sampler.set_epoch(0)
    taken = []
    for images, _ in loader:
        taken.append(images[: count - sum(len(t) for t in taken)].float().cpu())
        if sum(len(t) for t in taken) >= count:
            break
    return torch.cat(taken).contiguous()
