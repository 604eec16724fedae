"""Readable worker errors, evaluation without the train split, the held-out validation split and
the worker count, on tiny data in the real on-disk layouts."""

import inspect
import multiprocessing
import shutil
import warnings

import numpy as np
import pytest
import torch
from helpers import build_datasets, write_cifar10, write_imagefolder
from torch._utils import ExceptionWrapper
from torch.utils.data import Dataset

import attn_resnet.data.loader as loader_module
from attn_resnet.data import (
    DATASET_BUILDERS,
    DATASET_CHOICES,
    EVAL_BUILDERS,
    DataError,
    build_eval_dataset,
    build_loader,
    build_splits,
    dataset_options,
    iterate_batches,
    resolve_num_workers,
    worker_error,
)
from attn_resnet.data.common import TensorImageDataset
from attn_resnet.data.imagefolder import FolderDataset
from attn_resnet.data.synthetic import SyntheticDataset

WORKER_HINT = "Run with data.num_workers=0 to see the full traceback."


# ---------------------------------------------------------------- errors from worker processes

class FailingDataset(Dataset):
    """Item 3 raises ``error`` (chained to a KeyError, as errors inside library code often are)."""

    def __init__(self, error: BaseException):
        self.error = error

    def __len__(self) -> int:
        return 6

    def __getitem__(self, key):
        index = key[0] if isinstance(key, (tuple, list)) else key
        if index == 3:
            try:
                {}["missing"]
            except KeyError as cause:
                raise self.error from cause
        return torch.zeros(2), index


class TwoArgumentError(Exception):
    """Cannot be rebuilt from one message, so torch re-raises it as a RuntimeError."""

    def __init__(self, code: int, detail: str):
        super().__init__(f"code {code}: {detail}")


def first_error(loader) -> DataError | Exception:
    with pytest.raises(Exception) as caught:
        for _ in iterate_batches(loader):
            pass
    return caught.value


@pytest.fixture
def corrupt_tree(tmp_path):
    root = write_imagefolder(tmp_path / "images", classes=3, per_class=4, size=16)
    bad = root / "val" / "class_1" / "0.png"
    bad.write_bytes(b"not a png at all")
    return root, bad


@pytest.mark.parametrize("num_workers", [2, 0])
def test_corrupt_image_error_names_the_file_without_a_traceback(corrupt_tree, num_workers):
    root, bad = corrupt_tree
    _, val_set, _ = build_datasets("imagefolder", root=root, image_size=8)
    loader = build_loader(val_set, batch_size=2, train=False, num_workers=num_workers, persistent_workers=False)
    error = first_error(loader)
    message = str(error)
    assert type(error) is DataError
    assert message.startswith(f"Cannot decode image {bad} (")
    assert message.endswith("The file is corrupt or truncated: replace it or delete it.")
    assert "Traceback" not in message and "Caught" not in message and WORKER_HINT not in message
    # The workers stop with the failed pass, not whenever the garbage collector frees its iterator.
    assert multiprocessing.active_children() == []


def test_serial_errors_pass_through_unchanged():
    original = ValueError("bad item")
    loader = build_loader(FailingDataset(original), batch_size=2, train=False, num_workers=0)
    assert first_error(loader) is original


@pytest.mark.parametrize(
    "error, expected",
    [
        (ValueError("first line\n  second line, indented"),
         "ValueError: first line\n  second line, indented."),
        (KeyError("weights"), "KeyError: 'weights'."),
        (ZeroDivisionError(), "ZeroDivisionError."),
        (OSError("disk gone!"), "OSError: disk gone!"),
        (TwoArgumentError(7, "quota exceeded"), "TwoArgumentError: code 7: quota exceeded."),
    ],
    ids=["multi-line", "KeyError", "no message", "own punctuation", "not rebuildable"],
)
def test_other_worker_errors_keep_type_and_message(error, expected):
    loader = build_loader(FailingDataset(error), batch_size=2, train=False, num_workers=1, persistent_workers=False)
    caught = first_error(loader)
    assert type(caught) is DataError
    assert str(caught) == f"Error in a data loader worker: {expected} {WORKER_HINT}"


