"""The data suite: images/s of the device loader vs the torchvision per-image pipeline, on the device."""

from __future__ import annotations

from typing import Any, Callable

import torch

from .cifar_images import CIFAR_MEAN, CIFAR_STD, DEVICE_LOADER_NAME, cifar_like, make_device_loader
from .settings import Settings
from .timing import median, timed_turns


class PerImageCifar(torch.utils.data.Dataset):
    """What ``torchvision.datasets.CIFAR10`` does per item: a uint8 HWC row -> PIL image -> transform."""

    def __init__(self, data, targets: list[int], transform) -> None:
        self.data, self.targets, self.transform = data, targets, transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.data[index])), self.targets[index]


def benchmark_data(settings: Settings, log: Callable[[str], None]) -> dict:
    """Images/s of the device loader vs the torchvision per-image pipeline, batches delivered on the device."""
    import torchvision.transforms as T

    cfg = settings.data
    device = settings.torch_device
    batch_size, batches = cfg["batch_size"], cfg["batches"]
    result: dict[str, Any] = {"batch_size": batch_size, "images_per_pass": batch_size * batches,
                              "image_size": 32, "workers": settings.workers, "repeats": cfg["repeats"]}
    dataset, hwc, labels = cifar_like(batch_size * batches)
    policy = []
    if settings.aug_policy != "none":
        from ..data.policies import AugmentSpec

        dataset.set_augment(AugmentSpec(policy=settings.aug_policy, num_ops=2, magnitude=9))
        policy = [T.RandAugment(num_ops=2, magnitude=9) if settings.aug_policy == "randaugment"
                  else T.TrivialAugmentWide()]
        result["aug_policy"] = settings.aug_policy
    device_loader = make_device_loader(dataset, batch_size, device, settings.channels_last)
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), *policy, T.ToTensor(),
                           T.Normalize(CIFAR_MEAN, CIFAR_STD)])
    per_image = torch.utils.data.DataLoader(
        PerImageCifar(hwc, labels, transform), batch_size=batch_size, shuffle=True, drop_last=True,
        num_workers=settings.workers, pin_memory=device.type == "cuda", persistent_workers=settings.workers > 0)
    epoch = [0]

    def device_pass() -> int:
        epoch[0] += 1
        device_loader.batch_sampler.set_epoch(epoch[0])
        count = 0
        for images, targets in device_loader:
            count += targets.shape[0]
        return count

    def per_image_pass() -> int:
        count = 0
        for images, targets in per_image:
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            if settings.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            count += targets.shape[0]
        return count

    log(f"data: device loader vs per-image pipeline ({settings.workers} workers), {cfg['repeats']} repeats")
    device_pass(), per_image_pass()  # warm-up; starts the workers
    seconds = timed_turns({"device_loader": device_pass, "per_image": per_image_pass}, cfg["repeats"], device)
    policy_note = f" + aug.policy={settings.aug_policy}" if policy else ""
    result["device_loader"] = {"name": f"{DEVICE_LOADER_NAME}{policy_note}", "seconds_per_image":
                               seconds["device_loader"], "images_per_second": 1 / median(seconds["device_loader"])}
    result["per_image"] = {"name": "DataLoader + PIL + RandomCrop/Flip/" + (type(policy[0]).__name__ + "/" if policy
                                                                            else "") + "ToTensor/Normalize",
                           "seconds_per_image": seconds["per_image"],
                           "images_per_second": 1 / median(seconds["per_image"])}
    return result  # its ratio and spread: ratios.derive()
