"""Loaders that hand the loop batches already on its device, normalized there.

``DeviceImageLoader`` keeps a whole in-memory uint8 split on the device and crops, flips and
normalizes each batch there with a few batched tensor ops: no worker processes, and only the
batch's indices and seeds cross from the host. ``DevicePrefetcher`` wraps a DataLoader of
uint8 items (``build_prefetched_loader``): the batches travel as uint8 and are normalized on
the device, the next one copied on a side stream while the current one trains. Both take
their batches from a ``ResumableBatchSampler`` and the crops from ``crop_flip_params``, and
normalize with ``normalize_uint8``: for the same seed they give the same batches, bit for
bit. ``resolve_loader`` turns the option ``data.loader`` into one of the two.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .. import dataset_registry
from ..config.choices import LOADERS  # the one list, torch-free for the config checks
from .common import (
    DataError,
    TensorImageDataset,
    UInt8ImageDataset,
    crop_flip_params,
    cutout_fill,
    normalization_constants,
    normalize_uint8,
)
from .interface import SampledDeviceLoader
from .loader import build_loader, iterate_batches
from .policies import AugmentSpec, augment_uint8



class DeviceImageLoader(SampledDeviceLoader):
    """Batches ``(images, targets)`` of a uint8 image dataset held whole on ``device``.

    The dataset's images (``all_images()``, zero-padded once when it augments) and labels are
    copied to ``device`` at construction. Each batch's indices and aug_seeds come from
    ``batch_sampler``, a ``ResumableBatchSampler`` built as ``build_loader`` builds it (same
    ``set_epoch``, ``set_start_batch``, sharding and ``drop_last``, default ``train``; the
    constructor is ``SampledDeviceLoader``'s); a train
    dataset's crops and flips are ``crop_flip_params`` of the seeds, gathered for the whole
    batch with one indexing op; then the data set's ``augment`` ops (``policies.augment_uint8``:
    the policy grouped by op, cutout and erasing boxes each one masked select). Images come out normalized as ``dtype`` (float32 by default),
    in the channels_last memory format on request; targets as int64, both on ``device``.
    """

    def _accept(self, dataset) -> None:
        if not isinstance(dataset, UInt8ImageDataset):
            raise DataError(f"DeviceImageLoader needs a uint8 image dataset, got {type(dataset).__name__}.")

    def _prepare(self, dataset: UInt8ImageDataset) -> None:
        self.spec = dataset.augment if dataset.train else AugmentSpec()
        self.augment = dataset.train and (dataset.pad > 0 or dataset.flip or self.spec.active)
        self.pad, self.flip = dataset.pad, dataset.flip
        self._fill = cutout_fill(dataset.mean).to(self.device)
        images = dataset.all_images().to(self.device)
        self.height, self.width = images.shape[-2:]
        self.images = None if self.augment else images
        self._windows = self._crop_windows(images) if self.augment else None
        self.labels = dataset.labels.to(self.device)
        self.shift, self.scale = normalization_constants(dataset.mean, dataset.std, self.device)
        self.output_size = dataset.output_size

    def _crop_windows(self, images: torch.Tensor) -> torch.Tensor:
        """A view ``(orientation, image, dy, dx, ...)`` of every crop window of the padded split; no copy.

        The split is padded once and, with flips, stored a second time mirrored (the mirror of
        the crop at ``dx`` is the crop at ``2 * pad - dx`` of the mirrored image). ``unfold``
        then exposes each window as strides, so a batch of crops is one gather indexed by four
        small vectors. The trailing dims are (C, H, W), or (H, W, C) for channels_last, whose
        storage then holds each pixel's channels together.
        """
        padded = F.pad(images, (self.pad,) * 4) if self.pad else images
        stacked = torch.stack([padded, padded.flip(-1)]) if self.flip else padded[None]
        if self.channels_last:
            stacked = stacked.permute(0, 1, 3, 4, 2).contiguous()  # (F, N, H', W', C)
            return stacked.unfold(2, self.height, 1).unfold(3, self.width, 1).permute(0, 1, 2, 3, 5, 6, 4)
        return stacked.unfold(3, self.height, 1).unfold(4, self.width, 1).permute(0, 1, 3, 4, 2, 5, 6)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for keys in self.batch_sampler:
            yield self.batch(keys)

    def batch(self, keys: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch of the sampler's ``(index, aug_seed)`` keys."""
        keys = torch.tensor(keys, dtype=torch.int64)
        if self.device.type == "cuda":
            keys = keys.pin_memory()  # a truly asynchronous copy: the host does not wait for the GPU
        index, seeds = keys.to(self.device, non_blocking=True).unbind(1)
        images = self._crops(index, seeds) if self.augment else self.images[index]
        if self.spec.active:  # the policy's and erasing's draws are made from the host's copy of the seeds
            images = augment_uint8(images, keys[:, 1], self.spec, self._fill, device_seeds=seeds)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return normalize_uint8(images, self.shift, self.scale, self.dtype, self.output_size), self.labels[index]

    def _crops(self, index: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W): each image's crop of the padded split, mirrored where its seed says."""
        dy, dx, flip = crop_flip_params(seeds, self.pad, self.flip)
        orientation = flip.long() if self.flip else torch.zeros_like(index)
        dx = torch.where(flip, 2 * self.pad - dx, dx)
        crops = self._windows[orientation, index, dy, dx]
        # channels_last: gathered as (B, H, W, C), whose permuted view is NCHW in that memory format.
        return crops.permute(0, 3, 1, 2) if self.channels_last else crops


