"""Random but learnable images, generated per index on the fly, for smoke and speed tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import DataError, DataInfo, UInt8ImageDataset, check_positive_int
from .sampler import mix_seed

TEMPLATE_WEIGHT = 0.6  # the rest of each pixel is per-image uniform noise
TEMPLATE_GRID = 4  # class templates are random 4x4 colour grids, upsampled: easy to tell apart
# Domain tag in every seed here, so no stream coincides with a sampler aug_seed stream.
_TAG = 0x53594E


class SyntheticDataset(UInt8ImageDataset):
    """Image ``i`` = its class template blended with noise from a generator seeded by (seed, split, i).

    Labels are ``i % num_classes``. Train items get the CIFAR-style pad-crop and flip
    (pad = image_size // 8) so the augmentation path costs what it does on real data.
    """

    def __init__(self, size: int, num_classes: int, image_size: int, seed: int, train: bool):
        self.size = size
        self.image_size = image_size
        self.seed = seed
        self._split = 0 if train else 1
        template_rng = torch.Generator().manual_seed(mix_seed(_TAG, seed))
        grid = torch.rand(num_classes, 3, TEMPLATE_GRID, TEMPLATE_GRID, generator=template_rng)
        self.templates = F.interpolate(grid, size=(image_size, image_size), mode="bilinear", align_corners=False)
        # Mean and std of the blend, per channel: templates are shared, noise is U(0, 1).
        weight = TEMPLATE_WEIGHT
        mean = weight * self.templates.mean(dim=(0, 2, 3)) + (1 - weight) * 0.5
        var = weight**2 * self.templates.var(dim=(0, 2, 3)) + (1 - weight) ** 2 / 12
        super().__init__(
            torch.arange(size) % num_classes,
            [f"class_{k}" for k in range(num_classes)],
            mean.tolist(),
            var.sqrt().tolist(),
            train,
            pad=image_size // 8,
            flip=True,
        )

    def image(self, index: int) -> torch.Tensor:
        if not -self.size <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} samples")
        index %= self.size
        generator = torch.Generator().manual_seed(mix_seed(_TAG, self.seed, self._split, index))
        noise = torch.rand(3, self.image_size, self.image_size, generator=generator)
        blend = TEMPLATE_WEIGHT * self.templates[self.targets[index]] + (1 - TEMPLATE_WEIGHT) * noise
        return blend.mul(255).round().to(torch.uint8)


def build_synthetic(
    *,
    num_classes: int = 10,
    image_size: int = 32,
    train_size: int = 512,
    val_size: int = 128,
    seed: int = 0,
    root=None,
    download: bool = False,
) -> tuple[SyntheticDataset, SyntheticDataset, DataInfo]:
    """Synthetic train/val sets; ``root`` and ``download`` are accepted and ignored."""
    num_classes = check_positive_int("num_classes", num_classes)
    image_size = check_positive_int("image_size", image_size)
    train_size = check_positive_int("train_size", train_size)
    val_size = check_positive_int("val_size", val_size)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DataError(f"Option seed must be an integer, got {seed!r}.")
    train_set = SyntheticDataset(train_size, num_classes, image_size, seed, train=True)
    val_set = SyntheticDataset(val_size, num_classes, image_size, seed, train=False)
    info = DataInfo(
        name="synthetic",
        num_classes=num_classes,
        image_size=(image_size, image_size),
        class_names=list(train_set.classes),
        mean=train_set.mean,
        std=train_set.std,
        train_size=train_size,
        val_size=val_size,
    )
    return train_set, val_set, info
