"""Shared pieces of the datasets: errors, ``DataInfo``, item keys, uint8 augmentation, subsets."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from numbers import Integral
from typing import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


class DataError(ValueError):
    """A dataset that is missing, malformed or asked for with bad options."""


@dataclass(frozen=True)
class DataInfo:
    """What the model and the trainer need to know about a dataset."""

    name: str
    num_classes: int
    image_size: tuple[int, int]  # (H, W) of the tensors the model sees
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_size: int
    val_size: int


def split_key(key) -> tuple[int, int | None]:
    """Turn a dataset key, ``index`` or ``(index, aug_seed)``, into ``(index, aug_seed or None)``."""
    if isinstance(key, (tuple, list)):
        index, aug_seed = key
        return operator.index(index), operator.index(aug_seed)
    return operator.index(key), None


def seeded_generator(aug_seed: int | None) -> torch.Generator | None:
    """A fresh generator for ``aug_seed``; None (the global RNG) when there is no seed."""
    return None if aug_seed is None else torch.Generator().manual_seed(aug_seed)


def random_crop_flip(
    image: torch.Tensor, pad: int, flip: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random same-size crop of ``image`` (C, H, W) zero-padded by ``pad``, then a coin-flip mirror."""
    if pad > 0:
        # Draw order (offsets, then coin) is part of the contract: one aug_seed, one result.
        dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=generator).tolist()
        height, width = image.shape[-2:]
        image = F.pad(image, (pad, pad, pad, pad))[..., dy : dy + height, dx : dx + width]
    if flip and torch.rand((), generator=generator).item() < 0.5:
        image = image.flip(-1)
    return image


def check_positive_int(option: str, value, allow_none: bool = False) -> int | None:
    """Validate an integer option (bools are not integers here)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral) or value <= 0:
        expected = "a positive integer or null" if allow_none else "a positive integer"
        raise DataError(f"Option {option} must be {expected}, got {value!r}.")
    return int(value)


def stratified_subset(labels: torch.Tensor, size: int | None, seed: int = 0) -> torch.Tensor:
    """Sorted indices of a class-balanced subset of ``size`` samples (all of them when None or larger).

    Deterministic: each class is shuffled by a generator seeded with ``seed`` and the classes
    are dealt round-robin, so every class gets ``size // num_classes`` samples, or one more,
    as far as the class has them.
    """
    total = len(labels)
    if size is None or size >= total:
        return torch.arange(total)
    perm = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    # rank[i] = how many samples of the same class precede shuffled sample i.
    by_label, order_by_label = torch.sort(labels[perm], stable=True)
    counts = torch.unique_consecutive(by_label, return_counts=True)[1]
    starts = (torch.cumsum(counts, 0) - counts).repeat_interleave(counts)
    rank = torch.empty(total, dtype=torch.long)
    rank[order_by_label] = torch.arange(total) - starts
    # Stable sort by rank keeps the shuffled order among equal ranks, so which class
    # gets the odd sample out is random too.
    order = torch.sort(rank, stable=True).indices
    return perm[order[:size]].sort().values


class UInt8ImageDataset(Dataset):
    """Labelled images given as uint8 (3, H, W) tensors; train-time pad-crop/flip; normalized floats out.

    Subclasses provide ``image(index)``. ``dataset[index]`` augments (train only) with the
    global RNG; ``dataset[(index, aug_seed)]`` draws the augmentation from a generator
    seeded with ``aug_seed`` and leaves the global RNG alone.
    """

    def __init__(
        self,
        labels: torch.Tensor,
        classes: Sequence[str],
        mean: Sequence[float],
        std: Sequence[float],
        train: bool,
        pad: int = 0,
        flip: bool = False,
    ):
        self.labels = labels.to(torch.int64)
        self.targets = self.labels.tolist()
        self.classes = list(classes)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.train = train
        self.pad = pad if train else 0
        self.flip = flip and train
        self._mean = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
        self._std = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> torch.Tensor:
        raise NotImplementedError

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (3, H, W) -> float32 standardized with this dataset's mean/std."""
        return image.to(torch.float32).div_(255).sub_(self._mean).div_(self._std)

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        index, aug_seed = split_key(key)
        image = self.image(index)
        if self.train:
            image = random_crop_flip(image, self.pad, self.flip, seeded_generator(aug_seed))
        return self.normalize(image), self.targets[index]


class TensorImageDataset(UInt8ImageDataset):
    """All images held in memory as one uint8 tensor ``images`` (N, 3, H, W) with int64 ``labels``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes, mean, std, train, pad=0, flip=False):
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(labels):
            raise DataError(
                f"Expected uint8 images (N, C, H, W) and N labels, got {images.dtype} {tuple(images.shape)} "
                f"and {len(labels)} labels."
            )
        super().__init__(labels, classes, mean, std, train, pad, flip)
        self.images = images

    def image(self, index: int) -> torch.Tensor:
        return self.images[index]

    def subset(self, indices: torch.Tensor) -> TensorImageDataset:
        """A new dataset of the given rows, same transform."""
        return TensorImageDataset(
            self.images[indices], self.labels[indices], self.classes, self.mean, self.std,
            self.train, self.pad, self.flip,
        )
