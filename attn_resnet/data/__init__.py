"""Datasets and loaders.

The datasets are those of ``attn_resnet.dataset_registry`` (its docstring says how to add one);
``build_splits(name, **options)`` -> ``Splits`` (train, held-out val, official test, info) for
training; ``build_eval_dataset(name, **options)`` -> ``(test_set, info)`` reads the evaluation
split alone; ``build_loader(dataset, ...)`` makes a resumable DataLoader and
``iterate_batches(loader)`` walks it with readable worker errors; ``resolve_num_workers``
turns ``data.num_workers`` ("auto" or an int) into a count this machine can run.

Every dataset item is ``dataset[index]`` or ``dataset[(index, aug_seed)]`` ->
``(float32 image (3, H, W), int label)``; with an ``aug_seed`` the train-time crop and flip
are read from its bits (``crop_flip_params``), so batches do not depend on workers or resumes.

The training loop gets its batches already on its device, normalized there: from
``DeviceImageLoader`` (the whole uint8 split on the device, augmented in batches) or from
``build_prefetched_loader`` (a DataLoader of uint8 items in a ``DevicePrefetcher``);
``resolve_loader`` picks one for the option ``data.loader``. Both give the same batches.
Every loader is a ``BatchLoader`` (``interface``): what the trainer is written against.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from typing import Any, Callable

from torch.utils.data import Dataset

from .. import dataset_registry
from .common import SUBSET_SEED, VAL_SPLIT_SEED, DataError, DataInfo, Splits, crop_flip_params, normalize_uint8
from .device import DeviceImageLoader, DevicePrefetcher, build_prefetched_loader, resolve_loader
from .interface import BatchLoader, EpochBatchSampler, SampledDeviceLoader
from .loader import available_cores, build_loader, iterate_batches, resolve_num_workers, seed_worker, worker_error
from .sampler import ResumableBatchSampler, mix_seed


class _Builders(Mapping):
    """dataset name -> its builder, read from the registry: imported on first use, and a dataset
    registered later is here too."""

    def __init__(self, builder: str) -> None:
        self.builder = builder

    def __getitem__(self, name: str) -> Callable[..., Any]:
        if dataset_registry.DATASETS.find(name) is None:
            raise KeyError(name)
        return dataset_registry.resolve(name, self.builder)

    def __iter__(self) -> Iterator[str]:
        return iter(dataset_registry.dataset_names())

    def __len__(self) -> int:
        return len(dataset_registry.dataset_names())


DATASET_BUILDERS: Mapping[str, Callable[..., Splits]] = _Builders("train")
# The evaluation split alone; each takes a subset of its dataset's options, the others
# (train_subset, val_split, train_size) only concern the training images.
EVAL_BUILDERS: Mapping[str, Callable[..., tuple[Dataset, DataInfo]]] = _Builders("eval")
DATASET_CHOICES = dataset_registry.dataset_names()  # the built-in ones; DATASET_BUILDERS has those registered since


def dataset_options(name: str) -> list[str]:
    """The keyword options that dataset ``name`` accepts (its ``data.*`` keys other than the loader's)."""
    return list(inspect.signature(DATASET_BUILDERS[name]).parameters)


def _checked_key(name: str, options: dict[str, Any]) -> str:
    key = name.lower() if isinstance(name, str) else name
    if key not in DATASET_BUILDERS:
        raise DataError(f"Unknown dataset {name!r}. Valid choices: {', '.join(DATASET_BUILDERS)}.")
    valid = dataset_options(key)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise DataError(
            f"Unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} for dataset "
            f"{key!r}. Valid options: {', '.join(valid)}."
        )
    return key


def build_splits(name: str, **options: Any) -> Splits:
    """Train, held-out val (option ``val_split``) and official test sets of a dataset in ``DATASET_CHOICES``.

    DataError for bad names or options.
    """
    key = _checked_key(name, options)
    return DATASET_BUILDERS[key](**options)


def build_eval_dataset(name: str, **options: Any) -> tuple[Dataset, DataInfo]:
    """``(val_set, info)``: the official val/test split alone, without reading the training images.

    Takes the same options as ``build_splits``; those that concern only the training images
    (``train_subset``, ``val_split``, ...) are accepted and ignored. ``info.train_size`` is
    None, since the training split is not read.
    """
    key = _checked_key(name, options)
    builder = EVAL_BUILDERS[key]
    used = inspect.signature(builder).parameters
    return builder(**{option: value for option, value in options.items() if option in used})


__all__ = [
    "BatchLoader",
    "DATASET_BUILDERS",
    "DATASET_CHOICES",
    "EVAL_BUILDERS",
    "SUBSET_SEED",
    "VAL_SPLIT_SEED",
    "DataError",
    "DataInfo",
    "DeviceImageLoader",
    "DevicePrefetcher",
    "EpochBatchSampler",
    "ResumableBatchSampler",
    "SampledDeviceLoader",
    "Splits",
    "available_cores",
    "build_eval_dataset",
    "build_loader",
    "build_prefetched_loader",
    "build_splits",
    "crop_flip_params",
    "dataset_options",
    "iterate_batches",
    "mix_seed",
    "normalize_uint8",
    "resolve_loader",
    "resolve_num_workers",
    "seed_worker",
    "worker_error",
]
