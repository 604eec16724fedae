"""The trainer suite: ``Trainer.train_epoch`` vs a bare loop of the same steps, and their profiles."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..engine.throughput import synchronize
from ..engine.trainer import Trainer, TrainerSettings, autocast_context
from ..models import ResidualNet
from .cifar_images import DEVICE_LOADER_NAME, cifar_like, make_device_loader
from .contenders import make_optimizer
from .settings import Settings
from .timing import median, timed_turns


def benchmark_trainer(settings: Settings, log: Callable[[str], None]) -> dict:
    """Images/s of ``Trainer.train_epoch`` vs a bare loop of the same steps on the same loader, model, optimizer."""
    cfg = settings.trainer
    device = settings.torch_device
    dataset, _, _ = cifar_like(cfg["batch_size"] * cfg["batches"], seed=1)
    loader = make_device_loader(dataset, cfg["batch_size"], device, settings.channels_last)
    torch.manual_seed(0)
    model = ResidualNet(cfg["network_type"], cfg["depth"], 10, "none")
    optimizer = make_optimizer(model)
    trainer_settings = TrainerSettings(epochs=1, precision=settings.precision, channels_last=settings.channels_last,
                                       progress=False)
    with tempfile.TemporaryDirectory(prefix="attn-resnet-benchmark-") as run_dir:
        trainer = Trainer(model, optimizer, lambda steps: (lambda step: 1.0), loader, None, trainer_settings,
                          run_dir, device)
        return trainer_vs_bare(trainer, loader, len(dataset), settings, log)


def trainer_vs_bare(trainer: Trainer, loader, images_per_epoch: int, settings: Settings,
                    log: Callable[[str], None]) -> dict:
    """Epochs of ``trainer`` and of a bare loop over the same loader, model and optimizer, taking turns."""
    cfg = settings.trainer
    device = settings.torch_device
    model, optimizer = trainer.model, trainer.optimizer
    epoch = [0]

    def trainer_epoch() -> int:
        epoch[0] += 1
        trainer.train_epoch(epoch[0], start_batch=0)
        return images_per_epoch

    def bare_epoch() -> int:
        epoch[0] += 1
        model.train()
        loader.batch_sampler.set_epoch(epoch[0])
        count = 0
        for images, targets in loader:
            images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            if settings.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast_context(device, settings.precision):
                loss = F.cross_entropy(model(images), targets)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            count += targets.shape[0]
        return count

    log(f"trainer: Trainer.train_epoch vs bare loop, {cfg['repeats']} repeats")
    trainer_epoch(), bare_epoch()  # warm-up
    seconds = timed_turns({"trainer": trainer_epoch, "bare_loop": bare_epoch}, cfg["repeats"], device)
    result = {
        "model": f"ResidualNet({cfg['network_type']!r}, {cfg['depth']}, 10, 'none')",
        "loader": DEVICE_LOADER_NAME, "batch_size": cfg["batch_size"], "batches_per_epoch": cfg["batches"],
        "image_size": 32, "repeats": cfg["repeats"], "compiled": False,
        "trainer": {"seconds_per_image": seconds["trainer"], "images_per_second": 1 / median(seconds["trainer"])},
        "bare_loop": {"seconds_per_image": seconds["bare_loop"],
                      "images_per_second": 1 / median(seconds["bare_loop"])},
    }
    if settings.profile_dir is not None:
        log(f"trainer: profiling one epoch of each into {settings.profile_dir}")
        result["profiles"] = profile_epochs({"trainer": trainer_epoch, "bare_loop": bare_epoch}, device,
                                            settings.profile_dir)
    return result


def profile_epochs(runs: dict[str, Callable[[], int]], device: torch.device, folder: Path) -> list[str]:
    """One call of each run under torch.profiler; per run a text file of its op table(s). Their names.

    On CUDA the ops are listed by their own device time and, apart, by their own host time (what
    the host spends launching them); comparing the two runs' tables shows where one loop's extra
    time goes.
    """
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, run in runs.items():
        synchronize(device)
        started = time.perf_counter()
        with profile(activities=activities) as profiler:
            run()
            synchronize(device)
        seconds = time.perf_counter() - started
        averages = profiler.key_averages()
        text = [f"# {name}: one epoch under torch.profiler on {device} ({seconds:.3f} s with the profiler on)", ""]
        if cuda:
            text += ["## ops by self device time", "", averages.table(sort_by="self_device_time_total", row_limit=30),
                     ""]
        # every op by host time: the small per-step ops are the suspects when one loop is slower
        text += ["## ops by self host time (all)", "", averages.table(sort_by="self_cpu_time_total", row_limit=-1)]
        path = folder / f"trainer_profile_{name}.txt"
        path.write_text("\n".join(text) + "\n")
        written.append(path.name)
    return written
