"""ImageNet-style folders (``root/train/<class>/*``, ``root/val/<class>/*``) with the standard transforms."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms
from torchvision.datasets import ImageFolder

from .common import (
    SUBSET_SEED,
    DataError,
    DataInfo,
    Splits,
    carve_val_split,
    check_positive_int,
    check_size,
    draw_aug_seed,
    normalization_constants,
    normalize_uint8,
    relabel,
    resolve_classes,
    split_key,
    stratified_subset,
)
from .policies import AugmentSpec, augment_uint8, cutout_fill

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CENTER_CROP_FRACTION = 0.875  # resize to 256 then crop 224: the usual ImageNet evaluation


def _to_output(uint8: bool) -> list[Callable]:
    # uint8 items are normalized later, on the device (normalize_uint8): a quarter of the bytes to copy.
    if uint8:
        return [transforms.PILToTensor()]
    return [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def train_transform(size: tuple[int, int], uint8: bool = False) -> Callable:
    return transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
                               *_to_output(uint8)])


def val_transform(size: tuple[int, int], uint8: bool = False) -> Callable:
    return transforms.Compose([transforms.Resize(round(max(size) / CENTER_CROP_FRACTION)),
                               transforms.CenterCrop(size), *_to_output(uint8)])


def load_rgb(path: str) -> Image.Image:
    """Decode one image file to RGB; DataError naming the file when it is corrupt or truncated."""
    try:
        with open(path, "rb") as f:
            image = Image.open(f)
            return image.convert("RGB")  # forces the full decode while the file is open
    except Exception as error:  # noqa: BLE001 - PIL reports bad files with many exception types
        raise DataError(
            f"Cannot decode image {path} ({type(error).__name__}: {error}). The file is corrupt or "
            "truncated: replace it or delete it."
        ) from error


class FolderDataset(Dataset):
    """Samples ``(path, label)`` from a class-per-folder tree, decoded and transformed per item.

    Train items get ``train_transform(image_size)``, the others ``val_transform(image_size)``.
    Train items are augmented with torchvision's transforms, which draw from the global RNG;
    for a key ``(index, aug_seed)`` that RNG is forked and seeded with ``aug_seed`` so the
    result is reproducible and the caller's RNG state is untouched. Items are normalized
    float32 images; ``uint8_items()`` gives the same crops as uint8, for loaders that
    normalize on the device with ``mean``/``std``.
    """

    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(self, samples: list[tuple[str, int]], classes: list[str], image_size: tuple[int, int], train: bool,
                 uint8: bool = False, augment: AugmentSpec | None = None):
        self.samples = samples
        self.targets = [label for _, label in samples]
        self.classes = classes
        self.image_size = image_size
        self.train = train
        self.uint8 = uint8
        self.transform = train_transform(image_size, uint8) if train else val_transform(image_size, uint8)
        self.augment = augment if augment is not None and train else AugmentSpec()
        self._crop = train_transform(image_size, uint8=True) if train else None
        self._fill = cutout_fill(IMAGENET_MEAN)
        self._shift, self._scale = normalization_constants(IMAGENET_MEAN, IMAGENET_STD)

    def set_augment(self, spec: AugmentSpec) -> None:
        """Per-image ops after the crop and flip (``policies.AugmentSpec``); a val set ignores them."""
        self.augment = spec if self.train else AugmentSpec()

    def _augmented(self, image: Image.Image, aug_seed: int) -> torch.Tensor:
        """The crop and flip (torchvision's, seeded), then the spec's ops on the uint8 image."""
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(aug_seed)
            crop = self._crop(image)
        crop = augment_uint8(crop, torch.tensor(aug_seed), self.augment, self._fill)
        return crop if self.uint8 else normalize_uint8(crop, self._shift, self._scale)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        index, aug_seed = split_key(key)
        path, label = self.samples[index]
        image = load_rgb(path)
        if self.train and self.augment.active:
            return self._augmented(image, draw_aug_seed() if aug_seed is None else aug_seed), label
        if self.train and aug_seed is not None:
            # devices=[] forks only the CPU generator, the one torchvision's transforms use;
            # seeding default_generator rather than torch.manual_seed leaves CUDA's alone.
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(aug_seed)
                return self.transform(image), label
        return self.transform(image), label

    def subset(self, indices: torch.Tensor, train: bool | None = None) -> FolderDataset:
        """The given samples; the val transform with ``train=False``, else this dataset's."""
        samples = [self.samples[i] for i in torch.as_tensor(indices).tolist()]
        return FolderDataset(samples, self.classes, self.image_size, self.train if train is None else train,
                             self.uint8, self.augment)

    def select_classes(self, order: Sequence[int]) -> FolderDataset:
        """The samples of classes ``order`` (indices), relabelled 0..len(order)-1 in that order."""
        kept, labels = relabel(torch.tensor(self.targets, dtype=torch.int64), order, len(self.classes))
        samples = [(self.samples[i][0], label) for i, label in zip(kept.tolist(), labels.tolist())]
        return FolderDataset(samples, [self.classes[i] for i in order], self.image_size, self.train, self.uint8,
                             self.augment)

    def uint8_items(self) -> FolderDataset:
        """The same samples and draws, with uint8 (3, H, W) images as items (not normalized)."""
        return FolderDataset(self.samples, self.classes, self.image_size, self.train, uint8=True,
                             augment=self.augment)


def _scan(folder: Path, root: Path) -> ImageFolder:
    if not folder.is_dir():
        raise DataError(
            f"Image folder {folder} does not exist. Fix: point data.root at a folder holding train/ and val/, "
            f"each with one sub-folder of images per class (looked in {root})."
        )
    try:
        return ImageFolder(str(folder))
    except FileNotFoundError as error:
        # torchvision's message says which class folder is empty or that there are none.
        raise DataError(
            f"Unusable image folder {folder}: {error} Fix: every class needs its own sub-folder "
            "with at least one image, in both train/ and val/."
        ) from error


def _check_same_classes(train: list[str], val: list[str], root: Path) -> None:
    if train == val:
        return
    only_train = sorted(set(train) - set(val))
    only_val = sorted(set(val) - set(train))
    raise DataError(
        f"Class folders differ between {root / 'train'} and {root / 'val'}: only in train: "
        f"{only_train[:10]}{' ...' if len(only_train) > 10 else ''}; only in val: "
        f"{only_val[:10]}{' ...' if len(only_val) > 10 else ''}. Fix: both need the same class sub-folders."
    )


def _class_folders(folder: Path) -> list[str]:
    """The class names of ``folder`` as ImageFolder orders them, without listing any image."""
    with os.scandir(folder) as entries:
        return sorted(entry.name for entry in entries if entry.is_dir())


def _image_size(value) -> tuple[int, int]:
    return check_size("image_size", value)


def _info(name: str, val_set: FolderDataset, train_size: int | None, val_split_size: int = 0) -> DataInfo:
    return DataInfo(
        name=name,
        num_classes=len(val_set.classes),
        image_size=val_set.image_size,
        class_names=list(val_set.classes),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        train_size=train_size,
        val_size=len(val_set),
        val_split_size=val_split_size,
    )


def _val_set(scan: ImageFolder, size: tuple[int, int], val_subset: int | None, order: list[int] | None,
             ) -> FolderDataset:
    val_set = FolderDataset(scan.samples, scan.classes, size, train=False)
    val_set = val_set if order is None else val_set.select_classes(order)
    if val_subset is None:
        return val_set
    return val_set.subset(stratified_subset(torch.tensor(val_set.targets), val_subset, SUBSET_SEED))


def _needs_root(name: str, root) -> Path:
    if root is None:
        raise DataError(f"Dataset {name!r} needs data.root: a folder holding train/ and val/ class folders.")
    return Path(root).expanduser().resolve()


def build_imagefolder(
    name: str,
    *,
    root=None,
    image_size: int | tuple[int, int] = 224,
    train_subset: int | None = None,
    val_subset: int | None = None,
    val_split: int | None = None,
    download: bool = False,
    val_image_size: int | tuple[int, int] | None = None,
    classes: list[str | int] | None = None,
) -> Splits:
    """Train (RandomResizedCrop + flip) and val (resize to size/0.875 + center crop) sets from ``root``.

    Classes and their order come from the train folder names (sorted). ``val_split`` holds
    that many training images out (class-balanced, fixed, with the val transform) for
    validation; ``train_subset`` (of the training images left) / ``val_subset`` keep a
    class-balanced subset, the same every time (seed ``SUBSET_SEED``). ``download`` is
    accepted and ignored: these datasets cannot be fetched automatically. ``val_image_size``:
    evaluate at another size than the training crops (FixRes, Touvron et al. 2019: train at 160,
    test at 224; None: the same). ``classes`` (folder names or indices) keeps those classes only,
    relabelled 0.. in the order given, before the subsets and the held-out split are drawn.
    """
    root = _needs_root(name, root)
    size = _image_size(image_size)
    eval_size = size if val_image_size is None else _image_size(val_image_size)
    train_subset = check_positive_int("train_subset", train_subset, allow_none=True)
    val_subset = check_positive_int("val_subset", val_subset, allow_none=True)
    val_split = check_positive_int("val_split", val_split, allow_none=True)
    train_scan, val_scan = _scan(root / "train", root), _scan(root / "val", root)
    _check_same_classes(train_scan.classes, val_scan.classes, root)
    order = resolve_classes(classes, train_scan.classes, f"{name} ({root})")
    train_set = FolderDataset(train_scan.samples, train_scan.classes, size, train=True)
    train_set = train_set if order is None else train_set.select_classes(order)
    test_set = _val_set(val_scan, eval_size, val_subset, order)
    train_set, held_out = carve_val_split(train_set, val_split, train_subset, len(train_set.classes), name)
    info = _info(name, test_set, len(train_set), len(held_out) if held_out is not None else 0)
    return Splits(train_set, held_out, test_set, info)


def build_imagefolder_eval(
    name: str,
    *,
    root=None,
    image_size: int | tuple[int, int] = 224,
    val_subset: int | None = None,
    download: bool = False,
    val_image_size: int | tuple[int, int] | None = None,
    classes: list[str | int] | None = None,
) -> tuple[FolderDataset, DataInfo]:
    """The val set of ``build_imagefolder`` alone: ``root/val`` is enough, its folder names are the classes.

    No image under ``root/train`` is listed; when that folder exists its class folder names
    must match val's, since a class missing from val would shift every label after it.
    """
    root = _needs_root(name, root)
    size = _image_size(image_size)
    val_subset = check_positive_int("val_subset", val_subset, allow_none=True)
    val_scan = _scan(root / "val", root)
    if (root / "train").is_dir():
        _check_same_classes(_class_folders(root / "train"), val_scan.classes, root)
    order = resolve_classes(classes, val_scan.classes, f"{name} ({root})")
    test_set = _val_set(val_scan, size if val_image_size is None else _image_size(val_image_size), val_subset,
                        order)
    return test_set, _info(name, test_set, None)
