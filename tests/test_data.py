"""Datasets, augmentation seeding, the resumable sampler and loaders, on tiny data in real layouts."""

import math
import pickle
import re
import subprocess
import sys
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from attn_resnet.data import (
    DATASET_CHOICES,
    DataError,
    DataInfo,
    ResumableBatchSampler,
    build_loader,
    dataset_options,
)
from helpers import build_datasets

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


# ---------------------------------------------------------------- tiny on-disk data

def write_pickle(path: Path, content) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(content, f, protocol=2)


def make_cifar10(root: Path, per_batch: int = 4, test_size: int = 6, meta_keys: str = "bytes"):
    """The official cifar-10-batches-py layout with random pixels; returns the raw arrays written."""
    folder = root / "cifar-10-batches-py"
    rng = np.random.default_rng(0)
    train_data, train_labels = [], []
    for b in range(1, 6):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in (np.arange(per_batch) + b * per_batch) % 10]
        write_pickle(folder / f"data_batch_{b}", {
            b"batch_label": f"training batch {b} of 5".encode(), b"labels": labels, b"data": data,
            b"filenames": [f"img_{b}_{i}.png".encode() for i in range(per_batch)],
        })
        train_data.append(data)
        train_labels += labels
    test_data = rng.integers(0, 256, (test_size, 3072), dtype=np.uint8)
    test_data[0, :1024], test_data[0, 1024:2048], test_data[0, 2048:] = 200, 100, 0  # an orange image
    test_labels = [int(v) for v in np.arange(test_size) % 10]
    write_pickle(folder / "test_batch", {
        b"batch_label": b"testing batch 1 of 1", b"labels": test_labels, b"data": test_data,
        b"filenames": [f"test_{i}.png".encode() for i in range(test_size)],
    })
    if meta_keys == "bytes":  # the official release (written by Python 2)
        meta = {b"num_cases_per_batch": per_batch, b"label_names": [n.encode() for n in CIFAR10_NAMES],
                b"num_vis": 3072}
    else:  # str keys and names, as a Python 3 writer produces
        meta = {"num_cases_per_batch": per_batch, "label_names": CIFAR10_NAMES, "num_vis": 3072}
    write_pickle(folder / "batches.meta", meta)
    return folder, np.concatenate(train_data), train_labels, test_data, test_labels


def make_cifar100(root: Path, train_size: int = 12, test_size: int = 5):
    folder = root / "cifar-100-python"
    rng = np.random.default_rng(1)
    out = {}
    for split, size in (("train", train_size), ("test", test_size)):
        fine = [int(v) for v in rng.integers(0, 100, size)]
        data = rng.integers(0, 256, (size, 3072), dtype=np.uint8)
        write_pickle(folder / split, {
            b"filenames": [f"{split}_{i}.png".encode() for i in range(size)], b"batch_label": split.encode(),
            b"fine_labels": fine, b"coarse_labels": [v // 5 for v in fine], b"data": data,
        })
        out[split] = (data, fine)
    write_pickle(folder / "meta", {
        b"fine_label_names": [f"fine_{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse_{i}".encode() for i in range(20)],
    })
    return folder, out


def make_image_tree(root: Path, classes=("dog", "cat", "bird"), per_class: int = 2, splits=("train", "val")):
    """ImageFolder tree of small random PNG and JPEG files of varying sizes."""
    rng = np.random.default_rng(2)
    for split in splits:
        for name in classes:
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (20 + 3 * i, 28, 3), dtype=np.uint8)
                suffix = ".png" if i % 2 else ".jpg"
                Image.fromarray(pixels).save(root / split / name / f"{i}{suffix}")
    return root


# ---------------------------------------------------------------- helpers

def augmentation_candidates(image: torch.Tensor, pad: int, flips: bool) -> list[torch.Tensor]:
    """Every output a pad-crop (and optional flip) of uint8 ``image`` can give."""
    height, width = image.shape[-2:]
    padded = F.pad(image, (pad, pad, pad, pad))
    out = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy : dy + height, dx : dx + width]
            out += [crop, crop.flip(-1)] if flips else [crop]
    return out


