"""Random but learnable images, generated per index on the fly, for smoke and speed tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import (DataError, DataInfo, Splits, UInt8ImageDataset, carve_val_split, check_positive_int, data_info,
                     normalization)
from .sampler import mix_seed

TEMPLATE_WEIGHT = 0.6  # the rest of each pixel is per-image uniform noise
TEMPLATE_GRID = 4  # class templates are random 4x4 colour grids, upsampled: easy to tell apart
# Domain tag in every seed here, so no stream coincides with a sampler aug_seed stream.
_TAG = 0x53594E
STREAMS = {"train": 0, "val": 1}  # the stream number is part of every image's seed


class SyntheticDataset(UInt8ImageDataset):
    """Image ``i`` = its class template blended with noise from a generator seeded by (seed, stream, i).

    The train and val streams are different images; ``indices`` picks items of a stream
    (default: its first ``size``). Labels are ``stream index % num_classes``. Train items get
    the CIFAR-style pad-crop and flip (pad = image_size // 8) so the augmentation path costs
    what it does on real data. They are normalized with the blend's own mean and std, or with
    ``mean`` / ``std`` when given.
    """

    def __init__(
        self,
        size: int,
        num_classes: int,
        image_size: int,
        seed: int,
        train: bool,
        *,
        stream: str | None = None,
        indices: torch.Tensor | None = None,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
    ):
        self.num_classes = num_classes
        self.image_size = image_size
        self.seed = seed
        self.stream = stream or ("train" if train else "val")
        self._split = STREAMS[self.stream]
        self.indices = torch.arange(size) if indices is None else torch.as_tensor(indices, dtype=torch.int64)
        self.size = len(self.indices)
        template_rng = torch.Generator().manual_seed(mix_seed(_TAG, seed))
        grid = torch.rand(num_classes, 3, TEMPLATE_GRID, TEMPLATE_GRID, generator=template_rng)
        self.templates = F.interpolate(grid, size=(image_size, image_size), mode="bilinear", align_corners=False)
        # Mean and std of the blend, per channel: templates are shared, noise is U(0, 1).
        weight = TEMPLATE_WEIGHT
        blend_mean = weight * self.templates.mean(dim=(0, 2, 3)) + (1 - weight) * 0.5
        blend_var = weight**2 * self.templates.var(dim=(0, 2, 3)) + (1 - weight) ** 2 / 12
        self.given_mean, self.given_std = mean, std
        super().__init__(
            self.indices % num_classes,
            [f"class_{k}" for k in range(num_classes)],
            blend_mean.tolist() if mean is None else mean,
            blend_var.sqrt().tolist() if std is None else std,
            train,
            pad=image_size // 8,
            flip=True,
        )

    def image(self, index: int) -> torch.Tensor:
        if not -self.size <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} samples")
        index %= self.size
        generator = torch.Generator().manual_seed(
            mix_seed(_TAG, self.seed, self._split, int(self.indices[index]))
        )
        noise = torch.rand(3, self.image_size, self.image_size, generator=generator)
        blend = TEMPLATE_WEIGHT * self.templates[self.targets[index]] + (1 - TEMPLATE_WEIGHT) * noise
        return blend.mul(255).round().to(torch.uint8)

    def subset(self, indices: torch.Tensor, train: bool | None = None) -> SyntheticDataset:
        """The given items of this dataset, from the same stream; not augmented with ``train=False``."""
        return SyntheticDataset(
            0, self.num_classes, self.image_size, self.seed, self.train if train is None else train and self.train,
            stream=self.stream, indices=self.indices[torch.as_tensor(indices, dtype=torch.int64)],
            mean=self.given_mean, std=self.given_std,
        )


def _check_options(num_classes, image_size, seed) -> tuple[int, int, int]:
    num_classes = check_positive_int("num_classes", num_classes)
    image_size = check_positive_int("image_size", image_size)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DataError(f"Option seed must be an integer, got {seed!r}.")
    return num_classes, image_size, seed


def _info(val_set: SyntheticDataset, train_set=None, held_out=None) -> DataInfo:
    return data_info("synthetic", val_set, (val_set.image_size, val_set.image_size), train_set, held_out)


def build_synthetic(
    *,
    num_classes: int = 10,
    image_size: int = 32,
    train_size: int = 512,
    val_size: int = 128,
    val_split: int | None = None,
    seed: int = 0,
    root=None,
    download: bool = False,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> Splits:
    """Synthetic train/val sets; ``val_split`` holds that many of the ``train_size`` training
    images out, not augmented. ``root`` and ``download`` are accepted and ignored. ``mean`` /
    ``std``: the normalisation (None: the images' own statistics)."""
    num_classes, image_size, seed = _check_options(num_classes, image_size, seed)
    train_size = check_positive_int("train_size", train_size)
    val_size = check_positive_int("val_size", val_size)
    mean, std = normalization("synthetic", mean, std)
    train_set = SyntheticDataset(train_size, num_classes, image_size, seed, train=True, mean=mean, std=std)
    test_set = SyntheticDataset(val_size, num_classes, image_size, seed, train=False, mean=mean, std=std)
    train_set, held_out = carve_val_split(train_set, val_split, None, num_classes, "synthetic")
    return Splits(train_set, held_out, test_set, _info(test_set, train_set, held_out))


def build_synthetic_eval(
    *,
    num_classes: int = 10,
    image_size: int = 32,
    val_size: int = 128,
    seed: int = 0,
    root=None,
    download: bool = False,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> tuple[SyntheticDataset, DataInfo]:
    """The synthetic val set alone (the same images as ``build_synthetic``'s test split)."""
    num_classes, image_size, seed = _check_options(num_classes, image_size, seed)
    val_size = check_positive_int("val_size", val_size)
    mean, std = normalization("synthetic", mean, std)
    test_set = SyntheticDataset(val_size, num_classes, image_size, seed, train=False, mean=mean, std=std)
    return test_set, _info(test_set)
