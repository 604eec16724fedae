"""Augmentation policies (RandAugment, TrivialAugmentWide) and random erasing, drawn from each sample's aug seed.

The image operations are torchvision's own (``torchvision.transforms.autoaugment``: the op table
of each policy, with its magnitudes, and the function that applies one op), so the ops are the
ones torchvision's ``RandAugment`` (Cubuk et al., 2020) and ``TrivialAugmentWide`` (Müller &
Hutter, 2021) apply. What differs is where the random choices come from: torchvision's classes
draw from the global RNG, per call, which a loader worker or a resumed run cannot repeat. Here
every choice (the ops, their magnitude bin and sign; erasing's box) is a hash of the sample's aug
seed, as the crop and flip are, so:

- the device loader (``DeviceImageLoader``) draws for a whole batch at once on the host, groups
  the images that take the same op with the same magnitude, and applies each group in one call
  on the device: a few dozen calls per batch, no per-image loop and no wait for the GPU;
- the workers path applies the same ops to each image alone, with the same draws: the two give
  the same images (bit for bit on the CPU; tests check it);
- a resumed run, or another number of workers, sees the same augmented images.

Random erasing (Zhong et al., 2020) follows torchvision's ``RandomErasing``: with probability
``p`` a box of area 2-33% of the image and aspect ratio 0.3-3.3 (log-uniform), at a uniform
position, up to 10 tries for a box that fits; it is painted with the data set's mean colour on the
uint8 image (torchvision's default ``value=0`` on the normalized image), after the policy.

``torchvision.transforms.autoaugment``'s helpers are private (underscored) but have kept their
shape since torchvision 0.11; this module is the one place that uses them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import autoaugment as _torchvision_autoaugment

from ..config.choices import AUG_POLICIES as POLICIES  # the one list, torch-free for the config checks

NUM_BINS = 31  # torchvision's magnitude bins for both policies

__all__ = ["AugmentSpec", "POLICIES", "apply_cutout", "apply_policy", "apply_random_erasing", "augment_uint8",
           "cutout_fill", "cutout_params", "hash_seeds"]

# The pad-crop offsets and the mirror coin of a sample are read from disjoint bit fields of its
# aug_seed (a splitmix64 hash, see sampler.py) instead of from a generator seeded with it: plain
# integer arithmetic that a whole batch of seeds can do at once, on any device. With 20 bits per
# offset the modulo bias (a relative (2 * pad + 1) / 2**20) stays below 1e-5 for CIFAR's pad 4.
# (common.crop_flip_params reads them.)
AUG_FIELD_BITS = 20
_FIELD_MASK = (1 << AUG_FIELD_BITS) - 1
_FLIP_SHIFT = 2 * AUG_FIELD_BITS


# splitmix64's constants, as signed int64 (torch has no uint64 arithmetic); products wrap modulo 2**64.
_GOLDEN = 0x9E3779B97F4A7C15 - 2**64
_MIX1 = 0xBF58476D1CE4E5B9 - 2**64
_MIX2 = 0x94D049BB133111EB - 2**64


# Cutout's box centre comes from the bits above the flip bit: two 11-bit fields (bits 41-51 and
# 52-62 of the 63-bit seed), so that it is independent of the crop and the flip. For the 32-pixel
# CIFAR images 2**11 is a multiple of the size: no modulo bias at all.
_CUTOUT_SHIFT = _FLIP_SHIFT + 1
_CUTOUT_BITS = 11
_CUTOUT_MASK = (1 << _CUTOUT_BITS) - 1


def cutout_params(aug_seeds, size: int, height: int, width: int):
    """``(y0, y1, x0, x1)``: the rows and columns (end exclusive) of the cutout box ``aug_seeds`` select.

    As in DeVries & Taylor, "Improved Regularization of Convolutional Neural Networks with Cutout"
    (2017): a ``size`` x ``size`` square centred on a uniformly drawn pixel (so it may hang over the
    border and be clipped there). One int or an int64 tensor of seeds, as ``crop_flip_params``.
    """
    cy = ((aug_seeds >> _CUTOUT_SHIFT) & _CUTOUT_MASK) % height
    cx = ((aug_seeds >> (_CUTOUT_SHIFT + _CUTOUT_BITS)) & _CUTOUT_MASK) % width
    y0, x0 = cy - size // 2, cx - size // 2
    if isinstance(aug_seeds, torch.Tensor):
        return y0.clamp(min=0), (y0 + size).clamp(max=height), x0.clamp(min=0), (x0 + size).clamp(max=width)
    return max(y0, 0), min(y0 + size, height), max(x0, 0), min(x0 + size, width)


def cutout_fill(mean: Sequence[float]) -> torch.Tensor:
    """uint8 (C,): the data set's mean colour, the value cutout paints (about 0 once normalized).

    Cutout is done on the uint8 image, before normalization, so that every loader (workers, the
    prefetcher, the device loader) paints the same bits; the mean rounded to a uint8 level is
    within half a level of the paper's 0 of the normalized image.
    """
    return torch.tensor([round(255 * float(value)) for value in mean], dtype=torch.uint8)


def apply_cutout(images: torch.Tensor, aug_seeds, size: int, fill: torch.Tensor) -> torch.Tensor:
    """``images`` (C, H, W) or a batch (B, C, H, W) of uint8, with each one's cutout box painted ``fill``.

    A batch takes one int64 tensor of seeds (on the images' device) and is painted with one
    masked select, without a loop over the images.
    """
    height, width = images.shape[-2:]
    y0, y1, x0, x1 = cutout_params(aug_seeds, size, height, width)
    fill = fill.to(images.device).view(-1, 1, 1)
    if images.ndim == 3:
        images = images.clone()
        images[:, y0:y1, x0:x1] = fill.expand(-1, max(y1 - y0, 0), max(x1 - x0, 0))
        return images
    rows = torch.arange(height, device=images.device)
    cols = torch.arange(width, device=images.device)
    inside = (((rows >= y0[:, None]) & (rows < y1[:, None]))[:, :, None]
              & ((cols >= x0[:, None]) & (cols < x1[:, None]))[:, None, :])
    return torch.where(inside[:, None], fill, images)


def _shift_right(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical (unsigned) right shift of int64 values."""
    return (values >> bits) & ((1 << (64 - bits)) - 1)


def hash_seeds(seeds: torch.Tensor, salt: int) -> torch.Tensor:
    """Non-negative int64 hashes of int64 ``seeds`` with ``salt`` (one splitmix64 round), elementwise.

    The same integer arithmetic on any device, so a sample draws the same numbers alone (a
    1-element tensor) and in a batch.
    """
    z = seeds ^ torch.tensor((salt * (_GOLDEN + 2**64)) % 2**64 - 2**63, dtype=torch.int64, device=seeds.device)
    z = z + _GOLDEN
    z = (z ^ _shift_right(z, 30)) * _MIX1
    z = (z ^ _shift_right(z, 27)) * _MIX2
    return (z ^ _shift_right(z, 31)) & (2**63 - 1)


@dataclass(frozen=True)
class AugmentSpec:
    """The ``aug`` group's per-image ops, in the order they are applied after the crop and flip."""

    policy: str = "none"
    num_ops: int = 2          # RandAugment: ops per image
    magnitude: int = 9        # RandAugment: magnitude bin, 0..30
    cutout: int = 0           # pixels (``common.apply_cutout``)
    random_erasing: float = 0.0  # probability

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"aug.policy={self.policy!r} is not valid. Valid choices: {', '.join(POLICIES)}.")
        if not 0 <= self.magnitude < NUM_BINS:
            raise ValueError(f"aug.magnitude={self.magnitude!r} is not valid: a bin in 0..{NUM_BINS - 1}.")
        if self.num_ops < 1:
            raise ValueError(f"aug.num_ops={self.num_ops!r} is not valid: at least 1.")
        if not 0 <= self.random_erasing <= 1:
            raise ValueError(f"aug.random_erasing={self.random_erasing!r} is not valid: a probability in [0, 1].")

    @property
    def active(self) -> bool:
        return self.policy != "none" or self.cutout > 0 or self.random_erasing > 0