def rewrapped(error: BaseException, where: str = "in DataLoader worker process 0") -> BaseException:
    """``error`` as torch re-raises it in the main process, built without starting a worker."""
    try:
        try:
            raise RuntimeError("an earlier failure")
        except RuntimeError as cause:
            raise error from cause
    except BaseException:  # noqa: BLE001 - the wrapper takes whatever was raised
        wrapper = ExceptionWrapper(where=where)
    try:
        wrapper.reraise()
    except BaseException as reraised:  # noqa: BLE001
        return reraised
    raise AssertionError("reraise() returned")


def test_worker_error_parsing_survives_quoted_tracebacks_and_pin_memory():
    quoted = "Bad record:\nTraceback (most recent call last):\n  File \"x.py\", line 1\nValueError: old"
    parsed = worker_error(rewrapped(DataError(quoted)))
    assert type(parsed) is DataError and str(parsed) == quoted

    parsed = worker_error(rewrapped(DataError("Cannot pin"), where="in pin memory thread for device 0"))
    assert str(parsed) == "Cannot pin"

    assert worker_error(ValueError("Caught nothing here")) is None
    assert worker_error(DataError("Cannot decode image /x.png")) is None


# ---------------------------------------------------------------- evaluation without the train split

def test_imagefolder_eval_needs_only_the_val_folder(tmp_path):
    root = write_imagefolder(tmp_path, classes=3, per_class=6, size=16)
    _, full_val, full_info = build_datasets("imagenet", root=root, image_size=8, val_subset=4)
    shutil.rmtree(root / "train")
    with pytest.raises(DataError, match="train"):
        build_datasets("imagenet", root=root, image_size=8)

    # Options that concern only the training images are accepted and ignored.
    val_set, info = build_eval_dataset("imagenet", root=root, image_size=8, val_subset=4, train_subset=2,
                                       val_split=5, download=False)
    assert info.train_size is None and info.val_split_size == 0
    assert (info.num_classes, info.class_names, info.val_size) == (3, full_info.class_names, 4)
    assert (info.image_size, info.mean, info.std) == (full_info.image_size, full_info.mean, full_info.std)
    assert val_set.samples == full_val.samples and not val_set.train
    assert torch.equal(val_set[(1, 5)][0], full_val[1][0])


def test_imagefolder_eval_refuses_a_train_folder_with_other_classes(tmp_path):
    root = write_imagefolder(tmp_path, classes=3, per_class=2, size=16)
    (root / "train" / "class_9").mkdir()
    with pytest.raises(DataError) as error:
        build_eval_dataset("imagefolder", root=root)
    assert "class_9" in str(error.value) and "Fix" in str(error.value)


def test_cifar_eval_needs_only_the_test_batch_and_meta(tmp_path):
    write_cifar10(tmp_path, per_batch=10, test=40)
    _, full_test, full_info = build_datasets("cifar10", root=tmp_path, val_subset=20)
    folder = tmp_path / "cifar-10-batches-py"
    for batch in folder.glob("data_batch_*"):
        batch.unlink()
    test_set, info = build_eval_dataset("cifar10", root=tmp_path, val_subset=20, train_subset=5, val_split=10)
    assert torch.equal(test_set.images, full_test.images) and test_set.targets == full_test.targets
    assert info.train_size is None and info.val_size == 20
    assert (info.class_names, info.mean, info.num_classes) == (full_info.class_names, full_info.mean, 10)
    (folder / "test_batch").unlink()
    with pytest.raises(DataError, match="test_batch"):
        build_eval_dataset("cifar10", root=tmp_path)


