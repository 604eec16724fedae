"""CIFAR-10 / CIFAR-100 read from the official Python pickle layout into uint8 tensors."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from .common import (
    SUBSET_SEED,
    DataError,
    DataInfo,
    Splits,
    TensorImageDataset,
    carve_val_split,
    check_positive_int,
    check_size,
    data_info,
    normalization,
    resolve_classes,
    stratified_subset,
)


@dataclass(frozen=True)
class CifarSpec:
    title: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    names_key: str
    labels_key: str
    archive: str
    url: str
    md5: str  # of the official archive; the extracted files are checked by structure instead

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train_files, *self.test_files, self.meta_file)


CIFAR_SPECS = {
    "cifar10": CifarSpec(
        title="CIFAR-10",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        meta_file="batches.meta",
        names_key="label_names",
        labels_key="labels",
        archive="cifar-10-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
    ),
    "cifar100": CifarSpec(
        title="CIFAR-100",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        meta_file="meta",
        names_key="fine_label_names",
        labels_key="fine_labels",
        archive="cifar-100-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
    ),
}

CIFAR_PAD = 4


def _how_to_fix(spec: CifarSpec, root: Path) -> str:
    return (
        f"Fix: extract the official {spec.archive} ({spec.url}) under {root} so that "
        f"{root / spec.folder} holds {', '.join(spec.files)}; or set data.download=true "
        "when a network is available."
    )


def _read_pickle(path: Path, spec: CifarSpec, root: Path) -> dict[str, object]:
    """Unpickle one CIFAR file into a dict with str keys (the release uses bytes keys)."""
    if not path.is_file():
        where = "" if path.parent.is_dir() else f" (the folder {path.parent} does not exist either)"
        raise DataError(
            f"{spec.title} file {path.name!r} is missing: looked for {path}{where}. {_how_to_fix(spec, root)}"
        )
    try:
        with open(path, "rb") as f:
            content = pickle.load(f, encoding="bytes")
    except Exception as error:  # noqa: BLE001 - any failure means the file is unusable
        raise DataError(
            f"{spec.title} file {path} is corrupt or truncated and cannot be unpickled "
            f"({type(error).__name__}: {error}). {_how_to_fix(spec, root)}"
        ) from error
    if not isinstance(content, dict):
        raise DataError(f"{spec.title} file {path} holds a {type(content).__name__}, expected a dict.")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in content.items()}


def _read_class_names(path: Path, spec: CifarSpec, root: Path) -> list[str]:
    names = _read_pickle(path, spec, root).get(spec.names_key)
    if not isinstance(names, (list, tuple)) or not names:
        raise DataError(f"{spec.title} file {path} has no list of class names under b'{spec.names_key}'.")
    return [name.decode("utf-8") if isinstance(name, bytes) else str(name) for name in names]


def _read_batch(path: Path, spec: CifarSpec, root: Path, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One data file -> (uint8 images (N, 3, 32, 32), int64 labels (N,)), checked for consistency."""
    content = _read_pickle(path, spec, root)
    if "data" not in content or spec.labels_key not in content:
        raise DataError(
            f"{spec.title} file {path} lacks b'data' or b'{spec.labels_key}'; its keys: {sorted(content)}."
        )
    data = np.asarray(content["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[0] == 0 or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"{spec.title} file {path}: b'data' must be a non-empty uint8 array of N x 3072 "
            f"(R, G, B planes of 32x32), got {data.dtype} {data.shape}."
        )
    labels = np.asarray(content[spec.labels_key])
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{spec.title} file {path}: b'{spec.labels_key}' must be a list of ints.")
    if len(labels) != len(data):
        raise DataError(f"{spec.title} file {path}: {len(data)} images but {len(labels)} labels.")
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if len(bad):
        raise DataError(
            f"{spec.title} file {path}: label {int(bad[0])} is outside 0..{num_classes - 1} "
            f"({num_classes} classes in {spec.meta_file})."
        )
    # Rows are R, G, B planes of 1024 pixels each, row-major: exactly (3, 32, 32).
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32).copy())
    return images, torch.from_numpy(labels.astype(np.int64))


def _download(spec: CifarSpec, root: Path) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(spec.url, download_root=str(root), md5=spec.md5)
    except Exception as error:  # noqa: BLE001 - no network, a proxy, a bad archive: all end here
        raise DataError(
            f"Could not download {spec.archive} from {spec.url} ({type(error).__name__}: {error}). "
            f"Download it elsewhere and extract it under {root} so that {root / spec.folder} holds "
            f"{', '.join(spec.files)}."
        ) from error


