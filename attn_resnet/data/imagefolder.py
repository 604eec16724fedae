"""ImageNet-style folders (``root/train/<class>/*``, ``root/val/<class>/*``) with the standard transforms.

Train: RandomResizedCrop (area fraction in ``crop_scale``) + flip; val: resize to the crop
size / ``crop_pct``, then a centre crop; both normalized with ``mean`` / ``std`` (ImageNet's by
default). The options are ``data.crop_scale``, ``data.crop_pct``, ``data.mean`` and ``data.std``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms
from torchvision.datasets import ImageFolder

from ..dataset_registry import (  # noqa: F401 (the ImageNet statistics re-exported)
    DEFAULT_CROP_PCT,
    DEFAULT_CROP_SCALE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    RegistryError,
    check_crop,
)
from .common import (
    SUBSET_SEED,
    DataError,
    DataInfo,
    Splits,
    carve_val_split,
    check_positive_int,
    check_size,
    data_info,
    draw_aug_seed,
    normalization,
    normalization_constants,
    normalize_uint8,
    relabel,
    resolve_classes,
    split_key,
    stratified_subset,
)
from .policies import AugmentSpec, augment_uint8, cutout_fill


def _to_output(uint8: bool, mean: Sequence[float], std: Sequence[float]) -> list[Callable]:
    # uint8 items are normalized later, on the device (normalize_uint8): a quarter of the bytes to copy.
    if uint8:
        return [transforms.PILToTensor()]
    return [transforms.ToTensor(), transforms.Normalize(mean, std)]


def train_transform(size: tuple[int, int], uint8: bool = False, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD, crop_scale: tuple[float, float] = DEFAULT_CROP_SCALE,
                    ) -> Callable:
    """RandomResizedCrop to ``size`` keeping an area fraction in ``crop_scale``, a random flip, then a tensor."""
    return transforms.Compose([transforms.RandomResizedCrop(size, scale=tuple(crop_scale)),
                               transforms.RandomHorizontalFlip(), *_to_output(uint8, mean, std)])


def eval_resize(size: tuple[int, int], crop_pct: float = DEFAULT_CROP_PCT) -> int:
    """The shorter side an evaluation image is resized to before its centre ``size`` is cropped."""
    return round(max(size) / crop_pct)


def val_transform(size: tuple[int, int], uint8: bool = False, mean: Sequence[float] = IMAGENET_MEAN,
                  std: Sequence[float] = IMAGENET_STD, crop_pct: float = DEFAULT_CROP_PCT) -> Callable:
    """Resize the shorter side to ``max(size) / crop_pct``, crop the centre ``size``, then a tensor."""
    return transforms.Compose([transforms.Resize(eval_resize(size, crop_pct)),
                               transforms.CenterCrop(size), *_to_output(uint8, mean, std)])


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

    Train items get ``train_transform(image_size, crop_scale=crop_scale)``, the others
    ``val_transform(image_size, crop_pct=crop_pct)``. Train items are augmented with
    torchvision's transforms, which draw from the global RNG; for a key ``(index, aug_seed)``
    that RNG is forked and seeded with ``aug_seed`` so the result is reproducible and the
    caller's RNG state is untouched. Items are float32 images normalized with ``mean`` / ``std``;
    ``uint8_items()`` gives the same crops as uint8, for loaders that normalize on the device
    with ``mean``/``std``, and the DALI loader reads the four settings from here too.
    """

    def __init__(self, samples: list[tuple[str, int]], classes: list[str], image_size: tuple[int, int], train: bool,
                 uint8: bool = False, augment: AugmentSpec | None = None, *,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 crop_scale: tuple[float, float] = DEFAULT_CROP_SCALE, crop_pct: float = DEFAULT_CROP_PCT):
        self.samples = samples
        self.targets = [label for _, label in samples]
        self.classes = classes
        self.image_size = image_size
        self.train = train
        self.uint8 = uint8
        self.mean, self.std = tuple(mean), tuple(std)
        self.crop_scale, self.crop_pct = tuple(crop_scale), crop_pct
        self.transform = (train_transform(image_size, uint8, self.mean, self.std, self.crop_scale) if train
                          else val_transform(image_size, uint8, self.mean, self.std, crop_pct))
        self.augment = augment if augment is not None and train else AugmentSpec()
        self._crop = train_transform(image_size, True, crop_scale=self.crop_scale) if train else None
        self._fill = cutout_fill(self.mean)
        self._shift, self._scale = normalization_constants(self.mean, self.std)

    def _derived(self, samples: list[tuple[str, int]], classes: list[str], train: bool, uint8: bool,
                 ) -> FolderDataset:
        """Another set of samples with this dataset's image size, augmentation, normalisation and crops."""
        return FolderDataset(samples, classes, self.image_size, train, uint8, self.augment, mean=self.mean,
                             std=self.std, crop_scale=self.crop_scale, crop_pct=self.crop_pct)

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
        return self._derived(samples, self.classes, self.train if train is None else train, self.uint8)

    def select_classes(self, order: Sequence[int]) -> FolderDataset:
        """The samples of classes ``order`` (indices), relabelled 0..len(order)-1 in that order."""
        kept, labels = relabel(torch.tensor(self.targets, dtype=torch.int64), order, len(self.classes))
        samples = [(self.samples[i][0], label) for i, label in zip(kept.tolist(), labels.tolist())]
        return self._derived(samples, [self.classes[i] for i in order], self.train, self.uint8)

    def uint8_items(self) -> FolderDataset:
        """The same samples and draws, with uint8 (3, H, W) images as items (not normalized)."""
        return self._derived(self.samples, self.classes, self.train, uint8=True)


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


