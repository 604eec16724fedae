"""Shared pieces of the datasets: errors, ``DataInfo``, ``Splits``, item keys, uint8 augmentation,
subsets and the held-out validation split."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from numbers import Integral
from typing import Protocol, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


class DataError(ValueError):
    """A dataset that is missing, malformed or asked for with bad options."""


SUBSET_SEED = 0  # train_subset / val_subset: the same class-balanced subset every run
VAL_SPLIT_SEED = 1  # val_split: a draw of its own, so the held-out images are not the subset's


@dataclass(frozen=True)
class DataInfo:
    """What the model and the trainer need to know about a dataset.

    ``train_size`` counts the images trained on (after holding out ``val_split_size`` of them
    and after ``train_subset``); it is None when only the evaluation split was read
    (``build_eval_dataset``). ``val_size`` is the size of the official val/test split.
    """

    name: str
    num_classes: int
    image_size: tuple[int, int]  # (H, W) of the tensors the model sees
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_size: int | None
    val_size: int
    val_split_size: int = 0


@dataclass(frozen=True)
class Splits:
    """The datasets of a training run.

    ``train``: the images trained on (augmented). ``val``: images held out of the training set
    for validation (option ``val_split``, not augmented), or None without it. ``test``: the
    official val/test split.
    """

    train: Dataset
    val: Dataset | None
    test: Dataset
    info: DataInfo


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

    def subset(self, indices: torch.Tensor, train: bool | None = None) -> TensorImageDataset:
        """A new dataset of the given rows; same augmentation, or none with ``train=False``."""
        return TensorImageDataset(
            self.images[indices], self.labels[indices], self.classes, self.mean, self.std,
            self.train if train is None else train and self.train, self.pad, self.flip,
        )


class SubsettableDataset(Protocol):
    """A dataset with labels that can be narrowed to some of its items, with or without augmentation."""

    targets: list[int]

    def __len__(self) -> int: ...

    def subset(self, indices: torch.Tensor, train: bool | None = None) -> SubsettableDataset: ...


def check_val_split(val_split, train_size: int, num_classes: int, name: str) -> int | None:
    """Validate option ``val_split`` against a training set of ``train_size`` images."""
    val_split = check_positive_int("val_split", val_split, allow_none=True)
    if val_split is None:
        return None
    if val_split >= train_size:
        raise DataError(
            f"Option val_split={val_split} must be smaller than the training set of {name} ({train_size} "
            "images), since the held-out images are taken from it and some must be left to train on. "
            "Lower data.val_split, or set it to null to validate on the official val/test split only."
        )
    if val_split < num_classes:
        raise DataError(
            f"Option val_split={val_split} is smaller than the number of classes of {name} ({num_classes}): "
            f"a class-balanced held-out split needs at least one image per class. Set data.val_split to "
            f"{num_classes} or more, or to null."
        )
    return val_split


def carve_val_split(
    train_set: SubsettableDataset,
    val_split: int | None,
    train_subset: int | None,
    num_classes: int,
    name: str,
) -> tuple[SubsettableDataset, SubsettableDataset | None]:
    """``(train_set, held_out)``: ``val_split`` class-balanced images of ``train_set`` held out
    without augmentation (None when ``val_split`` is None), then ``train_subset`` of the rest.

    Both draws are seeded (``VAL_SPLIT_SEED``, ``SUBSET_SEED``), so every run holds out the
    same images, whatever the subset, and never trains on them.
    """
    val_split = check_val_split(val_split, len(train_set), num_classes, name)
    held_out = None
    if val_split is not None:
        labels = torch.as_tensor(train_set.targets)
        chosen = stratified_subset(labels, val_split, VAL_SPLIT_SEED)
        keep = torch.ones(len(labels), dtype=torch.bool)
        keep[chosen] = False
        held_out = train_set.subset(chosen, train=False)
        train_set = train_set.subset(keep.nonzero().squeeze(1))
    if train_subset is not None:
        labels = torch.as_tensor(train_set.targets)
        train_set = train_set.subset(stratified_subset(labels, train_subset, SUBSET_SEED))
    return train_set, held_out