def load_cifar(name: str, root, train: bool, download: bool = False, mean=None, std=None) -> TensorImageDataset:
    """The full train or test split of ``name`` ("cifar10"/"cifar100") under ``root``.

    Reads only that split's files and the class names; ``download`` fetches the release
    when one of those is missing. ``mean`` / ``std``: the normalisation (None: the registered one).
    """
    mean, std = normalization(name, mean, std)
    spec = CIFAR_SPECS[name]
    root = Path(root).expanduser().resolve()
    folder = root / spec.folder
    files = spec.train_files if train else spec.test_files
    if download and not all((folder / file).is_file() for file in (*files, spec.meta_file)):
        _download(spec, root)
    classes = _read_class_names(folder / spec.meta_file, spec, root)
    batches = [_read_batch(folder / file, spec, root, len(classes)) for file in files]
    images = torch.cat([images for images, _ in batches])
    labels = torch.cat([labels for _, labels in batches])
    return TensorImageDataset(images, labels, classes, mean, std, train, pad=CIFAR_PAD, flip=train)


def _info(name: str, test_set: TensorImageDataset, train_set=None, held_out=None) -> DataInfo:
    return data_info(name, test_set, test_set.output_size or (32, 32), train_set, held_out)


def _narrowed(dataset: TensorImageDataset, order: list[int] | None, size: tuple[int, int] | None):
    """``dataset`` kept to the classes ``order`` (when given), its images resized to ``size`` on the way out."""
    dataset = dataset if order is None else dataset.select_classes(order)
    dataset.set_output_size(size)
    return dataset


def _test_set(name: str, root, download: bool, val_subset, classes, image_size, mean, std) -> TensorImageDataset:
    val_subset = check_positive_int("val_subset", val_subset, allow_none=True)
    size = check_size("image_size", image_size, allow_none=True)
    test_set = load_cifar(name, root, train=False, download=download, mean=mean, std=std)
    test_set = _narrowed(test_set, resolve_classes(classes, test_set.classes, CIFAR_SPECS[name].title), size)
    if val_subset is not None:
        test_set = test_set.subset(stratified_subset(test_set.labels, val_subset, SUBSET_SEED))
    return test_set


def build_cifar(
    name: str,
    *,
    root="data",
    download: bool = False,
    train_subset: int | None = None,
    val_subset: int | None = None,
    val_split: int | None = None,
    classes: list[str | int] | None = None,
    image_size: int | tuple[int, int] | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
) -> Splits:
    """CIFAR train (pad-4 crop + flip) and test sets; ``root`` holds the extracted release folder.

    ``classes`` (names or indices) keeps those classes only, relabelled 0.. in the order given,
    before anything else is drawn. ``val_split`` holds that many training images out
    (class-balanced, fixed, not augmented) as a validation split. ``train_subset`` (of the
    training images left) / ``val_subset`` (of the test set) keep a class-balanced subset of
    that many samples, the same one every time (fixed seed ``SUBSET_SEED``). ``image_size``:
    the images reach the model resized to it (after the 32x32 augmentation, where they are
    normalized, on the device with the device loaders); None keeps 32x32. ``mean`` / ``std``:
    the normalisation, per RGB channel (None: the dataset's registered one).
    """
    train_subset = check_positive_int("train_subset", train_subset, allow_none=True)
    val_subset = check_positive_int("val_subset", val_subset, allow_none=True)
    val_split = check_positive_int("val_split", val_split, allow_none=True)
    size = check_size("image_size", image_size, allow_none=True)
    test_set = _test_set(name, root, download, val_subset, classes, size, mean, std)
    train_set = load_cifar(name, root, train=True, download=download, mean=mean, std=std)
    train_set = _narrowed(train_set, resolve_classes(classes, train_set.classes, CIFAR_SPECS[name].title), size)
    train_set, held_out = carve_val_split(train_set, val_split, train_subset, len(train_set.classes), name)
    return Splits(train_set, held_out, test_set, _info(name, test_set, train_set, held_out))


def build_cifar_eval(
    name: str, *, root="data", download: bool = False, val_subset: int | None = None,
    classes: list[str | int] | None = None, image_size: int | tuple[int, int] | None = None,
    mean: tuple[float, float, float] | None = None, std: tuple[float, float, float] | None = None,
) -> tuple[TensorImageDataset, DataInfo]:
    """The CIFAR test set alone (options as in ``build_cifar``): reads the test batch and the meta file."""
    test_set = _test_set(name, root, download, val_subset, classes, image_size, mean, std)
    return test_set, _info(name, test_set)


# The registry's builders (dataset_registry.DATASETS).
build_cifar10 = partial(build_cifar, "cifar10")
build_cifar10_eval = partial(build_cifar_eval, "cifar10")
build_cifar100 = partial(build_cifar, "cifar100")
build_cifar100_eval = partial(build_cifar_eval, "cifar100")
