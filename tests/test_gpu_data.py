"""The data paths on CUDA (run by scripts/gpu_check.sh): the same batches as on the CPU."""

import pytest
import torch

from attn_resnet.data.device import DeviceImageLoader, build_prefetched_loader

from helpers import build_datasets, write_cifar10

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _epochs(loader, epochs=(0, 1)):
    batches = []
    for epoch in epochs:
        loader.batch_sampler.set_epoch(epoch)
        batches += [(images.float().cpu(), targets.cpu()) for images, targets in loader]
    return batches


def _same(a, b, atol=1e-6):
    assert len(a) == len(b) and len(a) > 0
    for (images_a, targets_a), (images_b, targets_b) in zip(a, b):
        assert torch.equal(targets_a, targets_b)
        torch.testing.assert_close(images_a, images_b, rtol=0, atol=atol)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_device_loader_on_cuda_gives_the_cpu_batches(tmp_path, train, channels_last):
    train_set, val_set, _ = build_datasets("cifar10", root=write_cifar10(tmp_path))
    dataset = train_set if train else val_set
    cpu = DeviceImageLoader(dataset, 16, train, seed=3, device="cpu", channels_last=channels_last)
    cuda = DeviceImageLoader(dataset, 16, train, seed=3, device="cuda", channels_last=channels_last)
    first = next(iter(cuda))[0]
    assert first.is_cuda and first.dtype == torch.float32
    assert first.is_contiguous(memory_format=torch.channels_last) == channels_last
    _same(_epochs(cpu), _epochs(cuda))


def test_prefetched_workers_on_cuda_give_the_device_loader_batches(tmp_path):
    train_set, _, _ = build_datasets("cifar10", root=write_cifar10(tmp_path))
    device = DeviceImageLoader(train_set, 16, True, seed=5, device="cuda")
    workers = build_prefetched_loader(train_set, 16, True, seed=5, device="cuda", num_workers=2, pin_memory=True,
                                      persistent_workers=False)
    _same(_epochs(device), _epochs(workers))


def test_bf16_output_of_the_device_loader(tmp_path):
    train_set, _, _ = build_datasets("cifar10", root=write_cifar10(tmp_path))
    full = DeviceImageLoader(train_set, 16, True, seed=1, device="cuda")
    half = DeviceImageLoader(train_set, 16, True, seed=1, device="cuda", dtype=torch.bfloat16)
    images, _ = next(iter(half))
    assert images.dtype == torch.bfloat16
    torch.testing.assert_close(images.float(), next(iter(full))[0], rtol=1e-2, atol=2e-2)
