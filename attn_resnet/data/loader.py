"""``build_loader``: a DataLoader over a ``ResumableBatchSampler`` with seeded workers."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .sampler import ResumableBatchSampler


def seed_worker(worker_id: int) -> None:
    """Seed ``random`` and ``numpy`` in a worker from its torch seed (torch seeds only itself)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def build_loader(
    dataset: Dataset,
    batch_size: int = 128,
    train: bool = True,
    seed: int = 0,
    num_workers: int = 2,
    pin_memory: bool = False,
    persistent_workers: bool = True,
    drop_last: bool | None = None,
    *,
    num_replicas: int = 1,
    rank: int = 0,
) -> DataLoader:
    """DataLoader whose ``batch_sampler`` is a ``ResumableBatchSampler`` (shuffled when ``train``).

    ``drop_last`` defaults to ``train``: a last train batch of one sample breaks BatchNorm,
    while validation must see every sample. Call ``loader.batch_sampler.set_epoch(epoch)``
    before each epoch and ``set_start_batch(k)`` to resume mid-epoch. Batches are the same
    for any ``num_workers``, since every augmentation is seeded by its sample's key.
    """
    sampler = ResumableBatchSampler(
        len(dataset),
        batch_size,
        shuffle=train,
        seed=seed,
        drop_last=train if drop_last is None else drop_last,
        num_replicas=num_replicas,
        rank=rank,
    )
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers and num_workers > 0,
        worker_init_fn=seed_worker if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
    )