def _space(policy: str, height: int, width: int) -> list[tuple[str, torch.Tensor, bool]]:
    """``[(op name, magnitude per bin, signed)]`` of torchvision's policy, in its order."""
    if policy == "randaugment":
        table = _torchvision_autoaugment.RandAugment()._augmentation_space(NUM_BINS, (height, width))
    else:
        table = _torchvision_autoaugment.TrivialAugmentWide()._augmentation_space(NUM_BINS)
    return [(name, magnitudes, signed) for name, (magnitudes, signed) in table.items()]


def _draws(seeds: torch.Tensor, spec: AugmentSpec, count: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per round: (op index, magnitude bin, negate) of each seed, on the seeds' device."""
    rounds = spec.num_ops if spec.policy == "randaugment" else 1
    draws = []
    for round_ in range(rounds):
        bits = hash_seeds(seeds, 0x5241 + round_)  # "RA" + the round
        op = bits % count
        bin_ = torch.full_like(op, spec.magnitude) if spec.policy == "randaugment" else (bits >> 16) % NUM_BINS
        negate = ((bits >> 32) & 1) == 1
        draws.append((op, bin_, negate))
    return draws


def _apply_one(images: torch.Tensor, name: str, magnitude: float, fill: list[float]) -> torch.Tensor:
    return _torchvision_autoaugment._apply_op(images, name, magnitude, InterpolationMode.NEAREST, fill)


def apply_policy(images: torch.Tensor, seeds: torch.Tensor, spec: AugmentSpec,
                 fill: list[float] | None = None) -> torch.Tensor:
    """uint8 ``images`` (C, H, W) or (B, C, H, W) after ``spec.policy``, each as its aug seed draws.

    ``seeds``: int64 of shape () or (B,), on the host (the draws are grouped there, so a batch on
    a GPU is never read back); ``fill``: the colour of the area an op moves in from outside the
    image (black by default, as torchvision's).
    """
    if spec.policy == "none":
        return images
    single = images.ndim == 3
    batch = images[None] if single else images
    seeds = seeds.reshape(-1).cpu()
    space = _space(spec.policy, *batch.shape[-2:])
    fill = [0.0] * batch.shape[1] if fill is None else fill
    out = batch.clone()
    for op, bin_, negate in _draws(seeds, spec, len(space)):
        # One call per distinct (op, bin, sign): the images that drew it, gathered.
        keys = (op * NUM_BINS + bin_) * 2 + negate.long()
        for key in torch.unique(keys).tolist():
            members = (keys == key).nonzero().flatten()
            index = members.to(out.device, non_blocking=True)
            op_index, rest = divmod(key, NUM_BINS * 2)
            bin_index, negative = divmod(rest, 2)
            name, magnitudes, signed = space[op_index]
            magnitude = float(magnitudes[bin_index]) if magnitudes.ndim > 0 else 0.0
            if signed and negative:
                magnitude = -magnitude
            if name == "Identity":
                continue
            out[index] = _apply_one(out[index], name, magnitude, fill)
    return out[0] if single else out


def _erasing_boxes(seeds: torch.Tensor, probability: float, height: int, width: int,
                   scale=(0.02, 0.33), ratio=(0.3, 3.3), attempts: int = 10) -> torch.Tensor:
    """int64 (N, 4) boxes ``(y0, y1, x0, x1)`` of torchvision's ``RandomErasing``; an empty box for no erasing."""
    count = seeds.shape[0]
    boxes = torch.zeros(count, 4, dtype=torch.int64)
    unit = float(2**53)
    erase = (hash_seeds(seeds, 0x5245) >> 10).double() / unit < probability  # "RE"
    found = torch.zeros(count, dtype=torch.bool)
    area = height * width
    for attempt in range(attempts):
        bits = [(hash_seeds(seeds, 0x524500 + 8 * attempt + k) >> 10).double() / unit for k in range(4)]
        target = area * (scale[0] + (scale[1] - scale[0]) * bits[0])
        aspect = torch.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * bits[1])
        h = torch.round(torch.sqrt(target * aspect)).long()
        w = torch.round(torch.sqrt(target / aspect)).long()
        fits = (h < height) & (w < width) & ~found & erase
        y0 = (bits[2] * (height - h + 1).clamp(min=1)).long()
        x0 = (bits[3] * (width - w + 1).clamp(min=1)).long()
        boxes[fits] = torch.stack([y0, y0 + h, x0, x0 + w], 1)[fits]
        found |= fits
    return boxes


