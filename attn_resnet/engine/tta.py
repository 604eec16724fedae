"""Test-time augmentation: logits averaged over fixed views of each evaluation image.

- ``none``: the image as it is.
- ``flip``: the mean of the logits of the image and of its mirror image.
- ``flip_translate``: half the ``flip`` logits of the image, plus a quarter each of the
  ``flip`` logits of the image shifted by one pixel up-left and by one pixel down-right
  (reflection-padded by one pixel and cropped at offsets (0, 0) and (2, 2)). This is the
  level-2 TTA of Keller Jordan's airbench CIFAR-10 scripts (six forward passes per image).

The views are the same for every image and draw no random numbers, so evaluation stays
deterministic and leaves the training's random streams alone. Logits are averaged in float32;
the loss of a TTA pass is the cross-entropy of the averaged logits.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..config.choices import TTA_MODES  # the one list, torch-free for the config checks

__all__ = ["TTA_MODES", "TTA_VIEWS", "tta_logits"]

# Forward passes per image of each mode (for throughput figures and docs).
TTA_VIEWS = {"none": 1, "flip": 2, "flip_translate": 6}


def _same_format(view: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``view`` made contiguous in ``like``'s memory format (a crop of a channels_last tensor is not)."""
    if like.is_contiguous(memory_format=torch.channels_last) and not like.is_contiguous():
        return view.contiguous(memory_format=torch.channels_last)
    return view.contiguous()


def _mirrored(forward: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    return 0.5 * (forward(images).float() + forward(_same_format(images.flip(-1), images)).float())


def tta_logits(forward: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, mode: str = "none") -> torch.Tensor:
    """The logits of ``images`` (B, C, H, W) under the TTA ``mode`` (one of ``TTA_MODES``)."""
    if mode == "none":
        return forward(images)
    if mode == "flip":
        return _mirrored(forward, images)
    if mode == "flip_translate":
        height, width = images.shape[-2:]
        padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
        up_left = _same_format(padded[..., :height, :width], images)
        down_right = _same_format(padded[..., 2:, 2:], images)
        shifted = 0.5 * (_mirrored(forward, up_left) + _mirrored(forward, down_right))
        return 0.5 * _mirrored(forward, images) + 0.5 * shifted
    raise ValueError(f"trainer.tta={mode!r} is not valid. Valid choices: {', '.join(TTA_MODES)}.")
