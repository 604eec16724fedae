"""The dataset registry: a dataset's name, where its builders live, its default stem and normalisation.

Torch-free, as ``attention_registry`` and ``optim_registry`` are, so that the config layer
knows the valid ``data.name`` and ``data.stem`` and checks the data options before torch is
imported; ``config.choices.DATASETS``, the config validation and the builder maps of
``attn_resnet.data`` all read ``DATASETS``, and the builders are imported only when one is
called (``resolve``).

How to add a dataset: one module, one registry line, one conf file. From outside the package,
the registry line becomes an entry point of the group ``attn_resnet.datasets`` naming the
``DatasetEntry`` (or ``data.name=pkg.mod:ENTRY``, or ``register_dataset``), and the conf file
lives in the user's own config folder (``hydra.searchpath``); see docs/extending.md.

1. A module with two builders. ``train(**options) -> data.Splits`` (train, held-out val,
   test, ``DataInfo``) and ``eval(**options) -> (test_set, DataInfo)``, which reads the
   evaluation split alone and takes a subset of ``train``'s keyword options. The keyword
   options are the dataset's ``data.*`` keys; ``data.common.data_info`` builds the
   ``DataInfo``, ``data.common.TensorImageDataset`` holds in-memory uint8 images (and gives
   them the device loader, the crops and the aug seeds of the other datasets). Accept
   ``mean=None, std=None`` to honour ``data.mean`` / ``data.std``.
2. One line in ``DATASETS`` below: ``"mine": DatasetEntry("pkg.mine:build", "pkg.mine:build_eval",
   stem="cifar", mean=(...), std=(...))``.
3. ``conf/data/mine.yaml`` with ``name: mine``, ``stem:`` (the entry's), ``network_type:
   null``, the loader keys (``batch_size``, ``val_batch_size``, ``num_workers``, ...) and the
   builder's options; ``python train.py data=mine`` then trains on it.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from numbers import Real
from typing import Any, Callable, Mapping, Sequence

from .registry import Registry, RegistryError

# The network's first layers (data.stem; ResidualNet's first argument takes these too):
#   imagenet: 7x7/2 conv + 3x3/2 max-pool, for 224x224 inputs
#   cifar:    3x3/1 conv, no max-pool, for 32x32 inputs
STEMS = ("imagenet", "cifar")

# The stems' older names, lower-case -> canonical spelling: ResidualNet's network_type, data.network_type
# in the configs of earlier runs and network_type in every checkpoint's model spec.
NETWORK_TYPES = {"imagenet": "ImageNet", "cifar10": "CIFAR10", "cifar100": "CIFAR100"}
_NETWORK_TYPE_STEMS = {"ImageNet": "imagenet", "CIFAR10": "cifar", "CIFAR100": "cifar"}
# ResidualNet's num_classes when none is given.
DEFAULT_NUM_CLASSES = {"ImageNet": 1000, "CIFAR10": 10, "CIFAR100": 100}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)

# The train and eval transforms of class-folder datasets (data.crop_scale, data.crop_pct), as torchvision
# and timm name them: RandomResizedCrop's area range, and the evaluation's centre crop as a fraction of
# the shorter side it is resized to (0.875: resize to 256, crop 224).
DEFAULT_CROP_SCALE = (0.08, 1.0)
DEFAULT_CROP_PCT = 0.875


@dataclass(frozen=True)
class DatasetEntry:
    """One registered dataset.

    ``train`` / ``eval``: "module:callable" of its builders (see the module docstring).
    ``stem``: the stem its conf file chooses by default. ``mean`` / ``std``: the normalisation
    ``data.mean`` / ``data.std`` default to; None when the builder computes them from the images.
    ``image_files``: its images are decoded from class-folder files one at a time, which
    ``data.loader=dali`` reads (the others are held in memory and suit ``data.loader=device``).
    """

    train: str
    eval: str
    stem: str
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    image_files: bool = False


# name -> DatasetEntry; the conf file is conf/data/<name>.yaml
DATASETS = Registry("dataset", "attn_resnet.datasets", {
    "cifar10": DatasetEntry("attn_resnet.data.cifar:build_cifar10", "attn_resnet.data.cifar:build_cifar10_eval",
                            stem="cifar", mean=CIFAR10_MEAN, std=CIFAR10_STD),
    "cifar100": DatasetEntry("attn_resnet.data.cifar:build_cifar100", "attn_resnet.data.cifar:build_cifar100_eval",
                             stem="cifar", mean=CIFAR100_MEAN, std=CIFAR100_STD),
    "imagenet": DatasetEntry("attn_resnet.data.imagefolder:build_imagenet",
                             "attn_resnet.data.imagefolder:build_imagenet_eval",
                             stem="imagenet", mean=IMAGENET_MEAN, std=IMAGENET_STD, image_files=True),
    "imagefolder": DatasetEntry("attn_resnet.data.imagefolder:build_class_folders",
                                "attn_resnet.data.imagefolder:build_class_folders_eval",
                                stem="imagenet", mean=IMAGENET_MEAN, std=IMAGENET_STD, image_files=True),
    "synthetic": DatasetEntry("attn_resnet.data.synthetic:build_synthetic",
                              "attn_resnet.data.synthetic:build_synthetic_eval", stem="cifar"),
    "digits": DatasetEntry("attn_resnet.data.digits:build_digits", "attn_resnet.data.digits:build_digits_eval",
                           stem="cifar"),
})


def register_dataset(name: str, dataset: DatasetEntry, *, replace: bool = False) -> None:
    """Register a ``DatasetEntry`` under ``name`` (``data.name=<name>``; its conf file gives the loader keys)."""
    if not isinstance(dataset, DatasetEntry):
        raise RegistryError(f"register_dataset({name!r}, ...) takes a DatasetEntry (its builders as "
                            f"'module:callable', its stem and normalisation), not {type(dataset).__name__}.")
    DATASETS.register(name, dataset, replace=replace)


def dataset_names() -> tuple[str, ...]:
    """Every dataset known by name: the built-in ones, those registered, those of installed packages' entry points."""
    return DATASETS.names()