@pytest.mark.parametrize(
    "name, options",
    [("synthetic", dict(image_size=8, train_size=40, val_size=12, num_classes=4, val_split=8)),
     ("digits", dict(image_size=8, val_subset=30, train_subset=50, val_split=20))],
)
def test_eval_dataset_is_the_test_split_of_a_full_build(name, options):
    _, test_set, info = build_datasets(name, **options)
    eval_set, eval_info = build_eval_dataset(name, **options)
    assert len(eval_set) == len(test_set) == eval_info.val_size
    assert all(torch.equal(eval_set[i][0], test_set[i][0]) for i in range(len(test_set)))
    assert eval_info.train_size is None
    assert (eval_info.num_classes, eval_info.mean, eval_info.std) == (info.num_classes, info.mean, info.std)


def test_eval_builders_take_only_their_dataset_options():
    assert set(EVAL_BUILDERS) == set(DATASET_BUILDERS)
    for name in DATASET_CHOICES:
        eval_options = set(inspect.signature(EVAL_BUILDERS[name]).parameters)
        assert eval_options <= set(dataset_options(name))
        assert set(dataset_options(name)) - eval_options <= {"train_subset", "val_split", "train_size"}
    with pytest.raises(DataError, match="colour_jitter"):
        build_eval_dataset("synthetic", colour_jitter=0.4)
    with pytest.raises(DataError, match="'mnist'"):
        build_eval_dataset("mnist")


# ---------------------------------------------------------------- held-out validation split

def identities(dataset) -> list:
    """What tells the items apart: pixels for in-memory sets, stream index or file path otherwise."""
    if isinstance(dataset, SyntheticDataset):
        return dataset.indices.tolist()
    if isinstance(dataset, FolderDataset):
        return [path for path, _ in dataset.samples]
    assert isinstance(dataset, TensorImageDataset)
    return [image.numpy().tobytes() for image in dataset.images]


def tiny(name: str, tmp_path) -> dict:
    """Options of a small build of ``name`` (with the files it needs written under ``tmp_path``)."""
    if name == "cifar10":
        return dict(root=write_cifar10(tmp_path, per_batch=12, test=20))  # 60 training images
    if name == "imagefolder":
        return dict(root=write_imagefolder(tmp_path, classes=3, per_class=7, size=16), image_size=8)
    if name == "synthetic":
        return dict(num_classes=4, image_size=8, train_size=42, val_size=8)
    return dict(image_size=8)  # digits: 1437 training images


@pytest.mark.parametrize("name, held", [("cifar10", 23), ("imagefolder", 7), ("synthetic", 10), ("digits", 101)])
def test_val_split_is_balanced_disjoint_fixed_and_not_augmented(tmp_path, name, held):
    options = tiny(name, tmp_path)
    everything = build_splits(name, **options)
    assert everything.val is None and everything.info.val_split_size == 0
    splits = build_splits(name, val_split=held, **options)
    again = build_splits(name, val_split=held, **options)
    train, val, info = splits.train, splits.val, splits.info

    assert len(val) == info.val_split_size == held
    assert len(train) == info.train_size == len(everything.train) - held
    counts = np.bincount(val.targets, minlength=info.num_classes)
    assert counts.max() - counts.min() <= 1
    # The two parts are exactly the training images, none in both (as multisets: pixels may repeat).
    assert sorted(identities(train) + identities(val)) == sorted(identities(everything.train))
    assert identities(val) == identities(again.val) and identities(train) == identities(again.train)
    assert identities(splits.test) == identities(everything.test) and info.val_size == len(splits.test)

    assert train.train and not val.train
    for index in (0, held - 1):
        plain = val[index][0]
        assert torch.equal(val[(index, 1)][0], plain) and torch.equal(val[(index, 2)][0], plain)
    assert any(not torch.equal(train[(0, 1)][0], train[(0, seed)][0]) for seed in range(2, 8))

    train_set, test_set, same_info = build_datasets(name, val_split=held, **options)
    assert same_info == info and identities(train_set) == identities(train)
    assert identities(test_set) == identities(splits.test)