def apply_random_erasing(images: torch.Tensor, seeds: torch.Tensor, probability: float,
                         fill: torch.Tensor) -> torch.Tensor:
    """uint8 ``images`` (C, H, W) or (B, C, H, W) with each one's erasing box (if any) painted ``fill`` (C,)."""
    if probability <= 0:
        return images
    single = images.ndim == 3
    batch = images[None] if single else images
    height, width = batch.shape[-2:]
    boxes = _erasing_boxes(seeds.reshape(-1).cpu(), probability, height, width).to(batch.device, non_blocking=True)
    rows = torch.arange(height, device=batch.device)
    cols = torch.arange(width, device=batch.device)
    y0, y1, x0, x1 = boxes.unbind(1)
    inside = (((rows >= y0[:, None]) & (rows < y1[:, None]))[:, :, None]
              & ((cols >= x0[:, None]) & (cols < x1[:, None]))[:, None, :])
    out = torch.where(inside[:, None], fill.to(batch.device).view(1, -1, 1, 1), batch)
    return out[0] if single else out


def augment_uint8(images: torch.Tensor, seeds: torch.Tensor, spec: AugmentSpec, fill: torch.Tensor,
                  device_seeds: torch.Tensor | None = None) -> torch.Tensor:
    """The ``spec``'s ops on cropped and flipped uint8 ``images`` (C, H, W) or (B, C, H, W), in order:
    the policy, cutout, random erasing; ``fill`` (C,) uint8 is the data set's mean colour.

    ``seeds`` are the aug seeds on the host (shape () or (B,)); ``device_seeds`` the same on the
    images' device, when the caller has them there already (cutout's box is computed there).
    """
    if spec.policy != "none":
        images = apply_policy(images, seeds, spec)
    if spec.cutout > 0:
        if images.ndim == 3:
            box_seeds = int(seeds)
        else:
            box_seeds = device_seeds if device_seeds is not None else seeds.to(images.device)
        images = apply_cutout(images, box_seeds, spec.cutout, fill)
    if spec.random_erasing > 0:
        images = apply_random_erasing(images, seeds, spec.random_erasing, fill)
    return images
