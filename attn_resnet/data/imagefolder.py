"""ImageNet-style folders (``root/train/<class>/*``, ``root/val/<class>/*``) with the standard transforms."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms
from torchvision.datasets import ImageFolder

from .common import DataError, DataInfo, check_positive_int, split_key, stratified_subset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CENTER_CROP_FRACTION = 0.875  # resize to 256 then crop 224: the usual ImageNet evaluation
SUBSET_SEED = 0


def train_transform(size: tuple[int, int]) -> Callable:
    return transforms.Compose([
        transforms.RandomResizedCrop(size),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def val_transform(size: tuple[int, int]) -> Callable:
    return transforms.Compose([
        transforms.Resize(round(max(size) / CENTER_CROP_FRACTION)),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


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

    Train items are augmented with torchvision's transforms, which draw from the global RNG;
    for a key ``(index, aug_seed)`` that RNG is forked and seeded with ``aug_seed`` so the
    result is reproducible and the caller's RNG state is untouched.
    """

    def __init__(self, samples: list[tuple[str, int]], classes: list[str], transform: Callable, train: bool):
        self.samples = samples
        self.targets = [label for _, label in samples]
        self.classes = classes
        self.transform = transform
        self.train = train

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        index, aug_seed = split_key(key)
        path, label = self.samples[index]
        image = load_rgb(path)
        if self.train and aug_seed is not None:
            # devices=[] forks only the CPU generator, the one torchvision's transforms use;
            # seeding default_generator rather than torch.manual_seed leaves CUDA's alone.
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(aug_seed)
                return self.transform(image), label
        return self.transform(image), label


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


def _check_same_classes(train: ImageFolder, val: ImageFolder, root: Path) -> None:
    if train.classes == val.classes:
        return
    only_train = sorted(set(train.classes) - set(val.classes))
    only_val = sorted(set(val.classes) - set(train.classes))
    raise DataError(
        f"Class folders differ between {root / 'train'} and {root / 'val'}: only in train: "
        f"{only_train[:10]}{' ...' if len(only_train) > 10 else ''}; only in val: "
        f"{only_val[:10]}{' ...' if len(only_val) > 10 else ''}. Fix: both need the same class sub-folders."
    )


def _image_size(value) -> tuple[int, int]:
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        return check_positive_int("image_size", value[0]), check_positive_int("image_size", value[1])
    size = check_positive_int("image_size", value)
    return size, size


def build_imagefolder(
    name: str,
    *,
    root=None,
    image_size: int | tuple[int, int] = 224,
    train_subset: int | None = None,
    val_subset: int | None = None,
    download: bool = False,
) -> tuple[FolderDataset, FolderDataset, DataInfo]:
    """Train (RandomResizedCrop + flip) and val (resize to size/0.875 + center crop) sets from ``root``.

    Classes and their order come from the train folder names (sorted). ``train_subset`` /
    ``val_subset`` keep a class-balanced subset, the same every time (seed ``SUBSET_SEED``).
    ``download`` is accepted and ignored: these datasets cannot be fetched automatically.
    """
    if root is None:
        raise DataError(f"Dataset {name!r} needs data.root: a folder holding train/ and val/ class folders.")
    size = _image_size(image_size)
    train_subset = check_positive_int("train_subset", train_subset, allow_none=True)
    val_subset = check_positive_int("val_subset", val_subset, allow_none=True)
    root = Path(root).expanduser().resolve()
    train_scan, val_scan = _scan(root / "train", root), _scan(root / "val", root)
    _check_same_classes(train_scan, val_scan, root)

    def pick(scan: ImageFolder, subset: int | None) -> list[tuple[str, int]]:
        keep = stratified_subset(torch.tensor(scan.targets), subset, SUBSET_SEED).tolist()
        return [scan.samples[i] for i in keep]

    train_set = FolderDataset(pick(train_scan, train_subset), train_scan.classes, train_transform(size), True)
    val_set = FolderDataset(pick(val_scan, val_subset), val_scan.classes, val_transform(size), False)
    info = DataInfo(
        name=name,
        num_classes=len(train_scan.classes),
        image_size=size,
        class_names=list(train_scan.classes),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        train_size=len(train_set),
        val_size=len(val_set),
    )
    return train_set, val_set, info
