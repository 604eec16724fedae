"""The training loop: mixed precision, accumulation, clipping, checkpoints, resume, logging."""

from __future__ import annotations

import logging
import math
import os
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .. import __version__
from ..models.official import CheckpointError
from .checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, rng_state, save_atomic, set_rng_state
from .metrics import RunningMean, topk_correct
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
    log_every_steps: int = 20
    max_nonfinite_skips: int = 10


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" picks CUDA when present and otherwise the CPU, with a one-line warning."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        log.warning("CUDA is not available: running on the CPU, which is slow for real training.")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"trainer.device={name!r} but CUDA is not available here; use trainer.device=auto or cpu.")
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


@torch.no_grad()
def evaluate_model(model: nn.Module, loader, device: torch.device, precision: str = "32",
                   channels_last: bool = False, limit_batches: int = 0) -> dict[str, float]:
    """Mean loss and top-1 / top-5 accuracy (%) of ``model`` over ``loader`` (first ``limit_batches``)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct1 = torch.zeros((), device=device, dtype=torch.long)
    correct5 = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for index, (images, targets) in enumerate(loader):
        if limit_batches and index >= limit_batches:
            break
        images, targets = to_device(images, targets, device, channels_last)
        with autocast_context(device, precision):
            logits = model(images)
        loss_sum += F.cross_entropy(logits.float(), targets, reduction="sum")
        top1, top5 = topk_correct(logits, targets, (1, 5))
        correct1 += top1
        correct5 += top5
        seen += targets.shape[0]
    model.train(was_training)
    seen = max(seen, 1)
    return {"loss": loss_sum.item() / seen, "acc1": 100.0 * correct1.item() / seen,
            "acc5": 100.0 * correct5.item() / seen, "images": seen}


class Trainer:
    """Owns one run: the model, its optimizer and schedule, the loaders and the run folder.

    ``lr_schedule(optimizer_steps_per_epoch)`` returns the lr multiplier per optimizer step.
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
    ) -> None:
        self.settings = settings
        self.device = device
        self.model = model.to(device)
        if settings.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward_model = torch.compile(self.model) if settings.compile else self.model
        self.optimizer = optimizer
        self.scaler = torch.amp.GradScaler(device.type) if settings.precision == "fp16" else None
        self.train_loader, self.val_loader = train_loader, val_loader
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
    def evaluate(self, loader=None) -> dict[str, float]:
        return evaluate_model(self.forward_model, loader if loader is not None else self.val_loader, self.device,
                              self.settings.precision, self.settings.channels_last, self.settings.limit_val_batches)

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
        show = settings.progress and sys.stderr.isatty()
        bar = tqdm(total=total_batches, initial=self.batch_in_epoch, desc=f"epoch {epoch + 1}/{settings.epochs}",
                   disable=not show, leave=False, dynamic_ncols=True, unit="batch")
        self.optimizer.zero_grad(set_to_none=True)
        batch = self.batch_in_epoch
        for images, targets in self.train_loader:
            if batch >= total_batches:
                break
            images, targets = to_device(images, targets, self.device, settings.channels_last)
            with autocast_context(self.device, settings.precision):
                logits = self.forward_model(images)
                loss = F.cross_entropy(logits, targets, label_smoothing=settings.label_smoothing)
            finite = self._check_loss(loss.detach(), epoch, batch, skipped)
            skipped = 0 if finite else skipped + 1
            scaled = loss / settings.accumulate
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            batch += 1
            if batch % settings.accumulate == 0 or batch == total_batches:
                self._optimizer_step()
            count = targets.shape[0]
            images_this_run += count
            if finite:
                self.epoch_meters["loss"].update(loss.detach().float() * count, count)
                self.epoch_meters["acc1"].update(topk_correct(logits.detach(), targets, (1,))[0] * 100.0, count)
            bar.update(1)
            if show and batch % settings.log_every_steps == 0:
                elapsed = time.perf_counter() - start_time
                bar.set_postfix(loss=f"{self.epoch_meters['loss'].mean:.3f}",
                                acc=f"{self.epoch_meters['acc1'].mean:.1f}",
                                lr=f"{self.optimizer.param_groups[0]['lr']:.3g}",
                                img_s=f"{images_this_run / max(elapsed, 1e-9):.0f}")
            self.batch_in_epoch = batch
            if (settings.checkpoint_every_steps and batch % settings.accumulate == 0
                    and self.global_step % settings.checkpoint_every_steps == 0 and batch < total_batches):
                self._account_time(start_time, images_this_run)
                start_time, images_this_run = time.perf_counter(), 0
                self.save("last.pt")
        bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._account_time(start_time, images_this_run)
        return {"loss": self.epoch_meters["loss"].mean, "acc1": self.epoch_meters["acc1"].mean}

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
            val = self.evaluate()
            images_per_sec = self._epoch_images / max(self._epoch_seconds, 1e-9)
            self.epoch, self.batch_in_epoch = epoch + 1, 0
            improved = val["acc1"] > self.best_acc1
            if improved:
                self.best_acc1, self.best_epoch = val["acc1"], epoch + 1
            record = {"epoch": epoch + 1, "train_loss": train["loss"], "train_acc1": train["acc1"],
                      "val_loss": val["loss"], "val_acc1": val["acc1"], "val_acc5": val["acc5"], "lr": lr,
                      "images_per_sec": images_per_sec, "epoch_seconds": self._epoch_seconds}
            self.history.append(record)
            self.tb.scalars({"train/loss": train["loss"], "train/acc1": train["acc1"], "val/loss": val["loss"],
                             "val/acc1": val["acc1"], "val/acc5": val["acc5"], "opt/lr": lr,
                             "perf/images_per_sec": images_per_sec,
                             "perf/epoch_seconds": self._epoch_seconds}, epoch + 1)
            log.info("epoch %d/%d  train loss %.4f acc1 %.2f | val loss %.4f acc1 %.2f acc5 %.2f | lr %.4g | "
                     "%.0f img/s, %.1f s", epoch + 1, settings.epochs, train["loss"], train["acc1"], val["loss"],
                     val["acc1"], val["acc5"], lr, images_per_sec, self._epoch_seconds)
            self.save("last.pt")
            if improved:
                self.save("best.pt")
        return self.summary()

    def summary(self) -> dict[str, Any]:
        final = self.history[-1] if self.history else {}
        return {
            "epochs_completed": self.epoch,
            "global_step": self.global_step,
            "final": {"acc1": final.get("val_acc1"), "acc5": final.get("val_acc5"), "loss": final.get("val_loss")},
            "best": {"acc1": self.best_acc1 if self.best_epoch > 0 else None, "epoch": self.best_epoch},
            "train_seconds": self.train_seconds,
            "images_per_sec": self.train_images / max(self.train_seconds, 1e-9),
            "history": self.history,
        }