def collect(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(images.clone(), labels.clone()) for images, labels in loader]


def assert_same_batches(first, second) -> None:
    assert len(first) == len(second)
    for (images_a, labels_a), (images_b, labels_b) in zip(first, second):
        assert torch.equal(images_a, images_b)
        assert torch.equal(labels_a, labels_b)


# ---------------------------------------------------------------- names and options

def test_unknown_dataset_names_the_value_and_choices():
    with pytest.raises(DataError) as error:
        build_datasets("mnist")
    assert isinstance(error.value, ValueError)
    message = str(error.value)
    assert "'mnist'" in message
    assert all(choice in message for choice in DATASET_CHOICES)


@pytest.mark.parametrize("name", ["cifar10", "imagefolder", "synthetic", "digits"])
def test_unknown_option_is_named_with_the_valid_ones(name):
    with pytest.raises(DataError) as error:
        build_datasets(name, colour_jitter=0.4)
    message = str(error.value)
    assert "colour_jitter" in message and all(option in message for option in dataset_options(name))


def test_common_keys_are_accepted_where_unused():
    _, _, info = build_datasets("synthetic", root="/nonexistent", download=True, train_size=8, val_size=4)
    assert (info.train_size, info.val_size) == (8, 4)


@pytest.mark.parametrize("options", [{"train_size": 0}, {"image_size": 2.5}, {"num_classes": True}])
def test_bad_option_values_raise(options):
    with pytest.raises(DataError, match=next(iter(options))):
        build_datasets("synthetic", **options)


# ---------------------------------------------------------------- CIFAR

@pytest.mark.parametrize("meta_keys", ["bytes", "str"])
def test_cifar10_pixels_round_trip_in_plane_order(tmp_path, meta_keys):
    _, train_data, train_labels, test_data, test_labels = make_cifar10(tmp_path, meta_keys=meta_keys)
    train_set, val_set, info = build_datasets("cifar10", root=tmp_path)

    assert info == DataInfo("cifar10", 10, (32, 32), CIFAR10_NAMES, (0.4914, 0.4822, 0.4465),
                            (0.2470, 0.2435, 0.2616), 20, 6)
    assert train_set.images.dtype == torch.uint8 and train_set.images.shape == (20, 3, 32, 32)
    assert train_set.labels.dtype == torch.int64 and train_set.labels.tolist() == train_labels
    assert list(train_set.targets) == train_labels and list(val_set.targets) == test_labels
    # Row = 1024 R values, then G, then B, each row-major over 32x32.
    assert torch.equal(train_set.images[7, 1, 2], torch.from_numpy(train_data[7, 1024 + 64 : 1024 + 96]))
    assert torch.equal(val_set.images.flatten(1), torch.from_numpy(test_data))
    orange, label = val_set[0]
    expected = [(value / 255 - m) / s for value, m, s in zip((200, 100, 0), info.mean, info.std)]
    assert label == 0 and orange.dtype == torch.float32 and orange.shape == (3, 32, 32)
    assert torch.allclose(orange.mean(dim=(1, 2)), torch.tensor(expected), atol=1e-5)


def test_cifar100_reads_fine_labels_and_100_classes(tmp_path):
    _, raw = make_cifar100(tmp_path)
    train_set, val_set, info = build_datasets("cifar100", root=tmp_path)
    assert info.num_classes == 100 and info.class_names[3] == "fine_3"
    assert (info.train_size, info.val_size) == (12, 5)
    assert train_set.labels.tolist() == raw["train"][1]
    assert torch.equal(val_set.images.flatten(1), torch.from_numpy(raw["test"][0]))
    assert info.mean == (0.5071, 0.4865, 0.4409)


def _rewrite(path: Path, **changes):
    with open(path, "rb") as f:
        content = pickle.load(f, encoding="bytes")
    content.update({key.encode(): value for key, value in changes.items()})
    write_pickle(path, content)


