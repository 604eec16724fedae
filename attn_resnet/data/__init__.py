"""Datasets and loaders: ``build_datasets(name, **options)`` and ``build_loader(dataset, ...)``.

Every dataset item is ``dataset[index]`` or ``dataset[(index, aug_seed)]`` ->
``(float32 image (3, H, W), int label)``; with an ``aug_seed`` the train-time augmentation
is drawn from a generator seeded with it, so batches do not depend on workers or resumes.
"""

from __future__ import annotations

import inspect
from functools import partial
from typing import Any, Callable

from torch.utils.data import Dataset

from .cifar import build_cifar
from .common import DataError, DataInfo
from .digits import build_digits
from .imagefolder import build_imagefolder
from .loader import build_loader, seed_worker
from .sampler import ResumableBatchSampler, mix_seed
from .synthetic import build_synthetic

DATASET_BUILDERS: dict[str, Callable[..., tuple[Dataset, Dataset, DataInfo]]] = {
    "cifar10": partial(build_cifar, "cifar10"),
    "cifar100": partial(build_cifar, "cifar100"),
    "imagenet": partial(build_imagefolder, "imagenet"),
    "imagefolder": partial(build_imagefolder, "imagefolder"),
    "synthetic": build_synthetic,
    "digits": build_digits,
}
DATASET_CHOICES = tuple(DATASET_BUILDERS)


def dataset_options(name: str) -> list[str]:
    """The keyword options that dataset ``name`` accepts."""
    return list(inspect.signature(DATASET_BUILDERS[name]).parameters)


def build_datasets(name: str, **options: Any) -> tuple[Dataset, Dataset, DataInfo]:
    """``(train_set, val_set, info)`` for a dataset in ``DATASET_CHOICES``; DataError for bad names or options."""
    key = name.lower() if isinstance(name, str) else name
    if key not in DATASET_BUILDERS:
        raise DataError(f"Unknown dataset {name!r}. Valid choices: {', '.join(DATASET_CHOICES)}.")
    valid = dataset_options(key)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise DataError(
            f"Unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} for dataset "
            f"{key!r}. Valid options: {', '.join(valid)}."
        )
    return DATASET_BUILDERS[key](**options)


__all__ = [
    "DATASET_BUILDERS",
    "DATASET_CHOICES",
    "DataError",
    "DataInfo",
    "ResumableBatchSampler",
    "build_datasets",
    "build_loader",
    "dataset_options",
    "mix_seed",
    "seed_worker",
]
