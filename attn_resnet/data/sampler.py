"""A batch sampler whose order and augmentation seeds depend only on (seed, epoch): resumable mid-epoch."""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch.utils.data import Sampler

_MASK64 = (1 << 64) - 1


def _splitmix64(value: int) -> int:
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def _absorb(state: int, value: int) -> int:
    return _splitmix64(state ^ (value & _MASK64))


def mix_seed(*values: int) -> int:
    """A well-mixed non-negative 63-bit seed from integers (splitmix64 chain); fits ``manual_seed``."""
    state = 0
    for value in values:
        state = _absorb(state, value)
    return state >> 1


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields batches of ``(index, aug_seed)`` keys; use it as a DataLoader's ``batch_sampler``.

    shuffle=True: the epoch's order is a permutation drawn from a generator seeded with
    ``mix_seed(seed, epoch)``. The aug_seed of a sample is ``mix_seed(seed, epoch, position)``
    with ``position`` its place in that order, so augmentations do not depend on the batch
    size, the number of workers or replicas, or where a run was resumed.
    shuffle=False: indices in order (the aug_seeds are still there but unused by val sets).

    ``set_start_batch(k)`` skips the first ``k`` batches until the next ``set_epoch``;
    ``len()`` counts only the batches still to come. With ``num_replicas`` > 1 each rank
    takes every ``num_replicas``-th position of the epoch's order, starting at ``rank``;
    with ``drop_last`` every rank gets the same number of full batches, without it the
    shards together cover every sample exactly once.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        if num_samples <= 0 or batch_size <= 0:
            raise ValueError(f"num_samples and batch_size must be positive, got {num_samples} and {batch_size}.")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in 0..{num_replicas - 1}, got {rank}.")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.start_batch = 0
        self.repeats = 1
        if drop_last:
            # Every rank gets the same count so collective ops stay in step.
            self.num_positions = num_samples // num_replicas
            self.num_batches = self.num_positions // batch_size
        else:
            self.num_positions = len(range(rank, num_samples, num_replicas))
            self.num_batches = math.ceil(self.num_positions / batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's order and start again from its first batch."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}.")
        self.epoch = int(epoch)
        self.start_batch = 0

    def set_start_batch(self, start_batch: int) -> None:
        """Skip the first ``start_batch`` batches of the current epoch (resume mid-epoch)."""
        if not 0 <= start_batch <= self.num_batches:
            raise ValueError(f"start_batch must be in 0..{self.num_batches}, got {start_batch}.")
        self.start_batch = int(start_batch)

    def set_repeats(self, repeats: int) -> None:
        """Repeated augmentation (Hoffer et al., 2020; DeiT's ``RASampler``): each image of the
        shuffled order is taken ``repeats`` times in a row and the order is cut back to the epoch's
        length, so an epoch holds ``num_samples / repeats`` distinct images, each ``repeats`` times with
        its own aug seed (its own crop, flip, policy...). Across ranks the copies of an image go to
        consecutive ranks (each rank takes every ``num_replicas``-th position), as DeiT's sampler
        sends them; on one process they share a batch."""
        if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
            raise ValueError(f"data.repeat_aug={repeats!r} is not valid: a positive integer (1: no repeats).")
        if repeats > 1 and not self.shuffle:
            raise ValueError("Repeated augmentation is for a shuffled (training) order.")
        self.repeats = repeats

    def epoch_order(self) -> list[int]:
        """The dataset indices of the whole current epoch, in order (before sharding)."""
        if not self.shuffle:
            return list(range(self.num_samples))
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        order = torch.randperm(self.num_samples, generator=generator)
        if self.repeats > 1:
            order = order.repeat_interleave(self.repeats)[: self.num_samples]
        return order.tolist()

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = self.epoch_order()
        positions = range(self.rank, self.num_samples, self.num_replicas)[: self.num_positions]
        # Hash (seed, epoch) once; each sample then costs one splitmix step.
        epoch_state = _absorb(_absorb(0, self.seed), self.epoch)
        for batch in range(self.start_batch, self.num_batches):
            chunk = positions[batch * self.batch_size : (batch + 1) * self.batch_size]
            yield [(order[position], _absorb(epoch_state, position) >> 1) for position in chunk]

    def __len__(self) -> int:
        return self.num_batches - self.start_batch