class DevicePrefetcher:
    """A DataLoader's batches moved to ``device``; uint8 images normalized there with ``normalize_uint8``.

    Float images (already normalized, e.g. by torchvision transforms) are only moved and cast to
    ``dtype``. On CUDA the next batch is copied (from pinned memory when the loader pins it) and
    normalized on a side stream while the loop works on the current one. ``batch_sampler`` and
    ``len()`` are the wrapped loader's, and a worker's error arrives as ``iterate_batches``
    reports it.
    """

    def __init__(
        self,
        loader,
        device: torch.device | str,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
        output_size: tuple[int, int] | None = None,
    ):
        self.loader = loader
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.dtype = dtype
        self.normalization = None if mean is None else normalization_constants(mean, std, self.device)
        self.output_size = output_size  # uint8 batches are resized to this as they are normalized

    @property
    def batch_sampler(self):
        return self.loader.batch_sampler

    @property
    def dataset(self):
        return self.loader.dataset

    def __len__(self) -> int:
        return len(self.loader)

    def prepare(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch on the device, normalized, in the requested memory format and dtype."""
        images = images.to(self.device, non_blocking=True)
        targets = targets.to(self.device, non_blocking=True)
        if self.channels_last:  # before normalizing: the uint8 copy is the cheaper one
            images = images.contiguous(memory_format=torch.channels_last)
        if images.dtype == torch.uint8:
            if self.normalization is None:
                raise DataError("DevicePrefetcher got uint8 images but no mean and std to normalize them with.")
            return normalize_uint8(images, *self.normalization, self.dtype, self.output_size), targets
        return images.to(self.dtype), targets

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = iterate_batches(self.loader)
        if self.device.type != "cuda":
            for images, targets in batches:
                yield self.prepare(images, targets)
            return
        stream = torch.cuda.Stream(self.device)
        # The side stream reads tensors made on the current stream (the normalization constants).
        stream.wait_stream(torch.cuda.current_stream(self.device))
        ready = None
        for images, targets in batches:
            with torch.cuda.stream(stream):
                upcoming = self.prepare(images, targets)
            if ready is not None:
                yield ready
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(stream)
            for tensor in upcoming:
                # Made on the side stream, used on the current one: the allocator must not hand
                # their memory to the side stream again before the current stream is done with it.
                tensor.record_stream(current)
            ready = upcoming
        if ready is not None:
            yield ready


def build_prefetched_loader(
    dataset: Dataset,
    batch_size: int = 128,
    train: bool = True,
    seed: int = 0,
    device: torch.device | str = "cpu",
    *,
    num_workers: int = 2,
    pin_memory: bool = False,
    persistent_workers: bool = True,
    drop_last: bool | None = None,
    num_replicas: int = 1,
    rank: int = 0,
    channels_last: bool = False,
    dtype: torch.dtype = torch.float32,
) -> DevicePrefetcher:
    """``build_loader`` over the uint8 items of ``dataset`` (its own items when it has no uint8
    form), wrapped in a ``DevicePrefetcher`` that normalizes them on ``device``."""
    is_uint8 = hasattr(dataset, "uint8_items")
    loader = build_loader(
        dataset.uint8_items() if is_uint8 else dataset,
        batch_size,
        train,
        seed,
        num_workers,
        pin_memory,
        persistent_workers,
        drop_last,
        num_replicas=num_replicas,
        rank=rank,
    )
    mean, std = (dataset.mean, dataset.std) if is_uint8 else (None, None)
    return DevicePrefetcher(loader, device, mean, std, channels_last, dtype, getattr(dataset, "output_size", None))


def resolve_loader(
    requested: str, dataset: Dataset, device: torch.device, name: str = "this dataset"
) -> tuple[str, str]:
    """``("device" | "workers" | "dali", sentence for the log)`` for the option ``data.loader``.

    "auto": the device loader on CUDA for a dataset held in memory as one uint8 tensor
    (CIFAR-10/100, digits), else DataLoader workers. "device" works for every uint8 image
    dataset (synthetic images are generated once, up front) and is a DataError for the others.
    "dali" (optional NVIDIA DALI) decodes the image files of class-folder datasets.
    """
    key = str(requested).strip().lower()
    if key not in LOADERS:
        raise DataError(f"data.loader must be one of {', '.join(LOADERS)}, got {requested!r}.")
    if key == "device" and not isinstance(dataset, UInt8ImageDataset):
        raise DataError(
            f"data.loader=device keeps a whole split on the device as one uint8 tensor and augments it "
            f"there, which only in-memory image sets allow "
            f"({', '.join(name for name in dataset_registry.DATASETS if not dataset_registry.entry(name).image_files)}); "
            f"{name} decodes and transforms its image files one at a time on the CPU. Use "
            f"data.loader=workers (or auto) for it."
        )
    if key == "dali":
        from ..optional import DALI_INSTALL, dali_available

        if not hasattr(dataset, "samples"):
            raise DataError(f"data.loader=dali decodes image files from class folders (imagenet, imagefolder); "
                            f"{name} is held in memory. Use data.loader=auto (or device) for it.")
        if not dali_available():
            raise DataError(DALI_INSTALL)
        where = "on the GPU (nvJPEG)" if device.type == "cuda" else "on the CPU (DALI's CPU mode)"
        return key, f"data.loader=dali: {name} decoded, cropped and normalized by DALI {where}"
    if key == "auto":
        key = "device" if device.type == "cuda" and isinstance(dataset, TensorImageDataset) else "workers"
        chosen = f"data.loader=auto -> {key}"
    else:
        chosen = f"data.loader={key}"
    if key == "device":
        return key, f"{chosen}: {name} held whole on {device}, augmented and normalized there"
    normalized = "uint8 batches normalized" if hasattr(dataset, "uint8_items") else "batches moved"
    return key, f"{chosen}: DataLoader, {normalized} on {device}"
