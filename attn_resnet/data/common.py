"""Shared pieces of the datasets: errors, ``DataInfo``, ``Splits``, item keys, uint8 augmentation
and normalization (one definition for every loader), subsets and the held-out validation split."""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass
from numbers import Integral
from typing import Protocol, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..dataset_registry import RegistryError, check_normalization, known_entry
from .policies import (  # noqa: F401 (cutout's helpers re-exported)
    _FIELD_MASK,
    _FLIP_SHIFT,
    AUG_FIELD_BITS,
    AugmentSpec,
    apply_cutout,
    augment_uint8,
    cutout_fill,
    cutout_params,
)


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


def data_info(name: str, test_set, image_size: tuple[int, int], train_set=None, held_out=None) -> DataInfo:
    """The ``DataInfo`` of a dataset whose official val/test split is ``test_set`` (which has ``classes``,
    ``mean`` and ``std``); ``train_set`` is None when only that split was read, ``held_out`` the split of
    ``val_split`` (None without it)."""
    return DataInfo(
        name=name,
        num_classes=len(test_set.classes),
        image_size=(int(image_size[0]), int(image_size[1])),
        class_names=list(test_set.classes),
        mean=tuple(test_set.mean),
        std=tuple(test_set.std),
        train_size=None if train_set is None else len(train_set),
        val_size=len(test_set),
        val_split_size=0 if held_out is None else len(held_out),
    )


def normalization(name: str, mean: Sequence[float] | None, std: Sequence[float] | None,
                  ) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """Options ``mean`` / ``std`` (``data.mean`` / ``data.std``) checked, each the registered default of
    dataset ``name`` when None; None stays None for a dataset that computes them from its images."""
    try:
        mean, std = check_normalization(mean, std)
    except RegistryError as error:
        raise DataError(str(error)) from None
    registered = known_entry(name)
    if mean is None and registered is not None:
        mean = registered.mean
    if std is None and registered is not None:
        std = registered.std
    return mean, std


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


# The pad-crop offsets and the mirror coin of a sample are read from disjoint bit fields of its
# aug_seed (a splitmix64 hash, see sampler.py) instead of from a generator seeded with it: plain
# integer arithmetic that a whole batch of seeds can do at once, on any device. With 20 bits per
# offset the modulo bias (a relative (2 * pad + 1) / 2**20) stays below 1e-5 for CIFAR's pad 4.


def crop_flip_params(aug_seeds, pad: int, flip: bool):
    """``(dy, dx, do_flip)`` that ``aug_seeds`` select for a pad-crop (offsets 0..2*pad into the
    image zero-padded by ``pad``) and an optional mirror.

    ``aug_seeds`` is one non-negative int or an int64 tensor of them (a batch, on any device);
    the results have the same form. Both forms run the same integer arithmetic, so an image
    augmented alone and one augmented in a batch get exactly the same crop and flip.
    """
    span = 2 * pad + 1
    dy = (aug_seeds & _FIELD_MASK) % span
    dx = ((aug_seeds >> AUG_FIELD_BITS) & _FIELD_MASK) % span
    do_flip = ((aug_seeds >> _FLIP_SHIFT) & int(bool(flip))) == 1
    return dy, dx, do_flip


def draw_aug_seed() -> int:
    """A 63-bit aug_seed from the global RNG, for items asked for without one."""
    return int(torch.randint(0, 2**63 - 1, ()).item())


def random_crop_flip(image: torch.Tensor, pad: int, flip: bool, aug_seed: int | None = None) -> torch.Tensor:
    """Same-size crop of ``image`` (C, H, W) zero-padded by ``pad``, then maybe mirrored, as
    ``crop_flip_params(aug_seed, pad, flip)`` says (a seed from the global RNG when None)."""
    dy, dx, do_flip = crop_flip_params(draw_aug_seed() if aug_seed is None else aug_seed, pad, flip)
    if pad > 0:
        height, width = image.shape[-2:]
        image = F.pad(image, (pad, pad, pad, pad))[..., dy : dy + height, dx : dx + width]
    if do_flip:
        image = image.flip(-1)
    return image