def entry(name: str) -> DatasetEntry:
    """The registration of ``name`` (a name, an entry point's name or an import path to a ``DatasetEntry``);
    RegistryError listing the valid names when there is none."""
    value = DATASETS.load(name)
    if not isinstance(value, DatasetEntry):
        raise RegistryError(f"The dataset {name!r} ({DATASETS.find(name).target}) is a {type(value).__name__}, not a "
                            f"DatasetEntry: a dataset from outside the package is declared as the built-in ones are, "
                            f"DatasetEntry(train='pkg.mod:build', eval='pkg.mod:build_eval', stem='cifar', mean=..., "
                            f"std=...) (see docs/extending.md).")
    return value


def known_entry(name: Any) -> DatasetEntry | None:
    """``entry(name)``, or None where ``name`` is no dataset (or one that cannot be imported here)."""
    try:
        return entry(name) if isinstance(name, str) and DATASETS.find(name) is not None else None
    except RegistryError:
        return None


def resolve(name: str, builder: str = "train") -> Callable[..., Any]:
    """Import and return dataset ``name``'s ``builder`` ("train" or "eval")."""
    module_name, _, attribute = getattr(entry(name), builder).partition(":")
    return getattr(importlib.import_module(module_name), attribute)


# ------------------------------------------------------------------------- stems
def stem_of(value: Any) -> str | None:
    """The stem kind that ``value`` names: a stem kind or an older network type (any case); None if neither."""
    if not isinstance(value, str):
        return None
    key = value.lower()
    if key in STEMS:
        return key
    return _NETWORK_TYPE_STEMS[NETWORK_TYPES[key]] if key in NETWORK_TYPES else None


def network_type_of(stem: str, num_classes: int | None = None) -> str:
    """The stem's older name, as model specs record it: "ImageNet", or for the CIFAR stem "CIFAR100" with 100
    classes and "CIFAR10" otherwise (the two differ only in ResidualNet's default class count)."""
    kind = stem_of(stem)
    if kind is None:
        raise RegistryError(f"Unknown stem {stem!r}. Valid choices: {', '.join(STEMS)} (or the older "
                            f"{', '.join(NETWORK_TYPES.values())}).")
    if kind == "imagenet":
        return "ImageNet"
    return "CIFAR100" if num_classes == 100 else "CIFAR10"


def data_stem(data: Mapping[str, Any]) -> str:
    """The stem a ``data`` config chooses: ``data.stem``, or the one its older spelling ``data.network_type`` names.

    ``data.network_type`` (ImageNet | CIFAR10 | CIFAR100: the configs of earlier runs, and their command
    lines) sets the stem when ``data.stem`` is absent, the same, or the dataset's default (its conf file's
    value, left as it was). A ``data.stem`` set to another stem than that default and than the one
    ``data.network_type`` names is a RegistryError: the config then asks for two stems.
    """
    stem, alias = data.get("stem"), data.get("network_type")
    if stem is not None and (not isinstance(stem, str) or stem.lower() not in STEMS):
        raise RegistryError(f"Invalid config value data.stem={stem!r}. Valid choices: {', '.join(STEMS)} "
                            f"(imagenet: 7x7/2 conv + max-pool, for 224x224 inputs; cifar: 3x3 conv without "
                            f"max-pool, for 32x32 inputs). Fix it on the command line (e.g. data.stem=imagenet) "
                            f"or in the config file.")
    stem = None if stem is None else stem.lower()
    registered = known_entry(data.get("name"))
    default = registered.stem if registered is not None else None
    if alias is None:
        if stem is None and default is None:
            raise RegistryError("The data config chooses no stem: set data.stem to imagenet or cifar.")
        return stem or default
    aliased = stem_of(alias) if str(alias).lower() in NETWORK_TYPES else None
    if aliased is None:
        raise RegistryError(f"Invalid config value data.network_type={alias!r}: it is the older spelling of "
                            f"data.stem and takes {', '.join(NETWORK_TYPES.values())}. Set data.stem="
                            f"{' or data.stem='.join(STEMS)} instead.")
    if stem is not None and stem not in (aliased, default):
        raise different_stems(stem, alias)
    return aliased


