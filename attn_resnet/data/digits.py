"""The handwritten digits bundled with scikit-learn (1797 images, 10 classes) as a small real dataset."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from .common import (
    SUBSET_SEED,
    DataError,
    DataInfo,
    Splits,
    TensorImageDataset,
    carve_val_split,
    check_positive_int,
    data_info,
    normalization,
    resolve_classes,
    stratified_subset,
)

DIGITS_SIZE = 32
DIGITS_PAD = 2
SPLIT_SEED = 0


def load_digits_uint8(size: int = DIGITS_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as uint8 (N, 3, size, size) images (bilinear upsampling of 8x8) and int64 labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel values are 0..16 ink counts; scale to 0..1 before resizing once, here.
    small = torch.from_numpy(bunch.images).to(torch.float32).div(16).unsqueeze(1)
    large = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    images = large.mul(255).round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    return images, torch.from_numpy(bunch.target.astype(np.int64))


def build_digits(
    *,
    val_fraction: float = 0.2,
    train_subset: int | None = None,
    val_subset: int | None = None,
    val_split: int | None = None,
    image_size: int = DIGITS_SIZE,
    root=None,
    download: bool = False,
    classes: list[str | int] | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
) -> Splits:
    """Stratified train/val split (``val_fraction``, seed ``SPLIT_SEED``); train augments by pad-2 crop only.

    The ``val_fraction`` part is the test split of ``Splits``; ``val_split`` holds that many
    more images out of the training part, not augmented, for validation. No flips: digits
    are not mirror-symmetric. Normalization uses the mean/std of the whole training part,
    so it does not change with ``train_subset`` or ``val_split``. ``root`` and ``download``
    are accepted and ignored (the data ships with scikit-learn). ``image_size`` (default
    32) is the upsampled side length; 16 trains four times faster on a CPU. ``classes`` (digits
    as names "0".."9" or indices) keeps those, relabelled 0.. in the order given. ``mean`` /
    ``std`` replace the training part's statistics when given.
    """
    from sklearn.model_selection import train_test_split

    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise DataError(f"Option val_fraction must be a number strictly between 0 and 1, got {val_fraction!r}.")
    train_subset = check_positive_int("train_subset", train_subset, allow_none=True)
    val_subset = check_positive_int("val_subset", val_subset, allow_none=True)
    val_split = check_positive_int("val_split", val_split, allow_none=True)
    image_size = check_positive_int("image_size", image_size)
    given_mean, given_std = normalization("digits", mean, std)
    if image_size < 8:
        raise DataError(f"Option image_size must be at least 8 (the digits are 8x8), got {image_size}.")
    images, labels = load_digits_uint8(image_size)
    train_idx, val_idx = train_test_split(
        np.arange(len(labels)), test_size=val_fraction, stratify=labels.numpy(), random_state=SPLIT_SEED
    )
    train_idx, val_idx = torch.from_numpy(np.sort(train_idx)), torch.from_numpy(np.sort(val_idx))
    pixels = images[train_idx].to(torch.float32).div(255)
    mean = tuple(pixels.mean(dim=(0, 2, 3)).tolist()) if given_mean is None else given_mean
    std = tuple(pixels.std(dim=(0, 2, 3)).tolist()) if given_std is None else given_std
    names = [str(digit) for digit in range(10)]
    train_set = TensorImageDataset(images[train_idx], labels[train_idx], names, mean, std, True, DIGITS_PAD)
    test_set = TensorImageDataset(images[val_idx], labels[val_idx], names, mean, std, False)
    order = resolve_classes(classes, names, "digits")
    if order is not None:
        train_set, test_set = train_set.select_classes(order), test_set.select_classes(order)
    if val_subset is not None:
        test_set = test_set.subset(stratified_subset(test_set.labels, val_subset, SUBSET_SEED))
    train_set, held_out = carve_val_split(train_set, val_split, train_subset, len(train_set.classes), "digits")
    return Splits(train_set, held_out, test_set, data_info("digits", test_set, (image_size, image_size), train_set,
                                                           held_out))


def build_digits_eval(
    *,
    val_fraction: float = 0.2,
    val_subset: int | None = None,
    image_size: int = DIGITS_SIZE,
    root=None,
    download: bool = False,
    classes: list[str | int] | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
) -> tuple[TensorImageDataset, DataInfo]:
    """The ``val_fraction`` split of ``build_digits`` alone (all digits ship in one small array)."""
    splits = build_digits(
        val_fraction=val_fraction, val_subset=val_subset, image_size=image_size, root=root, download=download,
        classes=classes, mean=mean, std=std,
    )
    return splits.test, replace(splits.info, train_size=None)
