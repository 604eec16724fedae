"""The device loader and the DataLoader path that normalizes on the device: the same batches bit for
bit, crop and flip draws at their expected rates, resume, sharding, errors and whole training runs."""

import logging
import multiprocessing

import pytest
import torch
from helpers import FAST, compose_train, write_cifar10, write_imagefolder
from torch.utils.data import Dataset

from attn_resnet.app import train
from attn_resnet.build import make_eval_loader, make_loaders
from attn_resnet.data import (
    DataError,
    DeviceImageLoader,
    DevicePrefetcher,
    ResumableBatchSampler,
    build_loader,
    build_prefetched_loader,
    build_splits,
    crop_flip_params,
    iterate_batches,
    resolve_loader,
)
from attn_resnet.data.common import TensorImageDataset
from attn_resnet.engine.checkpoint import load_training_checkpoint

CPU = torch.device("cpu")


def cifar_config(root, loader: str, num_workers: int = 0) -> dict:
    """A data config for the tiny CIFAR-10 copy: 80 train images, 20 held out, 40 test."""
    return {"name": "cifar10", "network_type": "CIFAR10", "root": str(root), "val_split": 20, "batch_size": 8,
            "val_batch_size": 16, "num_workers": num_workers, "pin_memory": True, "persistent_workers": True,
            "loader": loader}