def _transforms(name: str, mean, std, crop_scale, crop_pct) -> dict:
    """The ``FolderDataset`` keywords of options ``mean``, ``std``, ``crop_scale`` and ``crop_pct``, checked."""
    mean, std = normalization(name, mean, std)
    try:
        crop_scale, crop_pct = check_crop(crop_scale, crop_pct)
    except RegistryError as error:
        raise DataError(str(error)) from None
    return dict(mean=mean, std=std, crop_scale=crop_scale, crop_pct=crop_pct)


def _val_set(scan: ImageFolder, size: tuple[int, int], val_subset: int | None, order: list[int] | None,
             transform: dict) -> FolderDataset:
    val_set = FolderDataset(scan.samples, scan.classes, size, train=False, **transform)
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
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
    crop_scale: tuple[float, float] = DEFAULT_CROP_SCALE,
    crop_pct: float = DEFAULT_CROP_PCT,
) -> Splits:
    """Train (RandomResizedCrop + flip) and val (resize to size/crop_pct + center crop) sets from ``root``.

    Classes and their order come from the train folder names (sorted). ``val_split`` holds
    that many training images out (class-balanced, fixed, with the val transform) for
    validation; ``train_subset`` (of the training images left) / ``val_subset`` keep a
    class-balanced subset, the same every time (seed ``SUBSET_SEED``). ``download`` is
    accepted and ignored: these datasets cannot be fetched automatically. ``val_image_size``:
    evaluate at another size than the training crops (FixRes, Touvron et al. 2019: train at 160,
    test at 224; None: the same). ``classes`` (folder names or indices) keeps those classes only,
    relabelled 0.. in the order given, before the subsets and the held-out split are drawn.
    ``mean`` / ``std`` (None: the dataset's registered ones, ImageNet's), ``crop_scale`` (the
    RandomResizedCrop's area range) and ``crop_pct`` (the val centre crop's fraction of the
    resized side) set the transforms.
    """
    root = _needs_root(name, root)
    transform = _transforms(name, mean, std, crop_scale, crop_pct)
    size = _image_size(image_size)
    eval_size = size if val_image_size is None else _image_size(val_image_size)
    train_subset = check_positive_int("train_subset", train_subset, allow_none=True)
    val_subset = check_positive_int("val_subset", val_subset, allow_none=True)
    val_split = check_positive_int("val_split", val_split, allow_none=True)
    train_scan, val_scan = _scan(root / "train", root), _scan(root / "val", root)
    _check_same_classes(train_scan.classes, val_scan.classes, root)
    order = resolve_classes(classes, train_scan.classes, f"{name} ({root})")
    train_set = FolderDataset(train_scan.samples, train_scan.classes, size, train=True, **transform)
    train_set = train_set if order is None else train_set.select_classes(order)
    test_set = _val_set(val_scan, eval_size, val_subset, order, transform)
    train_set, held_out = carve_val_split(train_set, val_split, train_subset, len(train_set.classes), name)
    info = data_info(name, test_set, test_set.image_size, train_set, held_out)
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
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
    crop_scale: tuple[float, float] = DEFAULT_CROP_SCALE,
    crop_pct: float = DEFAULT_CROP_PCT,
) -> tuple[FolderDataset, DataInfo]:
    """The val set of ``build_imagefolder`` alone: ``root/val`` is enough, its folder names are the classes.

    No image under ``root/train`` is listed; when that folder exists its class folder names
    must match val's, since a class missing from val would shift every label after it.
    """
    root = _needs_root(name, root)
    transform = _transforms(name, mean, std, crop_scale, crop_pct)  # crop_scale: checked, used by train only
    size = _image_size(image_size)
    val_subset = check_positive_int("val_subset", val_subset, allow_none=True)
    val_scan = _scan(root / "val", root)
    if (root / "train").is_dir():
        _check_same_classes(_class_folders(root / "train"), val_scan.classes, root)
    order = resolve_classes(classes, val_scan.classes, f"{name} ({root})")
    test_set = _val_set(val_scan, size if val_image_size is None else _image_size(val_image_size), val_subset,
                        order, transform)
    return test_set, data_info(name, test_set, test_set.image_size)


# The registry's builders (dataset_registry.DATASETS).
build_imagenet = partial(build_imagefolder, "imagenet")
build_imagenet_eval = partial(build_imagefolder_eval, "imagenet")
build_class_folders = partial(build_imagefolder, "imagefolder")
build_class_folders_eval = partial(build_imagefolder_eval, "imagefolder")