def _truncate(path: Path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


CIFAR_DAMAGE = {
    "missing file": ("data_batch_3", lambda p: p.unlink(), "is missing"),
    "wrong row length": ("data_batch_2", lambda p: _rewrite(p, data=np.zeros((4, 3000), np.uint8)), "3072"),
    "wrong dtype": ("data_batch_1", lambda p: _rewrite(p, data=np.zeros((4, 3072), np.float32)), "uint8"),
    "label out of range": ("test_batch", lambda p: _rewrite(p, labels=[0, 1, 2, 3, 4, 10]), "outside 0..9"),
    "label count": ("data_batch_5", lambda p: _rewrite(p, labels=[0, 1, 2]), "4 images but 3 labels"),
    "corrupt pickle": ("data_batch_4", lambda p: p.write_bytes(b"\x00not a pickle" * 50), "corrupt"),
    "truncated pickle": ("test_batch", _truncate, "corrupt or truncated"),
    "no class names": ("batches.meta", lambda p: write_pickle(p, {b"num_vis": 3072}), "class names"),
}


@pytest.mark.parametrize("damage", CIFAR_DAMAGE)
def test_cifar_structural_errors_name_the_file(tmp_path, damage):
    folder, *_ = make_cifar10(tmp_path)
    file, breaker, reason = CIFAR_DAMAGE[damage]
    breaker(folder / file)
    with pytest.raises(DataError) as error:
        build_datasets("cifar10", root=tmp_path)
    message = str(error.value)
    assert str((folder / file).resolve()) in message
    assert reason in message


def test_cifar_missing_folder_says_where_it_looked_and_how_to_fix(tmp_path):
    with pytest.raises(DataError) as error:
        build_datasets("cifar100", root=tmp_path / "nowhere")
    message = str(error.value)
    assert str((tmp_path / "nowhere" / "cifar-100-python").resolve()) in message
    assert "cifar-100-python.tar.gz" in message and "data.download=true" in message


def test_cifar_download_failure_says_where_to_put_the_files(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    calls = []

    def offline(url, download_root, md5=None, **kwargs):
        calls.append((url, md5))
        raise URLError("no network")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    with pytest.raises(DataError) as error:
        build_datasets("cifar10", root=tmp_path, download=True)
    official = ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")
    assert calls == [official]
    assert "no network" in str(error.value) and str(tmp_path.resolve()) in str(error.value)

    make_cifar10(tmp_path)  # with the files in place, download=True must not touch the network
    calls.clear()
    build_datasets("cifar10", root=tmp_path, download=True)
    assert calls == []


def test_cifar_subsets_are_class_balanced_and_deterministic(tmp_path):
    make_cifar10(tmp_path, per_batch=10)  # 50 train images, 5 per class
    train_set, val_set, info = build_datasets("cifar10", root=tmp_path, train_subset=20, val_subset=3)
    again, _, _ = build_datasets("cifar10", root=tmp_path, train_subset=20, val_subset=3)
    assert (info.train_size, info.val_size, len(train_set), len(val_set)) == (20, 3, 20, 3)
    assert torch.equal(train_set.images, again.images)
    assert sorted(np.bincount(train_set.targets, minlength=10).tolist()) == [2] * 10
    with pytest.raises(DataError, match="train_subset"):
        build_datasets("cifar10", root=tmp_path, train_subset=-1)


# ---------------------------------------------------------------- augmentation seeding

def test_aug_seed_fixes_the_cifar_augmentation_and_spares_the_global_rng(tmp_path):
    make_cifar10(tmp_path)
    train_set, val_set, _ = build_datasets("cifar10", root=tmp_path)
    state = torch.get_rng_state()
    first = train_set[(5, 1234)][0]
    assert torch.equal(first, train_set[(5, 1234)][0])
    assert torch.equal(torch.get_rng_state(), state)

    candidates = [train_set.normalize(c) for c in augmentation_candidates(train_set.images[5], 4, flips=True)]
    outputs = [train_set[(5, seed)][0] for seed in range(20)]
    assert all(any(torch.equal(out, c) for c in candidates) for out in outputs)
    assert len({out.sum().item() for out in outputs}) > 5  # different seeds, different crops

    # A plain index draws from the global RNG, reproducibly under torch.manual_seed.
    torch.manual_seed(7)
    a = train_set[5][0]
    torch.manual_seed(7)
    assert torch.equal(a, train_set[5][0])

    plain = val_set.normalize(val_set.images[2])
    assert all(torch.equal(val_set[key][0], plain) for key in (2, (2, 1), (2, 99)))


def test_digits_augment_by_shift_only():
    train_set, _, _ = build_datasets("digits", train_subset=10)
    image = train_set.images[3]
    shifts = [train_set.normalize(c) for c in augmentation_candidates(image, 2, flips=False)]
    outputs = [train_set[(3, seed)][0] for seed in range(30)]
    assert all(any(torch.equal(out, c) for c in shifts) for out in outputs)
    assert any(not torch.equal(out, train_set.normalize(image)) for out in outputs)


# ---------------------------------------------------------------- image folders

def test_imagefolder_reads_classes_and_transforms(tmp_path):
    make_image_tree(tmp_path)
    train_set, val_set, info = build_datasets("imagefolder", root=tmp_path, image_size=16)
    assert info.num_classes == 3 and info.class_names == ["bird", "cat", "dog"]
    assert (info.image_size, info.train_size, info.val_size) == ((16, 16), 6, 6)
    assert info.mean == (0.485, 0.456, 0.406)
    assert sorted(train_set.targets) == [0, 0, 1, 1, 2, 2]

    image, label = val_set[(4, 1)]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32 and label == val_set.targets[4]
    assert torch.equal(image, val_set[4][0])

    state = torch.get_rng_state()
    outputs = [train_set[(1, seed)][0] for seed in range(6)]
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(outputs[0], train_set[(1, 0)][0])
    assert not all(torch.equal(outputs[0], out) for out in outputs[1:])

    _, _, info = build_datasets("imagenet", root=tmp_path, image_size=(16, 20), train_subset=3)
    assert info.name == "imagenet" and info.image_size == (16, 20) and info.train_size == 3


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_image_names_the_file(tmp_path, damage):
    make_image_tree(tmp_path)
    bad = tmp_path / "train" / "cat" / "0.jpg"
    if damage == "garbage":
        bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg" * 10)
    else:
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(bad)
        bad.write_bytes(bad.read_bytes()[:600])
    train_set, _, _ = build_datasets("imagefolder", root=tmp_path, image_size=16)
    index = [path for path, _ in train_set.samples].index(str(bad))
    with pytest.raises(DataError, match=re.escape(str(bad))):
        train_set[(index, 0)]


def test_corrupt_image_error_survives_worker_processes(tmp_path):
    make_image_tree(tmp_path)
    bad = tmp_path / "val" / "dog" / "1.png"
    bad.write_bytes(b"broken")
    _, val_set, _ = build_datasets("imagefolder", root=tmp_path, image_size=16)
    loader = build_loader(val_set, batch_size=6, train=False, num_workers=2)
    try:
        list(loader)
    except DataError as error:
        message = str(error)
        # The re-raised error's frames form a cycle holding the loader's iterator; left to the
        # garbage collector, its workers shut down only after a 5 s timeout.
        error.__traceback__ = None
    else:
        pytest.fail("a corrupt image in a worker did not raise DataError")
    assert str(bad) in message


@pytest.mark.parametrize(
    "setup, expected",
    [
        (lambda root: make_image_tree(root, splits=("train",)), "val"),
        (lambda root: (make_image_tree(root, splits=("train",)),
                       make_image_tree(root, classes=("dog", "cat", "eel"), splits=("val",))), "eel"),
        (lambda root: (make_image_tree(root), (root / "val" / "cow").mkdir()), "cow"),
        (lambda root: (root / "train").mkdir() or (root / "val").mkdir(), "class"),
    ],
    ids=["missing val", "different classes", "empty class folder", "no class folders"],
)
def test_imagefolder_structure_errors(tmp_path, setup, expected):
    setup(tmp_path)
    with pytest.raises(DataError) as error:
        build_datasets("imagefolder", root=tmp_path)
    assert expected in str(error.value) and "Fix" in str(error.value)


def test_imagefolder_needs_a_root():
    with pytest.raises(DataError, match="data.root"):
        build_datasets("imagenet")


# ---------------------------------------------------------------- synthetic and digits

def test_synthetic_is_deterministic_per_index():
    train_a, val_a, info = build_datasets("synthetic", num_classes=4, image_size=16, train_size=40, val_size=12)
    train_b, _, _ = build_datasets("synthetic", num_classes=4, image_size=16, train_size=40, val_size=12)
    assert info.num_classes == 4 and info.image_size == (16, 16) and len(val_a) == 12
    assert torch.equal(train_a.image(9), train_b.image(9))
    assert not torch.equal(train_a.image(9), val_a.image(9))
    assert np.bincount(train_a.targets).tolist() == [10, 10, 10, 10]
    assert torch.equal(val_a[3][0], val_a[(3, 5)][0]) and val_a[3][0].shape == (3, 16, 16)
    other, _, _ = build_datasets("synthetic", num_classes=4, image_size=16, train_size=40, seed=1)
    assert not torch.equal(train_a.image(9), other.image(9))


def test_digits_split_classes_and_normalization():
    train_set, val_set, info = build_datasets("digits", root="ignored", download=False)
    assert (info.train_size, info.val_size) == (1437, 360) and len(train_set) + len(val_set) == 1797
    assert set(val_set.targets) == set(range(10)) and info.num_classes == 10
    assert np.bincount(val_set.targets).min() >= 35  # stratified: about 36 per class
    assert train_set.images.shape == (1437, 3, 32, 32) and train_set.images.dtype == torch.uint8
    assert torch.equal(train_set.images[:, 0], train_set.images[:, 2])  # grey replicated to RGB
    standardized = (train_set.images.float() / 255 - torch.tensor(info.mean).view(3, 1, 1)) / torch.tensor(
        info.std).view(3, 1, 1)
    assert abs(standardized.mean().item()) < 1e-4 and abs(standardized.std().item() - 1) < 1e-3
    again, _, _ = build_datasets("digits")
    assert torch.equal(again.images, train_set.images)
    small, _, info = build_datasets("digits", train_subset=50, val_subset=20, val_fraction=0.5)
    assert (info.train_size, info.val_size) == (50, 20) and np.bincount(small.targets).tolist() == [5] * 10
    with pytest.raises(DataError, match="val_fraction"):
        build_datasets("digits", val_fraction=1.5)


# ---------------------------------------------------------------- sampler

def epoch_batches(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(sampler)


def test_sampler_order_depends_only_on_seed_and_epoch():
    a = ResumableBatchSampler(50, 8, shuffle=True, seed=3, drop_last=True)
    b = ResumableBatchSampler(50, 8, shuffle=True, seed=3, drop_last=True)
    assert epoch_batches(a, 2) == epoch_batches(b, 2)
    assert epoch_batches(a, 2) != epoch_batches(a, 3)
    assert epoch_batches(a, 2) != epoch_batches(ResumableBatchSampler(50, 8, seed=4, drop_last=True), 2)

    batches = epoch_batches(a, 0)
    assert len(a) == len(batches) == 6 and all(len(batch) == 8 for batch in batches)
    keys = [key for batch in batches for key in batch]
    assert len({index for index, _ in keys}) == 48 and all(0 <= index < 50 for index, _ in keys)
    seeds = [aug_seed for _, aug_seed in keys] + [s for batch in epoch_batches(a, 1) for _, s in batch]
    assert len(set(seeds)) == len(seeds) and all(0 <= s < 2**63 for s in seeds)


def test_aug_seeds_do_not_depend_on_batch_size():
    small = ResumableBatchSampler(30, 4, seed=1)
    large = ResumableBatchSampler(30, 7, seed=1)
    assert dict(key for batch in small for key in batch) == dict(key for batch in large for key in batch)


def test_set_start_batch_yields_the_tail_of_the_epoch():
    sampler = ResumableBatchSampler(53, 5, shuffle=True, seed=0, drop_last=True)
    full = epoch_batches(sampler, 4)
    sampler.set_start_batch(3)
    assert len(sampler) == len(full) - 3
    assert list(sampler) == full[3:]
    sampler.set_start_batch(len(full))
    assert len(sampler) == 0 and list(sampler) == []
    sampler.set_epoch(4)  # a new epoch starts from its first batch
    assert list(sampler) == full
    with pytest.raises(ValueError):
        sampler.set_start_batch(len(full) + 1)


def test_val_sampler_is_ordered_and_complete():
    sampler = ResumableBatchSampler(11, 4, shuffle=False, drop_last=False)
    assert len(sampler) == 3
    assert [[index for index, _ in batch] for batch in epoch_batches(sampler, 5)] == [
        [0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]


def test_replica_shards_are_disjoint_and_cover_the_epoch():
    shards = [ResumableBatchSampler(23, 3, seed=2, num_replicas=3, rank=r) for r in range(3)]
    indices = [[i for batch in epoch_batches(s, 1) for i, _ in batch] for s in shards]
    assert sorted(sum(indices, [])) == list(range(23))
    full = ResumableBatchSampler(23, 23, seed=2)
    seeds = dict(epoch_batches(full, 1)[0])
    assert all(seed == seeds[i] for s in shards for batch in epoch_batches(s, 1) for i, seed in batch)
    even = [ResumableBatchSampler(23, 3, seed=2, drop_last=True, num_replicas=3, rank=r) for r in range(3)]
    assert [len(s) for s in even] == [2, 2, 2]


# ---------------------------------------------------------------- loaders

def test_loader_defaults_drop_the_last_train_batch_only():
    train_set, val_set, _ = build_datasets("synthetic", train_size=21, val_size=21, image_size=8)
    assert len(build_loader(train_set, batch_size=4, num_workers=0)) == 5
    assert len(build_loader(val_set, batch_size=4, train=False, num_workers=0)) == math.ceil(21 / 4)
    assert len(build_loader(train_set, batch_size=4, num_workers=0, drop_last=False)) == 6


def test_loader_batches_are_identical_with_and_without_workers():
    train_set, _, _ = build_datasets("synthetic", train_size=48, val_size=8, image_size=16)
    serial = build_loader(train_set, batch_size=8, seed=5, num_workers=0)
    parallel = build_loader(train_set, batch_size=8, seed=5, num_workers=2)
    for epoch in (0, 1):  # the second epoch reuses the persistent workers
        serial.batch_sampler.set_epoch(epoch)
        parallel.batch_sampler.set_epoch(epoch)
        assert_same_batches(collect(serial), collect(parallel))
    serial.batch_sampler.set_epoch(0)
    assert not torch.equal(collect(serial)[0][0], collect(parallel)[0][0])  # epochs differ


def test_loader_resumes_mid_epoch():
    train_set, _, _ = build_datasets("synthetic", train_size=40, val_size=8, image_size=8)
    loader = build_loader(train_set, batch_size=6, seed=1, num_workers=0)
    loader.batch_sampler.set_epoch(2)
    full = collect(loader)
    resumed = build_loader(train_set, batch_size=6, seed=1, num_workers=0)
    resumed.batch_sampler.set_epoch(2)
    resumed.batch_sampler.set_start_batch(4)
    assert len(resumed) == len(full) - 4 == 2
    assert_same_batches(collect(resumed), full[4:])


# ---------------------------------------------------------------- real CIFAR-10 copy

@pytest.mark.slow
def test_real_cifar10_python_layout_loads(tmp_path):
    script = SHARED_DATA / "make_cifar10.py"
    if not script.is_file():
        pytest.skip(f"reference CIFAR-10 copy not found ({script.name} next to the project)")
    subprocess.run([sys.executable, str(script), str(tmp_path), "--format", "python"], check=True,
                   capture_output=True)
    train_set, val_set, info = build_datasets("cifar10", root=tmp_path)
    assert (info.train_size, info.val_size, info.num_classes) == (50000, 10000, 10)
    assert info.class_names == CIFAR10_NAMES
    assert np.bincount(train_set.targets).tolist() == [5000] * 10
    assert np.bincount(val_set.targets).tolist() == [1000] * 10
    mean = train_set.images.float().div(255).mean(dim=(0, 2, 3))
    assert torch.allclose(mean, torch.tensor(info.mean), atol=0.01)  # a JPEG copy, close to the official stats