def epoch_batches(loader, epoch: int, start_batch: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The batches of ``epoch`` from ``start_batch`` on, as the trainer asks for them."""
    loader.batch_sampler.set_epoch(epoch)
    loader.batch_sampler.set_start_batch(start_batch)
    return [(images.clone(memory_format=torch.preserve_format), targets.clone())
            for images, targets in iterate_batches(loader)]


def assert_identical(first, second) -> None:
    assert len(first) == len(second) > 0
    for (images_a, targets_a), (images_b, targets_b) in zip(first, second):
        assert images_a.dtype == images_b.dtype and images_a.stride() == images_b.stride()
        assert torch.equal(images_a, images_b) and torch.equal(targets_a, targets_b)


def labelled_by_index(size: int, train: bool = True, image_size: int = 8) -> TensorImageDataset:
    """Random images whose label is their index, so that a loader's targets say which samples it gave."""
    images = torch.randint(0, 256, (size, 3, image_size, image_size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(size))
    return TensorImageDataset(images, torch.arange(size), [str(k) for k in range(size)], (0.5,) * 3, (0.25,) * 3,
                              train, pad=2, flip=True)


# ---------------------------------------------------------------- the same batches either way

@pytest.mark.parametrize("num_workers, channels_last", [(0, False), (0, True), (2, False), (2, True)])
def test_device_and_worker_loaders_give_identical_batches(tmp_path, num_workers, channels_last):
    root = write_cifar10(tmp_path / "data", per_batch=20)
    device = make_loaders(cifar_config(root, "device"), 3, CPU, channels_last=channels_last)
    workers = make_loaders(cifar_config(root, "workers", num_workers), 3, CPU, channels_last=channels_last)
    assert isinstance(device.train, DeviceImageLoader) and isinstance(workers.train, DevicePrefetcher)
    assert len(device.train) == len(workers.train) == 10
    layout = torch.channels_last if channels_last else torch.contiguous_format
    epochs = [epoch_batches(device.train, epoch) for epoch in range(3)]
    for epoch, batches in enumerate(epochs):  # the persistent workers serve every epoch
        assert_identical(batches, epoch_batches(workers.train, epoch))
        images = batches[0][0]
        assert images.dtype == torch.float32 and images.shape == (8, 3, 32, 32)
        assert images.is_contiguous(memory_format=layout)
    assert not torch.equal(epochs[0][0][0], epochs[1][0][0])
    resumed = epoch_batches(device.train, 2, start_batch=6)
    assert_identical(resumed, epochs[2][6:])
    assert_identical(resumed, epoch_batches(workers.train, 2, start_batch=6))
    for split in ("val", "test"):  # not augmented, in order, the last batch kept
        batches = epoch_batches(getattr(device, split), 1)
        assert [len(targets) for _, targets in batches] == ([16, 4] if split == "val" else [16, 16, 8])
        assert_identical(batches, epoch_batches(getattr(workers, split), 1))


@pytest.mark.parametrize("config", [
    {"name": "digits", "image_size": 16, "train_subset": 60, "val_subset": 20},  # pad 2, no flip
    {"name": "synthetic", "image_size": 16, "train_size": 40, "val_size": 12, "val_split": 10},  # made per item
], ids=["digits", "synthetic"])
def test_every_uint8_dataset_gives_identical_batches(config):
    config = {**config, "network_type": "CIFAR10", "batch_size": 8, "num_workers": 0}
    device = make_loaders({**config, "loader": "device"}, 1, CPU)
    workers = make_loaders({**config, "loader": "workers"}, 1, CPU)
    for split in ("train", "val", "test"):
        if getattr(device, split) is not None:
            assert_identical(epoch_batches(getattr(device, split), 1), epoch_batches(getattr(workers, split), 1))


def test_the_device_loader_crops_and_flips_as_the_seeds_say():
    """Every pixel of these images names its row and column, so each output shows its crop and flip."""
    size, pad = 4096, 2
    rows, cols = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    image = (1 + rows * 8 + cols).to(torch.uint8).expand(3, 8, 8)
    dataset = TensorImageDataset(image.expand(size, 3, 8, 8).contiguous(), torch.zeros(size), ["a"], (0.0,) * 3,
                                 (1.0,) * 3, train=True, pad=pad, flip=True)
    loader = DeviceImageLoader(dataset, batch_size=size, seed=5, device=CPU, channels_last=True)
    loader.batch_sampler.set_epoch(0)
    seeds = torch.tensor([seed for _, seed in next(iter(loader.batch_sampler))])
    images, _ = next(iter(loader))
    pixels = images[:, 0].mul(255).round().long() - 1  # row * 8 + column, -1 in the zero padding
    left, right = pixels[:, 4, 3], pixels[:, 4, 4]  # always inside the image: |shift| <= pad < 3
    flipped = right < left
    dy = right // 8 - 4 + pad
    dx = right % 8 - torch.where(flipped, 3, 4) + pad  # mirrored, output column 4 is crop column 3
    expected = crop_flip_params(seeds, pad, True)
    assert torch.equal(dy, expected[0]) and torch.equal(dx, expected[1]) and torch.equal(flipped, expected[2])
    assert set(dy.tolist()) == set(dx.tolist()) == set(range(2 * pad + 1)) and 0 < flipped.sum() < size
    # One seed at a time, as a worker draws it, the same arithmetic gives the same answer.
    assert [crop_flip_params(int(seed), pad, True) for seed in seeds[:100]] == list(
        zip(expected[0][:100].tolist(), expected[1][:100].tolist(), expected[2][:100].tolist()))


@pytest.mark.parametrize("pad, flip", [(4, True), (2, False)], ids=["cifar", "digits"])
def test_crop_offsets_and_flips_occur_at_their_expected_rates(pad, flip):
    sampler = ResumableBatchSampler(40_000, 40_000, seed=11)
    seeds = torch.tensor([seed for _, seed in next(iter(sampler))])
    dy, dx, flips = crop_flip_params(seeds, pad, flip)
    span, count = 2 * pad + 1, len(seeds)
    # Joint counts of (dy, dx, flip): uniform and independent. Chi-square with cells - 1 degrees of
    # freedom has mean cells - 1 and standard deviation sqrt(2 (cells - 1)); allow 6 of them.
    cells = span * span * (2 if flip else 1)
    joint = torch.bincount((dy * span + dx) * (2 if flip else 1) + flips.long(), minlength=cells).double()
    expected = count / cells
    chi_square = ((joint - expected) ** 2 / expected).sum().item()
    assert chi_square < cells - 1 + 6 * (2 * (cells - 1)) ** 0.5
    for offsets in (dy, dx):
        counts = torch.bincount(offsets, minlength=span).double()
        sigma = (count * (1 / span) * (1 - 1 / span)) ** 0.5
        assert len(counts) == span and (counts - count / span).abs().max() < 5 * sigma
    if flip:
        assert abs(flips.sum().item() - count / 2) < 5 * (count / 4) ** 0.5
    else:
        assert not flips.any()


def test_bfloat16_batches_are_identical_too():
    splits = build_splits("synthetic", image_size=8, train_size=24, val_size=8)
    device = DeviceImageLoader(splits.train, 6, seed=2, device=CPU, dtype=torch.bfloat16)
    workers = build_prefetched_loader(splits.train, 6, seed=2, device=CPU, num_workers=0, dtype=torch.bfloat16)
    batches = epoch_batches(device, 1)
    assert batches[0][0].dtype == torch.bfloat16
    assert_identical(batches, epoch_batches(workers, 1))


# ---------------------------------------------------------------- resume and sharding

def test_device_loader_resumes_mid_epoch():
    loader = DeviceImageLoader(labelled_by_index(50), 6, seed=7, device=CPU)
    full = epoch_batches(loader, 3)
    assert len(full) == 8  # drop_last: 50 // 6
    for start in (1, 5):
        assert_identical(epoch_batches(loader, 3, start), full[start:])
    assert epoch_batches(loader, 3, 8) == []
    loader.batch_sampler.set_epoch(3)  # a new set_epoch starts from the first batch again
    assert len(loader) == 8


@pytest.mark.parametrize("train", [True, False])
def test_two_ranks_cover_an_epoch_exactly_once(train):
    dataset = labelled_by_index(23, train=train)
    ranks = [DeviceImageLoader(dataset, 4, train=train, seed=1, device=CPU, drop_last=False, num_replicas=2,
                               rank=rank) for rank in range(2)]
    seen = [target for loader in ranks for _, targets in epoch_batches(loader, 2) for target in targets.tolist()]
    assert sorted(seen) == list(range(23))
    for rank, loader in enumerate(ranks):
        workers = build_prefetched_loader(dataset, 4, train=train, seed=1, device=CPU, num_workers=0,
                                          drop_last=False, num_replicas=2, rank=rank)
        assert_identical(epoch_batches(loader, 2), epoch_batches(workers, 2))
    even = [DeviceImageLoader(dataset, 4, seed=1, device=CPU, drop_last=True, num_replicas=2, rank=r)
            for r in range(2)]
    assert [len(loader) for loader in even] == [2, 2]  # 11 positions each, 2 full batches of 4


# ---------------------------------------------------------------- the prefetcher

class FailingDataset(Dataset):
    """Item 3 raises ValueError; the others are uint8 images."""

    def __len__(self) -> int:
        return 6

    def __getitem__(self, key):
        index = key[0] if isinstance(key, (tuple, list)) else key
        if index == 3:
            raise ValueError("bad item")
        return torch.zeros(3, 4, 4, dtype=torch.uint8), index


def test_a_worker_error_arrives_clean_through_the_prefetcher():
    loader = build_loader(FailingDataset(), batch_size=2, train=False, num_workers=1, persistent_workers=False)
    prefetcher = DevicePrefetcher(loader, CPU, (0.5,) * 3, (0.25,) * 3)
    assert prefetcher.batch_sampler is loader.batch_sampler and len(prefetcher) == 3
    with pytest.raises(Exception) as caught:
        for _ in iterate_batches(prefetcher):
            pass
    assert type(caught.value) is DataError
    assert str(caught.value) == ("Error in a data loader worker: ValueError: bad item. "
                                 "Run with data.num_workers=0 to see the full traceback.")
    assert multiprocessing.active_children() == []


def test_image_folder_batches_travel_as_uint8_and_are_normalized_on_the_device(tmp_path):
    root = write_imagefolder(tmp_path / "images", classes=3, per_class=4, size=16)
    config = {"name": "imagefolder", "network_type": "ImageNet", "root": str(root), "image_size": 8,
              "batch_size": 4, "num_workers": 0, "loader": "auto"}
    loaders = make_loaders(config, 0, CPU, channels_last=True)
    assert isinstance(loaders.train, DevicePrefetcher)
    assert loaders.train.loader.dataset.uint8  # the workers send uint8 crops, a quarter of float32's bytes
    raw_images, _ = next(iter(loaders.train.loader))
    assert raw_images.dtype == torch.uint8
    splits = build_splits("imagefolder", root=root, image_size=8)
    plain = epoch_batches(build_loader(splits.train, 4, seed=0, num_workers=0), 1)  # torchvision's float items
    moved = epoch_batches(loaders.train, 1)
    assert all(images.is_contiguous(memory_format=torch.channels_last) for images, _ in moved)
    assert len(moved) == len(plain) > 0
    for (images, targets), (expected, expected_targets) in zip(moved, plain):
        assert torch.equal(targets, expected_targets)  # the same crops of the same images ...
        torch.testing.assert_close(images, expected, atol=1e-5, rtol=1e-5)  # ... normalized in float32 either way
    with pytest.raises(DataError) as error:
        make_loaders({**config, "loader": "device"}, 0, CPU)
    message = str(error.value)
    assert "imagefolder" in message and "data.loader=workers" in message and "\n" not in message


def test_loader_choice():
    cuda = torch.device("cuda")  # only a name here: nothing runs on it
    cifar_like, synthetic = labelled_by_index(4), build_splits("synthetic", image_size=8, train_size=12).train
    assert resolve_loader("auto", cifar_like, cuda)[0] == "device"
    assert resolve_loader("auto", cifar_like, CPU)[0] == "workers"
    assert resolve_loader("auto", synthetic, cuda)[0] == "workers"  # images made per item: kept off by default
    assert resolve_loader("device", synthetic, CPU)[0] == "device"
    assert resolve_loader("workers", cifar_like, cuda)[0] == "workers"


def test_eval_loader_is_the_same_either_way(tmp_path):
    root = write_cifar10(tmp_path / "data")
    device, info = make_eval_loader(cifar_config(root, "device"), 0, CPU)
    workers, _ = make_eval_loader(cifar_config(root, "workers"), 0, CPU)
    assert isinstance(device, DeviceImageLoader) and info.val_size == 40
    assert_identical(epoch_batches(device, 0), epoch_batches(workers, 0))


# ---------------------------------------------------------------- whole runs

def test_training_with_the_device_loader_equals_training_with_workers(tmp_path, caplog):
    weights = {}
    for loader in ("device", "workers"):
        run = tmp_path / loader
        with caplog.at_level(logging.INFO, logger="attn_resnet.build"):
            train(compose_train(FAST + [f"data.loader={loader}", "data.train_size=16", "data.val_size=8",
                                       "trainer.epochs=2"]), run)
        weights[loader] = load_training_checkpoint(run / "checkpoints" / "last.pt")["model"]
        assert sum(f"data.loader={loader}:" in message for message in caplog.messages) == 1  # one line, once
        caplog.clear()
    device, workers = weights["device"], weights["workers"]
    assert device.keys() == workers.keys() and all(torch.equal(device[k], workers[k]) for k in device)


# ---------------------------------------------------------------- on a GPU

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_batches_equal_the_cpu_batches(tmp_path, channels_last):
    """On CUDA: the device loader, the prefetcher's side stream from pinned memory and the CPU give the same bits."""
    root = write_cifar10(tmp_path / "data", per_batch=20)
    cuda = torch.device("cuda")
    device = make_loaders(cifar_config(root, "device"), 3, cuda, channels_last=channels_last)
    workers = make_loaders(cifar_config(root, "workers", 2), 3, cuda, channels_last=channels_last)
    reference = make_loaders(cifar_config(root, "device"), 3, CPU, channels_last=channels_last)
    assert isinstance(make_loaders(cifar_config(root, "auto"), 3, cuda).train, DeviceImageLoader)
    for split in ("train", "val", "test"):
        for epoch in (0, 1):
            batches = epoch_batches(getattr(device, split), epoch)
            assert all(images.is_cuda and targets.is_cuda for images, targets in batches)
            assert_identical(batches, epoch_batches(getattr(workers, split), epoch))
            on_cpu = [(images.cpu(), targets.cpu()) for images, targets in batches]
            assert_identical(on_cpu, epoch_batches(getattr(reference, split), epoch))
    resumed = epoch_batches(device.train, 1, start_batch=4)
    assert_identical(resumed, epoch_batches(workers.train, 1, start_batch=4))
