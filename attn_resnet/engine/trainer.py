"""The training loop: mixed precision, accumulation, clipping, checkpoints, resume, logging."""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
import weakref
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import __version__
from ..data.loader import iterate_batches
from ..models.official import CheckpointError
from .checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, rng_state, save_atomic, set_rng_state
from .metrics import RunningMean, TopKAccuracy, topk_correct
from .progress import ProgressReporter
from .tb_logger import TensorBoardLogger

log = logging.getLogger(__name__)

PRECISION_CHOICES = ("32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped without overwriting good checkpoints."""


@dataclass
class TrainerSettings:
    epochs: int = 1
    precision: str = "32"
    channels_last: bool = False
    compile: bool = False
    label_smoothing: float = 0.0
    grad_clip: float = 0.0
    accumulate: int = 1
    limit_train_batches: int = 0
    limit_val_batches: int = 0
    checkpoint_every_steps: int = 0
    progress: bool = True
    progress_interval: float = 30.0
    log_every_steps: int = 20
    max_nonfinite_skips: int = 10


def resolve_device(name: str = "auto", purpose: str = "training") -> torch.device:
    """"auto" picks CUDA when present and otherwise the CPU.

    Training on the CPU gets a one-line warning; evaluation (``purpose="evaluation"``), for
    which the CPU is a reasonable choice, only an info line.
    """
    key = "trainer.device" if purpose == "training" else "device"
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if purpose == "training":
            log.warning("CUDA is not available: running on the CPU, which is slow for real training.")
        else:
            log.info("CUDA is not available: %s runs on the CPU.", purpose)
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{key}={name!r} but CUDA is not available here; use {key}=auto or cpu.")
    return device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def autocast_context(device: torch.device, precision: str):
    dtype = AUTOCAST_DTYPES.get(str(precision))
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def to_device(images: torch.Tensor, targets: torch.Tensor, device: torch.device, channels_last: bool = False):
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets.to(device, non_blocking=True)


# Models already told that their top-5 is undefined: the note is logged once, not every epoch.
_NOTED_UNDEFINED_TOP5: weakref.WeakSet = weakref.WeakSet()


@torch.no_grad()
def evaluate_model(model: nn.Module, loader, device: torch.device, precision: str = "32",
                   channels_last: bool = False, limit_batches: int = 0, progress: ProgressReporter | None = None,
                   desc: str = "val") -> dict[str, float | None]:
    """Mean loss and top-1 / top-5 accuracy (%) of ``model`` over ``loader`` (its first ``limit_batches``).

    Returns ``{"loss": float, "acc1": float, "acc5": float | None, "images": int}``; ``acc5``
    is None for a model with fewer than 5 classes, where top-5 accuracy means nothing.
    ``progress`` (none by default) reports the pass under the name ``desc``.
    """
    was_training = model.training
    model.eval()
    total = min(len(loader), limit_batches) if limit_batches else len(loader)
    loss_sum = torch.zeros((), device=device)
    accuracy = TopKAccuracy((1, 5))
    with (progress or ProgressReporter(enabled=False)).phase(desc, total) as report:
        for index, (images, targets) in enumerate(iterate_batches(loader)):
            if index >= total:
                break
            images, targets = to_device(images, targets, device, channels_last)
            with autocast_context(device, precision):
                logits = model(images)
            loss_sum += F.cross_entropy(logits.float(), targets, reduction="sum")
            accuracy.update(logits, targets)
            report.update(targets.shape[0])
    model.train(was_training)
    acc1, acc5 = accuracy.compute().values()
    if acc5 is None and model not in _NOTED_UNDEFINED_TOP5:
        _NOTED_UNDEFINED_TOP5.add(model)
        log.info("Top-5 accuracy is undefined for %d classes: acc5 is reported as None.", accuracy.num_classes)
    seen = max(accuracy.count, 1)
    return {"loss": loss_sum.item() / seen, "acc1": acc1, "acc5": acc5, "images": seen}


def _metrics_text(name: str, metrics: dict) -> str:
    """E.g. "val loss 0.6931 acc1 50.00 acc5 n/a"."""
    acc5 = "n/a" if metrics["acc5"] is None else f"{metrics['acc5']:.2f}"
    return f"{name} loss {metrics['loss']:.4f} acc1 {metrics['acc1']:.2f} acc5 {acc5}"


class Trainer:
    """Owns one run: the model, its optimizer and schedule, the loaders and the run folder.

    ``lr_schedule(optimizer_steps_per_epoch)`` returns the lr multiplier per optimizer step.
    ``val_loader`` is evaluated every epoch and picks best.pt. With a ``test_loader``, ``val_loader``
    is a held-out part of the training data and the test set is evaluated every epoch beside it;
    the summary's final metrics are then the test set's. ``progress`` defaults to a reporter built
    from the settings (``progress``, ``progress_interval``, ``log_every_steps``).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        lr_schedule: Callable[[int], Callable[[int], float]],
        train_loader,
        val_loader,
        settings: TrainerSettings,
        run_dir: str | os.PathLike,
        device: torch.device,
        config: dict | None = None,
        model_spec: dict | None = None,
        tensorboard: bool = True,
        test_loader=None,
        progress: ProgressReporter | None = None,
    ) -> None:
        self.settings = settings
        self.device = device
        self.model = model.to(device)
        if settings.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward_model = torch.compile(self.model) if settings.compile else self.model
        self.optimizer = optimizer
        self.scaler = torch.amp.GradScaler(device.type) if settings.precision == "fp16" else None
        self.train_loader, self.val_loader, self.test_loader = train_loader, val_loader, test_loader
        self.progress = progress or ProgressReporter(settings.progress, settings.progress_interval,
                                                     settings.log_every_steps)
        self.run_dir = Path(run_dir)
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.config = config or {}
        self.model_spec = model_spec or {}
        self.tb = TensorBoardLogger(str(self.run_dir), enabled=tensorboard)
        self.epoch = 0
        self.batch_in_epoch = 0
        self.global_step = 0
        self.best_acc1 = -1.0
        self.best_epoch = -1
        self.history: list[dict] = []
        self.train_seconds = 0.0
        self.train_images = 0
        self.epoch_meters = {"loss": RunningMean(), "acc1": RunningMean()}
        self.last_good: str | None = None
        self.train_loader.batch_sampler.set_epoch(0)
        self._full_epoch_batches = len(self.train_loader.batch_sampler)
        self._epoch_seconds, self._epoch_images = 0.0, 0
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(self.optimizer_steps_per_epoch()))

    # ----------------------------------------------------------------- helpers
    def train_batches_per_epoch(self) -> int:
        """Batches in one full epoch (before any mid-epoch skip), after limit_train_batches."""
        total = self._full_epoch_batches
        limit = self.settings.limit_train_batches
        return min(total, limit) if limit else total

    def optimizer_steps_per_epoch(self) -> int:
        return math.ceil(self.train_batches_per_epoch() / self.settings.accumulate)

    # -------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "package_version": __version__,
            "torch_version": str(torch.__version__),
            "model": self.model.state_dict(),
            "model_spec": self.model_spec,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "global_step": self.global_step,
            "best_acc1": self.best_acc1,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "train_seconds": self.train_seconds,
            "train_images": self.train_images,
            "epoch_meters": {name: meter.state_dict() for name, meter in self.epoch_meters.items()},
            "rng": rng_state(),
            "config": self.config,
        }

    def save(self, name: str) -> Path:
        bad = [n for n, p in self.model.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise NonFiniteLossError(
                f"Refusing to write {name}: parameter {bad[0]!r} holds NaN/inf values "
                f"(step {self.global_step}). The last good checkpoint ({self.last_good or 'none yet'}) is kept."
            )
        path = self.checkpoint_dir / name
        save_atomic(self.state_dict(), path)
        if name == "last.pt":
            self.last_good = f"{path} (epoch {self.epoch}, batch {self.batch_in_epoch}, step {self.global_step})"
        return path

    def load_state_dict(self, checkpoint: dict, source: str = "checkpoint") -> None:
        spec = checkpoint.get("model_spec", {})
        if self.model_spec and spec and spec != self.model_spec:
            differing = sorted(k for k in set(spec) | set(self.model_spec) if spec.get(k) != self.model_spec.get(k))
            raise CheckpointError(
                f"Cannot resume from {source}: it holds a different model "
                f"({', '.join(f'{k}={spec.get(k)!r}' for k in differing)}) than this run's "
                f"({', '.join(f'{k}={self.model_spec.get(k)!r}' for k in differing)}). Resume with the "
                f"run's original overrides, point trainer.resume at the right file, or set "
                f"trainer.resume=never (with a new run folder) to start afresh."
            )
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        if self.scaler is not None and checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        for key in ("epoch", "batch_in_epoch", "global_step", "best_acc1", "best_epoch", "history",
                    "train_seconds", "train_images"):
            setattr(self, key, checkpoint[key])
        for name, meter in self.epoch_meters.items():
            meter.load_state_dict(checkpoint["epoch_meters"][name])
        set_rng_state(checkpoint["rng"])
        self.last_good = f"{source} (epoch {self.epoch}, batch {self.batch_in_epoch}, step {self.global_step})"
        log.info("Resumed from %s at epoch %d, batch %d, step %d.", source, self.epoch, self.batch_in_epoch,
                 self.global_step)

    # -------------------------------------------------------------- evaluation
    def evaluate(self, loader=None, desc: str = "val") -> dict[str, float | None]:
        return evaluate_model(self.forward_model, loader if loader is not None else self.val_loader, self.device,
                              self.settings.precision, self.settings.channels_last, self.settings.limit_val_batches,
                              self.progress, desc)

    # ---------------------------------------------------------------- training
    def _check_loss(self, loss: torch.Tensor, epoch: int, batch: int, skipped: int) -> bool:
        """True when the loss is finite; False for an fp16 step the scaler may skip; raise otherwise."""
        if torch.isfinite(loss):
            return True
        if self.scaler is not None and skipped < self.settings.max_nonfinite_skips:
            return False
        raise NonFiniteLossError(
            f"The training loss became {loss.item()} at epoch {epoch + 1}, batch {batch + 1} "
            f"(optimizer step {self.global_step}). Training stopped so no NaN weights are saved; "
            f"the last good checkpoint is {self.last_good or 'none (no checkpoint was written yet)'}. "
            f"Try a lower optim.lr, gradient clipping (trainer.grad_clip=1.0), a longer warmup "
            f"(sched.warmup_epochs), or trainer.precision=bf16/32 instead of fp16."
        )

    def train_epoch(self, epoch: int) -> dict[str, float]:
        settings = self.settings
        self.model.train()
        sampler = self.train_loader.batch_sampler
        sampler.set_epoch(epoch)
        sampler.set_start_batch(self.batch_in_epoch)
        if self.batch_in_epoch == 0:
            self.epoch_meters = {"loss": RunningMean(), "acc1": RunningMean()}
        total_batches = self.train_batches_per_epoch()
        start_time, images_this_run, skipped = time.perf_counter(), 0, 0
        progress = self.progress.phase(f"train epoch {epoch + 1}/{settings.epochs}", total_batches,
                                       self.batch_in_epoch, self._running_stats)
        self.optimizer.zero_grad(set_to_none=True)
        batch = self.batch_in_epoch
        with progress:
            for images, targets in iterate_batches(self.train_loader):
                if batch >= total_batches:
                    break
                images, targets = to_device(images, targets, self.device, settings.channels_last)
                with autocast_context(self.device, settings.precision):
                    logits = self.forward_model(images)
                    loss = F.cross_entropy(logits, targets, label_smoothing=settings.label_smoothing)
                finite = self._check_loss(loss.detach(), epoch, batch, skipped)
                skipped = 0 if finite else skipped + 1
                scaled = loss / self._accumulation_group_size(batch, total_batches)
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
                batch += 1
                if batch % settings.accumulate == 0 or batch == total_batches:
                    self._optimizer_step()
                count = targets.shape[0]
                images_this_run += count
                if finite:
                    self.epoch_meters["loss"].update(loss.detach().float() * count, count)
                    self.epoch_meters["acc1"].update(topk_correct(logits.detach(), targets, (1,))[0] * 100.0, count)
                progress.update(count)
                self.batch_in_epoch = batch
                if (settings.checkpoint_every_steps and batch % settings.accumulate == 0
                        and self.global_step % settings.checkpoint_every_steps == 0 and batch < total_batches):
                    self._account_time(start_time, images_this_run)
                    start_time, images_this_run = time.perf_counter(), 0
                    self.save("last.pt")
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._account_time(start_time, images_this_run)
        return {"loss": self.epoch_meters["loss"].mean, "acc1": self.epoch_meters["acc1"].mean}

    def _accumulation_group_size(self, batch: int, total_batches: int) -> int:
        """Micro-batches in the accumulation group of ``batch`` (0-based in the epoch); the last may be short.

        Each micro-batch loss is divided by this, so every optimizer step sees the mean gradient
        of its group, also for a short last group and after a mid-epoch resume.
        """
        accumulate = self.settings.accumulate
        group_start = batch // accumulate * accumulate
        return min(accumulate, total_batches - group_start)

    def _running_stats(self) -> dict[str, str]:
        """The running epoch loss, accuracy and lr for progress reports (reads device values: call rarely)."""
        return {"loss": f"{self.epoch_meters['loss'].mean:.3f}", "acc": f"{self.epoch_meters['acc1'].mean:.1f}",
                "lr": f"{self.optimizer.param_groups[0]['lr']:.3g}"}

    def _account_time(self, start_time: float, images: int) -> None:
        seconds = time.perf_counter() - start_time
        self.train_seconds += seconds
        self.train_images += images
        self._epoch_seconds += seconds
        self._epoch_images += images

    def _optimizer_step(self) -> None:
        settings = self.settings
        if settings.grad_clip:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(self.model.parameters(), settings.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():
            # The fp16 scaler may skip an optimizer step on overflow; the schedule still advances.
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
            self.scheduler.step()
        self.global_step += 1

    def fit(self) -> dict[str, Any]:
        """Train to ``settings.epochs`` (continuing from the loaded state) and validate each epoch."""
        settings = self.settings
        while self.epoch < settings.epochs:
            epoch = self.epoch
            self._epoch_seconds, self._epoch_images = 0.0, 0
            lr = self.optimizer.param_groups[0]["lr"]
            train = self.train_epoch(epoch)
            evaluated = {"val": self.evaluate(self.val_loader, "val")}
            if self.test_loader is not None:
                evaluated["test"] = self.evaluate(self.test_loader, "test")
            self.epoch, self.batch_in_epoch = epoch + 1, 0
            improved = evaluated["val"]["acc1"] > self.best_acc1
            if improved:
                self.best_acc1, self.best_epoch = evaluated["val"]["acc1"], epoch + 1
            self._record_epoch(epoch + 1, lr, train, evaluated)
            self.save("last.pt")
            if improved:
                self.save("best.pt")
        return self.summary()

    def _record_epoch(self, epoch: int, lr: float, train: dict, evaluated: dict[str, dict]) -> None:
        """Append the epoch to the history, write its TensorBoard scalars and log its line."""
        images_per_sec = self._epoch_images / max(self._epoch_seconds, 1e-9)
        record = {"epoch": epoch, "train_loss": train["loss"], "train_acc1": train["acc1"]}
        scalars = {"train/loss": train["loss"], "train/acc1": train["acc1"]}
        for split, metrics in evaluated.items():
            for key in ("loss", "acc1", "acc5"):
                record[f"{split}_{key}"] = scalars[f"{split}/{key}"] = metrics[key]
        record.update(lr=lr, images_per_sec=images_per_sec, epoch_seconds=self._epoch_seconds)
        scalars.update({"opt/lr": lr, "perf/images_per_sec": images_per_sec,
                        "perf/epoch_seconds": self._epoch_seconds})
        self.history.append(record)
        # An undefined metric (top-5 of fewer than 5 classes) gets no curve rather than a made-up one.
        self.tb.scalars({tag: value for tag, value in scalars.items() if value is not None}, epoch)
        log.info("epoch %d/%d  train loss %.4f acc1 %.2f | %s | lr %.4g | %.0f img/s, %.1f s", epoch,
                 self.settings.epochs, train["loss"], train["acc1"],
                 " | ".join(_metrics_text(split, metrics) for split, metrics in evaluated.items()), lr,
                 images_per_sec, self._epoch_seconds)

    def summary(self) -> dict[str, Any]:
        """Run totals; ``final`` is the last epoch on the test set when there is one, else on val.

        With a test set, ``final_val`` holds the last epoch's held-out metrics; ``best`` is always
        the best held-out (val) epoch, the one saved as best.pt.
        """
        last = self.history[-1] if self.history else {}

        def final(split: str) -> dict[str, float | None]:
            return {key: last.get(f"{split}_{key}") for key in ("acc1", "acc5", "loss")}

        has_test = "test_acc1" in last
        summary = {
            "epochs_completed": self.epoch,
            "global_step": self.global_step,
            "final": final("test" if has_test else "val"),
            "best": {"acc1": self.best_acc1 if self.best_epoch > 0 else None, "epoch": self.best_epoch},
            "train_seconds": self.train_seconds,
            "images_per_sec": self.train_images / max(self.train_seconds, 1e-9),
            "history": self.history,
        }
        if has_test:
            summary["final_val"] = final("val")
        return summary
