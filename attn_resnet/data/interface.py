"""What the training loop needs from a loader, declared once.

``BatchLoader`` is the interface the trainer and ``evaluate_model`` are written against: an
iterable of ``(images, targets)`` batches with a length and a ``batch_sampler`` that chooses the
epoch (``set_epoch``), resumes mid-epoch (``set_start_batch``) and repeats images
(``set_repeats``). Four loaders implement it: a DataLoader from ``build_loader`` (workers),
``DevicePrefetcher`` (a DataLoader's batches normalized on the device), ``DeviceImageLoader``
(a whole split held on the device) and ``DaliImageLoader`` (DALI's decoders). The last two
make their batches from the sampler's keys themselves; ``SampledDeviceLoader`` holds the
constructor they share, so a new loader of that kind writes only how it reads a batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import torch

from .loader import epoch_sampler


@runtime_checkable
class EpochBatchSampler(Protocol):
    """Batches of ``(index, aug_seed)`` keys for one epoch at a time (``ResumableBatchSampler``)."""

    batch_size: int
    epoch: int

    def set_epoch(self, epoch: int) -> None: ...

    def set_start_batch(self, start_batch: int) -> None: ...

    def set_repeats(self, repeats: int) -> None: ...

    def __iter__(self) -> Iterator[list[tuple[int, int]]]: ...

    def __len__(self) -> int: ...


@runtime_checkable
class BatchLoader(Protocol):
    """``(images, targets)`` batches: ``len()`` of them are still to come in the sampler's epoch."""

    @property
    def batch_sampler(self) -> EpochBatchSampler: ...

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def __len__(self) -> int: ...


class SampledDeviceLoader:
    """A loader that turns its sampler's keys into batches on ``device`` itself (no DataLoader).

    The constructor every such loader shares: the batches' keys come from a ``ResumableBatchSampler``
    built as ``build_loader`` builds it (shuffled and dropping the last partial batch when
    ``train``; ``drop_last`` overrides; ``num_replicas``/``rank`` shard it), and the images come
    out on ``device`` as ``dtype``, in the channels_last memory format on request. A subclass
    checks the dataset in ``_accept`` (before anything is built) and prepares it in ``_prepare``;
    its ``__iter__`` yields the batches of ``self.batch_sampler``'s keys.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int = 128,
        train: bool = True,
        seed: int = 0,
        device: torch.device | str = "cpu",
        *,
        drop_last: bool | None = None,
        num_replicas: int = 1,
        rank: int = 0,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
    ):
        self._accept(dataset)
        self.dataset = dataset
        self.train = train
        self.seed = int(seed)
        self.rank = int(rank)
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.dtype = dtype
        self.batch_sampler = epoch_sampler(len(dataset), batch_size, train, seed, drop_last, num_replicas, rank)
        self._prepare(dataset)

    def _accept(self, dataset: Any) -> None:
        """Raise ``DataError`` for a dataset this loader cannot read."""

    def _prepare(self, dataset: Any) -> None:
        """Put what the batches are made from in place (on the device, in a pipeline)."""

    def __len__(self) -> int:
        return len(self.batch_sampler)