def normalization_constants(
    mean: Sequence[float], std: Sequence[float], device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(255 * mean, 255 * std)`` as float32 (C, 1, 1) tensors on ``device``, for ``normalize_uint8``."""
    shift = torch.tensor([255 * float(v) for v in mean], dtype=torch.float32, device=device).view(-1, 1, 1)
    scale = torch.tensor([255 * float(v) for v in std], dtype=torch.float32, device=device).view(-1, 1, 1)
    return shift, scale


def normalize_uint8(
    images: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """uint8 images (..., C, H, W) -> ``(images - shift) / scale`` computed in float32, returned as ``dtype``.

    ``shift, scale = normalization_constants(mean, std)``. Every loader normalizes through here,
    one image or a batch, on the CPU or on a GPU: two correctly rounded float32 operations per
    pixel, so all of them give the same bits. The memory format (channels_last) is kept.
    ``size``: first resize to (H, W) (``resize_uint8``), e.g. 32x32 CIFAR images to 224 for a
    network pretrained on ImageNet; None or the images' own size leaves them as they are.
    """
    if size is not None and tuple(images.shape[-2:]) != tuple(size):
        out = resize_uint8(images, size).sub_(shift).div_(scale)
    else:
        out = torch.sub(images, shift).div_(scale)  # uint8 - float32 is float32: no separate conversion pass
    return out if dtype == torch.float32 else out.to(dtype)


def resize_uint8(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 images (C, H, W) or (B, C, H, W) -> float32 (0..255) bilinearly resized to ``size``.

    Each output pixel depends on its own image only, so one image resized alone and the same
    image resized in a batch, on any device, get the same values. Shrinking is antialiased
    (no aliasing from skipped pixels); enlarging is plain bilinear, as antialiasing is a no-op there.
    """
    single = images.dim() == 3
    batch = images[None] if single else images
    shrink = size[0] < batch.shape[-2] or size[1] < batch.shape[-1]
    out = F.interpolate(batch.float(), size=tuple(size), mode="bilinear", align_corners=False, antialias=shrink)
    return out[0] if single else out


def check_positive_int(option: str, value, allow_none: bool = False) -> int | None:
    """Validate an integer option (bools are not integers here)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral) or value <= 0:
        expected = "a positive integer or null" if allow_none else "a positive integer"
        raise DataError(f"Option {option} must be {expected}, got {value!r}.")
    return int(value)


def check_size(option: str, value, allow_none: bool = False) -> tuple[int, int] | None:
    """An image size option: one int (square) or [height, width] -> (height, width)."""
    if value is None and allow_none:
        return None
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        return check_positive_int(option, value[0]), check_positive_int(option, value[1])
    size = check_positive_int(option, value)
    return size, size


def resolve_classes(requested, available: Sequence[str], name: str) -> list[int] | None:
    """Indices into ``available`` of option ``classes`` (class names or indices), in the order given.

    None keeps every class. Label ``i`` of the narrowed data set is ``requested[i]``, so
    ``classes: [cat, dog]`` trains a two-class model whose class 0 is cat, whatever the data set's order.
    """
    if requested is None:
        return None
    if isinstance(requested, (str, bytes)) or not isinstance(requested, Sequence):
        raise DataError(f"Option classes must be a list of class names or indices of {name}, e.g. "
                        f"data.classes=[{available[0]},{available[-1]}], got {requested!r}.")
    if len(requested) < 2:
        raise DataError(f"Option classes must name at least two classes of {name} (a classifier needs "
                        f"two), got {list(requested)!r}. Set data.classes=null to keep all {len(available)}.")
    lookup = {str(class_name): index for index, class_name in enumerate(available)}
    indices = []
    for entry in requested:
        if isinstance(entry, bool) or not isinstance(entry, (str, Integral)):
            raise DataError(f"Option classes: {entry!r} is neither a class name nor an index of {name}.")
        if isinstance(entry, Integral):
            if not 0 <= int(entry) < len(available):
                raise DataError(f"Option classes: index {int(entry)} is outside 0..{len(available) - 1} "
                                f"({name} has {len(available)} classes).")
            indices.append(int(entry))
            continue
        if entry not in lookup:
            import difflib

            close = difflib.get_close_matches(entry, list(lookup), n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            shown = ", ".join(list(lookup)[:20]) + (" ..." if len(lookup) > 20 else "")
            raise DataError(f"Option classes: {entry!r} is not a class of {name}.{hint} Its classes: {shown}.")
        indices.append(lookup[entry])
    repeated = sorted({available[i] for i in indices if indices.count(i) > 1})
    if repeated:
        raise DataError(f"Option classes names {', '.join(map(repr, repeated))} more than once; each class "
                        f"may appear once, since its position is its new label.")
    return indices


def relabel(labels: torch.Tensor, order: Sequence[int], num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(kept, new_labels)``: the positions of ``labels`` in the classes ``order`` keeps, and their labels there."""
    lookup = torch.full((num_classes,), -1, dtype=torch.int64)
    lookup[torch.as_tensor(list(order), dtype=torch.int64)] = torch.arange(len(order))
    mapped = lookup[torch.as_tensor(labels, dtype=torch.int64)]
    kept = (mapped >= 0).nonzero().squeeze(1)
    return kept, mapped[kept]


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
    """Labelled images given as uint8 (3, H, W) tensors; train-time pad-crop/flip (and the ``aug``
    group's per-image ops, see ``set_augment``); normalized floats out.

    Subclasses provide ``image(index)``. ``dataset[index]`` augments (train only) with a seed
    drawn from the global RNG; ``dataset[(index, aug_seed)]`` takes the crop and flip from
    ``crop_flip_params(aug_seed, ...)`` and leaves the global RNG alone. ``uint8_items()`` is
    the same dataset with the augmented uint8 images as items, for loaders that normalize
    whole batches on the device (``normalize_uint8``, the arithmetic used here as well).
    """

    normalized = True  # False: items are the augmented uint8 images (see uint8_items)

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
        self.augment = AugmentSpec()
        self.output_size: tuple[int, int] | None = None  # resize to this when normalizing (see set_output_size)
        self._fill = cutout_fill(self.mean)
        self._shift, self._scale = normalization_constants(self.mean, self.std)

    def set_output_size(self, size: tuple[int, int] | None) -> None:
        """Images reach the model resized to ``size`` (after augmentation, as part of normalizing); None: as stored."""
        self.output_size = None if size is None else (int(size[0]), int(size[1]))

    def set_augment(self, spec: AugmentSpec) -> None:
        """Train-time ops after the crop and flip (``policies.AugmentSpec``); a val split ignores them."""
        self.augment = spec if self.train else AugmentSpec()

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> torch.Tensor:
        raise NotImplementedError

    def all_images(self) -> torch.Tensor:
        """Every image, not augmented, as one uint8 tensor (N, 3, H, W)."""
        return torch.stack([self.image(index) for index in range(len(self))])

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (3, H, W) -> float32 standardized with this dataset's mean/std (resized to ``output_size``)."""
        return normalize_uint8(image, self._shift, self._scale, size=self.output_size)

    def uint8_items(self) -> UInt8ImageDataset:
        """A shallow copy whose items are ``(augmented uint8 image, label)``: same images, same draws."""
        view = copy.copy(self)
        view.normalized = False
        return view

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        index, aug_seed = split_key(key)
        image = self.image(index)
        if self.train:
            aug_seed = draw_aug_seed() if aug_seed is None else aug_seed
            image = random_crop_flip(image, self.pad, self.flip, aug_seed)
            if self.augment.active:
                image = augment_uint8(image, torch.tensor(aug_seed), self.augment, self._fill)
        return (self.normalize(image) if self.normalized else image), self.targets[index]


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

    def all_images(self) -> torch.Tensor:
        return self.images

    def subset(self, indices: torch.Tensor, train: bool | None = None) -> TensorImageDataset:
        """A new dataset of the given rows; same augmentation, or none with ``train=False``."""
        return self._derived(self.images[indices], self.labels[indices], self.classes,
                             self.train if train is None else train and self.train)

    def select_classes(self, order: Sequence[int]) -> TensorImageDataset:
        """The images of classes ``order`` (indices), relabelled 0..len(order)-1 in that order; same augmentation."""
        kept, labels = relabel(self.labels, order, len(self.classes))
        return self._derived(self.images[kept], labels, [self.classes[i] for i in order], self.train)

    def _derived(self, images, labels, classes, train: bool) -> TensorImageDataset:
        derived = TensorImageDataset(images, labels, classes, self.mean, self.std, train, self.pad, self.flip)
        derived.set_output_size(self.output_size)
        return derived


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