def different_stems(stem: str, alias: str) -> RegistryError:
    """The error for a ``data.stem`` and a ``data.network_type`` (its older spelling) that name two stems."""
    return RegistryError(f"data.stem={stem} and data.network_type={alias} choose different stems "
                         f"(data.network_type is the older spelling of data.stem: {alias} means "
                         f"data.stem={stem_of(alias)}). Give one of them, e.g. data.stem={stem}.")


def normalize_data_config(data: Mapping[str, Any]) -> dict:
    """``data`` with its stem resolved (``data_stem``) into ``stem`` and the older ``network_type`` dropped:
    the form runs record and compare, whichever spelling a config used."""
    normalized = {key: value for key, value in data.items() if key != "network_type"}
    normalized["stem"] = data_stem(data)
    return normalized


# ------------------------------------------------------------ normalisation and crops
def _numbers(value: Any) -> list | None:
    """``value`` as a list of real numbers (not bools), or None when it is not a list of them."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        try:  # an OmegaConf ListConfig is not a Sequence
            value = list(value)
        except TypeError:
            return None
    items = list(value)
    if not all(isinstance(item, Real) and not isinstance(item, bool) and math.isfinite(item) for item in items):
        return None
    return items


def check_normalization(mean: Any, std: Any, channels: int = 3) -> tuple[tuple[float, ...] | None,
                                                                          tuple[float, ...] | None]:
    """``(mean, std)`` of ``data.mean`` / ``data.std`` as float tuples (None stays None: the dataset's default);
    RegistryError, in one paragraph, for a wrong length, a non-number or a std that is not positive."""
    checked = []
    for key, value in (("mean", mean), ("std", std)):
        if value is None:
            checked.append(None)
            continue
        numbers = _numbers(value)
        if numbers is None or len(numbers) != channels:
            raise RegistryError(
                f"Invalid config value data.{key}={value!r}: it must be a list of {channels} numbers, one per "
                f"RGB channel, in the 0..1 scale of the images (e.g. ImageNet's: data.{key}="
                f"[{','.join(map(str, IMAGENET_MEAN if key == 'mean' else IMAGENET_STD))}]), or null for the "
                f"dataset's own.")
        if key == "std" and not all(number > 0 for number in numbers):
            raise RegistryError(f"Invalid config value data.std={value!r}: every channel's std must be positive, "
                                f"since the images are divided by it; null takes the dataset's own.")
        checked.append(tuple(float(number) for number in numbers))
    return checked[0], checked[1]


def check_crop(crop_scale: Any, crop_pct: Any) -> tuple[tuple[float, float], float]:
    """``(crop_scale, crop_pct)`` of ``data.crop_scale`` / ``data.crop_pct`` as floats; RegistryError, in one
    paragraph, for a scale range that is not ``0 < low <= high <= 1`` or a crop_pct outside (0, 1]."""
    numbers = _numbers(crop_scale)
    if numbers is None or len(numbers) != 2 or not 0 < numbers[0] <= numbers[1] <= 1:
        raise RegistryError(
            f"Invalid config value data.crop_scale={crop_scale!r}: it must be [low, high] with 0 < low <= high <= 1, "
            f"the range of the area fraction of each training image that RandomResizedCrop keeps (torchvision's "
            f"and timm's default: [{DEFAULT_CROP_SCALE[0]}, {DEFAULT_CROP_SCALE[1]}]).")
    if isinstance(crop_pct, bool) or not isinstance(crop_pct, Real) or not 0 < crop_pct <= 1:
        raise RegistryError(
            f"Invalid config value data.crop_pct={crop_pct!r}: it must be a number in (0, 1], the evaluation's "
            f"centre crop as a fraction of the side the image is first resized to ({DEFAULT_CROP_PCT}: resize to "
            f"256, crop 224; 1.0: no border cropped).")
    return (float(numbers[0]), float(numbers[1])), float(crop_pct)
