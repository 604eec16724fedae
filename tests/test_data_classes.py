"""data.classes (a class subset, relabelled in the order given) and data.image_size for CIFAR (resized on the device)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attn_resnet.config.validate import ConfigError, validate_train_config
from attn_resnet.data import DataError, DeviceImageLoader, build_eval_dataset, build_prefetched_loader, build_splits
from attn_resnet.data.common import normalization_constants

from helpers import compose_train, write_cifar10, write_imagefolder

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    return write_cifar10(tmp_path_factory.mktemp("cifar"), per_batch=30, test=50)


def _raw(root, files):
    """(uint8 images (N, 3, 32, 32), labels) read straight from the pickles: the reference."""
    images, labels = [], []
    for name in files:
        with open(root / "cifar-10-batches-py" / name, "rb") as handle:
            content = pickle.load(handle, encoding="bytes")
        images.append(np.asarray(content[b"data"]).reshape(-1, 3, 32, 32))
        labels += list(content[b"labels"])
    return torch.from_numpy(np.concatenate(images)), torch.tensor(labels)


def test_cifar_classes_keep_those_images_relabelled_in_the_order_given(cifar_root):
    splits = build_splits("cifar10", root=cifar_root, classes=["dog", 1, "airplane"])
    raw_images, raw_labels = _raw(cifar_root, [f"data_batch_{i}" for i in range(1, 6)])
    assert splits.info.class_names == ["dog", "automobile", "airplane"] and splits.info.num_classes == 3
    for new_label, old_label in enumerate([5, 1, 0]):
        expected = raw_images[raw_labels == old_label]
        assert torch.equal(splits.train.images[splits.train.labels == new_label], expected)
    assert len(splits.train) == int(sum((raw_labels == k).sum() for k in (5, 1, 0)))
    test_images, test_labels = _raw(cifar_root, ["test_batch"])
    assert torch.equal(splits.test.images[splits.test.labels == 0], test_images[test_labels == 5])
    assert set(splits.test.labels.tolist()) == {0, 1, 2}
    evaluated, info = build_eval_dataset("cifar10", root=cifar_root, classes=["dog", 1, "airplane"])
    assert torch.equal(evaluated.images, splits.test.images) and info.class_names == splits.info.class_names


def test_subsets_and_the_held_out_split_are_drawn_from_the_chosen_classes(cifar_root):
    splits = build_splits("cifar10", root=cifar_root, classes=["cat", "dog"], val_split=6, train_subset=10)
    assert torch.bincount(splits.val.labels).tolist() == [3, 3]
    assert torch.bincount(splits.train.labels).tolist() == [5, 5]
    assert splits.info.train_size == 10 and splits.info.val_split_size == 6
    # Held-out images are never trained on.
    held = {tuple(image.flatten()[:64].tolist()) for image in splits.val.images}
    assert not held & {tuple(image.flatten()[:64].tolist()) for image in splits.train.images}


@pytest.mark.parametrize(
    "classes,needle",
    [
        (["dgo", "cat"], "Did you mean 'dog'"),
        (["cat"], "at least two classes"),
        (["cat", 3], "more than once"),
        ([0, 10], "index 10 is outside 0..9"),
        ("cat", "must be a list"),
    ],
)
def test_bad_class_lists_name_the_problem(cifar_root, classes, needle):
    with pytest.raises(DataError, match=needle):
        build_splits("cifar10", root=cifar_root, classes=classes)


@pytest.mark.parametrize(
    "override,needle",
    [
        ("data.classes=[cat]", "at least two"),
        ("data.classes=cat", "must be a list"),
        ("data.classes=[cat,dog,cat]", "more than once"),
        ("data.image_size=0", "data.image_size=0"),
        ("data.image_size=[32,32,3]", "[height, width]"),
    ],
)
def test_config_checks_come_before_any_data_is_read(override, needle):
    with pytest.raises(ConfigError) as error:
        validate_train_config(compose_train(["data=cifar10", "data.root=/nonexistent", override]))
    assert needle in str(error.value)


def test_imagefolder_and_digits_take_classes_too(tmp_path):
    root = write_imagefolder(tmp_path / "folders", classes=4, per_class=4)
    splits = build_splits("imagefolder", root=root, image_size=16, classes=["class_3", "class_0"])
    assert splits.info.class_names == ["class_3", "class_0"]
    assert all(("class_3" if label == 0 else "class_0") in path for path, label in splits.train.samples)
    assert sorted(splits.train.targets) == [0] * 4 + [1] * 4
    assert all(("class_3" if label == 0 else "class_0") in path for path, label in splits.test.samples)
    evaluated, info = build_eval_dataset("imagefolder", root=root, image_size=16, classes=[3, 0], val_subset=2)
    assert info.class_names == ["class_3", "class_0"] and sorted(evaluated.targets) == [0, 1]

    digits = build_splits("digits", image_size=8, classes=["7", "2"])
    everything = build_splits("digits", image_size=8)
    assert digits.info.num_classes == 2 and digits.info.class_names == ["7", "2"]
    assert torch.equal(digits.test.images[digits.test.labels == 0], everything.test.images[everything.test.labels == 7])
    assert digits.info.mean == everything.info.mean  # normalisation does not depend on the classes kept


def _reference_batch(splits, keys, size):
    """Each image's pad-crop/flip (the data set's own), resized with F.interpolate and normalised by hand."""
    raw = torch.stack([splits.train.uint8_items()[tuple(key)][0] for key in keys])
    shrink = size < 32
    resized = F.interpolate(raw.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
    shift, scale = normalization_constants(splits.info.mean, splits.info.std)
    return (resized - shift) / scale


@pytest.mark.parametrize("size", [48, 20])
def test_cifar_image_size_resizes_after_augmentation_identically_on_every_path(cifar_root, size):
    splits = build_splits("cifar10", root=cifar_root, image_size=size, classes=[2, 3, 4])
    assert splits.info.image_size == (size, size)
    device_loader = DeviceImageLoader(splits.train, batch_size=16, train=True, seed=7)
    workers = build_prefetched_loader(splits.train, batch_size=16, train=True, seed=7, num_workers=0)
    channels_last = DeviceImageLoader(splits.train, batch_size=16, train=True, seed=7, channels_last=True)
    for (images, labels), (other, other_labels), (last, _) in zip(device_loader, workers, channels_last):
        assert images.shape[-2:] == (size, size)
        assert torch.equal(images, other) and torch.equal(labels, other_labels) and torch.equal(images, last)
    keys = next(iter(device_loader.batch_sampler))
    batch, _ = device_loader.batch(keys)
    torch.testing.assert_close(batch, _reference_batch(splits, keys, size), rtol=1e-5, atol=1e-4)
    single = torch.stack([splits.train[tuple(key)][0] for key in keys])  # one image at a time, on the CPU
    assert torch.equal(single, batch)
    test_batch, _ = next(iter(DeviceImageLoader(splits.test, batch_size=4, train=False)))
    assert test_batch.shape == (4, 3, size, size)


def test_without_image_size_the_images_are_untouched(cifar_root):
    plain = build_splits("cifar10", root=cifar_root)
    same = build_splits("cifar10", root=cifar_root, image_size=32)
    first = next(iter(DeviceImageLoader(plain.train, batch_size=8, seed=1)))[0]
    assert torch.equal(first, next(iter(DeviceImageLoader(same.train, batch_size=8, seed=1)))[0])
    assert plain.info.image_size == (32, 32)