@pytest.mark.parametrize("name", ["cifar10", "digits", "imagefolder"])
def test_train_subset_is_taken_after_the_held_out_split(tmp_path, name):
    options = tiny(name, tmp_path)
    held, subset = (12, 30) if name != "imagefolder" else (6, 6)
    whole = build_splits(name, val_split=held, **options)
    small = build_splits(name, val_split=held, train_subset=subset, **options)
    assert identities(small.val) == identities(whole.val)
    assert len(small.train) == small.info.train_size == subset
    assert set(identities(small.train)) <= set(identities(whole.train))
    counts = np.bincount(small.train.targets, minlength=small.info.num_classes)
    assert counts.max() - counts.min() <= 1


def test_held_out_folder_images_use_the_val_transform(tmp_path):
    root = write_imagefolder(tmp_path, classes=3, per_class=4, size=20)
    splits = build_splits("imagefolder", root=root, image_size=8, val_split=3)
    path, label = splits.val.samples[0]
    evaluated = FolderDataset([(path, label)], splits.val.classes, (8, 8), train=False)
    assert torch.equal(splits.val[(0, 11)][0], evaluated[0][0])


@pytest.mark.parametrize("name", DATASET_CHOICES)
def test_every_dataset_takes_val_split(name):
    assert "val_split" in dataset_options(name)


@pytest.mark.parametrize(
    "value, expected",
    [(42, "smaller than the training set"), (50, "smaller than the training set"),
     (3, "number of classes"), (0, "positive integer"), (-2, "positive integer"), ("ten", "positive integer"),
     (True, "positive integer")],
)
def test_bad_val_split_is_one_paragraph_naming_the_option(value, expected):
    with pytest.raises(DataError) as error:
        build_splits("synthetic", num_classes=4, image_size=8, train_size=42, val_size=8, val_split=value)
    message = str(error.value)
    assert "val_split" in message and expected in message and "\n" not in message


# ---------------------------------------------------------------- worker count

@pytest.mark.parametrize(
    "cores, requested, expected, sentence",
    [
        (2, "auto", 2, "data.num_workers=auto -> 2 workers (2 cores available)"),
        (1, "auto", 1, "data.num_workers=auto -> 1 worker (1 core available)"),
        (32, "auto", 8, "data.num_workers=auto -> 8 workers (32 cores available)"),
        (2, 4, 2, "data.num_workers=4 capped to 2 (2 cores available)"),
        (16, 4, 4, "data.num_workers=4 (16 cores available)"),
        (2, 0, 0, "data.num_workers=0: batches are loaded in the main process"),
    ],
)
def test_resolve_num_workers_auto_and_capping(monkeypatch, cores, requested, expected, sentence):
    monkeypatch.setattr(loader_module, "available_cores", lambda: cores)
    assert resolve_num_workers(requested) == (expected, sentence)


def test_resolve_num_workers_shares_cores_between_local_processes(monkeypatch):
    monkeypatch.setattr(loader_module, "available_cores", lambda: 16)
    assert resolve_num_workers("auto", local_processes=4)[0] == 4
    assert resolve_num_workers(6, local_processes=4) == (4, "data.num_workers=6 capped to 4 "
                                                            "(4 cores per process available)")


@pytest.mark.parametrize("value", [-1, 2.5, "four", True, None, "auto2"])
def test_resolve_num_workers_rejects_bad_values(value):
    with pytest.raises(DataError, match="data.num_workers"):
        resolve_num_workers(value)


def test_resolved_worker_count_builds_a_loader_without_torch_warning():
    train_set, _, _ = build_datasets("synthetic", image_size=8, train_size=16, val_size=4)
    too_many = loader_module.available_cores() + 2
    with pytest.warns(UserWarning, match="worker processes"):  # what the cap avoids
        build_loader(train_set, batch_size=4, num_workers=too_many)
    num_workers, sentence = resolve_num_workers(too_many)
    assert num_workers == loader_module.available_cores() and "capped" in sentence
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_loader(train_set, batch_size=4, num_workers=num_workers)
