"""Random CIFAR-sized uint8 images and the device loader over them, for the data and trainer suites."""

from __future__ import annotations

import torch

from ..data import DeviceImageLoader
from ..data.common import TensorImageDataset
from ..dataset_registry import CIFAR10_MEAN as CIFAR_MEAN, CIFAR10_STD as CIFAR_STD
DEVICE_LOADER_NAME = f"attn_resnet.data.{DeviceImageLoader.__name__}"  # as the reports name it


def cifar_like(count: int, seed: int = 0):
    """``TensorImageDataset`` of ``count`` random uint8 32x32 images (training augmentation on) + its HWC array."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (count,), generator=generator)
    dataset = TensorImageDataset(images, labels, [str(i) for i in range(10)], CIFAR_MEAN, CIFAR_STD, True, pad=4,
                                 flip=True)
    return dataset, images.permute(0, 2, 3, 1).contiguous().numpy(), labels.tolist()


def make_device_loader(dataset: TensorImageDataset, batch_size: int, device: torch.device,
                       channels_last: bool) -> DeviceImageLoader:
    """The device-resident loader over ``dataset``: shuffled training batches, normalized on ``device``."""
    return DeviceImageLoader(dataset, batch_size=batch_size, train=True, seed=0, device=device,
                             channels_last=channels_last)

