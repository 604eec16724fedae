"""The training loop: mixed precision, accumulation, clipping, compile, checkpoints, resume, logging.

The loop holds the step; checkpoint state and its checks live in ``checkpointing``, throughput
accounting in ``throughput``, progress reports in ``progress`` and torch.compile in ``compilation``.
A training step never waits for the host: loss, accuracy and the non-finite watch stay on the
device and are read at log points, checkpoints and the end of the epoch.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import warnings
import weakref
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config.choices import EVAL_PRECISIONS, TTA_MODES
from ..data.interface import BatchLoader
from ..data.loader import iterate_batches
from ..signals import RunInterrupted, RunStopped, StopRequest
from .callbacks import Callback, CallbackList
from .checkpointing import Checkpointer, NonFiniteLossError, all_finite, nonfinite_loss_error
from .compilation import check_compile_mode, compile_pass, compiling_calls
from .distributed import Distributed, PeerRankError
from .loggers import Logger, LoggerList, epoch_scalars
from .metrics import MeterReading, TopKAccuracy, TrainingMeters
from .objectives import Objective
from .progress import ProgressReporter
from .throughput import Throughput
from .tta import tta_logits

log = logging.getLogger(__name__)

__all__ = ["NonFiniteLossError", "Trainer", "TrainerSettings", "autocast_context", "evaluate_model",
           "resolve_device"]

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainerSettings:
    """Options of the loop (the ``trainer`` config group, less the ones the entry point handles).

    ``compile_mode``: a torch.compile mode (``compilation.COMPILE_MODES``). ``cudnn_benchmark``:
    let cuDNN time its kernels for each new shape (CUDA only; off while deterministic algorithms are
    on). ``eval_precision``: the precision of validation and test passes, "32" by default so that
    the numbers that go into tables do not depend on the training precision; "same" follows
    ``precision``. ``log_every_steps``: batches between reads of the training meters, which also
    check for a non-finite loss (0: only at checkpoints and the end of an epoch).
    ``val_every_epochs``: validate (and test, and consider best.pt) after every N-th epoch and
    after the last; the epochs between record their training metrics only. Evaluation draws
    nothing from the global RNG, so N does not change the training trajectory.
    ``checkpoint_every_epochs``: write checkpoints/last.pt after every N-th epoch and after the
    last (best.pt whenever a validated epoch improves); a resumed run repeats the epochs since.
    ``compile_eval``: with ``compile``, compile the evaluation pass too (its own graph); off, it
    runs eagerly, which is cheaper than compiling for a run that evaluates once or twice.
    ``ema_decay``: keep an exponential moving average of the weights with this decay and
    validate it instead of the trained weights (``ema.WeightAverage``; 0: none); ``ema_warmup``:
    its decay ramps up as ``(1 + t) / (10 + t)``. ``tta``: test-time augmentation of the
    validation and test passes (``tta.TTA_MODES``). ``loss`` (ce | bce), ``label_smoothing``
    and ``bce_target_threshold``: the training loss (``objectives.Objective``; evaluation always
    reports the cross-entropy).
    """

    epochs: int = 1
    precision: str = "32"
    eval_precision: str = "32"
    channels_last: bool = False
    compile: bool = False
    compile_mode: str = "default"
    compile_eval: bool = True
    cudnn_benchmark: bool = True
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
    val_every_epochs: int = 1
    checkpoint_every_epochs: int = 1
    save_best: bool = True
    ema_decay: float = 0.0
    ema_warmup: bool = False
    tta: str = "none"
    loss: str = "ce"
    bce_target_threshold: float | None = None


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
    """Autocast to ``precision``'s dtype ("bf16", "fp16") on ``device``; no autocast for "32"."""
    dtype = AUTOCAST_DTYPES.get(str(precision))
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def to_device(images: torch.Tensor, targets: torch.Tensor, device: torch.device, channels_last: bool = False):
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets.to(device, non_blocking=True)


# Models already told that their top-5 is undefined: the note is logged once, not every epoch.
_NOTED_UNDEFINED_TOP5: weakref.WeakSet = weakref.WeakSet()


def _full_batch_size(loader: BatchLoader, first: int) -> int:
    """The loader's batch size, or the size of its first batch when it does not say."""
    sampler = getattr(loader, "batch_sampler", None)
    return int(getattr(sampler, "batch_size", None) or getattr(loader, "batch_size", None) or first)


def pad_batch(images: torch.Tensor, size: int) -> torch.Tensor:
    """``images`` with zero images appended up to ``size`` rows."""
    missing = size - images.shape[0]
    return images if missing <= 0 else torch.cat([images, images.new_zeros((missing, *images.shape[1:]))])


@torch.no_grad()
def evaluate_model(model: nn.Module, loader: BatchLoader, device: torch.device, precision: str = "32",
                   channels_last: bool = False, limit_batches: int = 0, progress: ProgressReporter | None = None,
                   desc: str = "val", forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
                   pad_last_batch: bool = False,
                   reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
                   tta: str = "none") -> dict[str, float | None]:
    """Mean loss and top-1 / top-5 accuracy (%) of ``model`` over ``loader`` (its first ``limit_batches``).

    Returns ``{"loss": float, "acc1": float, "acc5": float | None, "images": int}``; ``acc5``
    is None for a model with fewer than 5 classes, where top-5 accuracy means nothing.
    ``progress`` (none by default) reports the pass under the name ``desc``. ``forward`` maps
    images to logits (``model`` itself by default; a compiled callable, say). With
    ``pad_last_batch`` a smaller batch is padded with zero images to the loader's batch size, so
    a compiled ``forward`` sees one shape, and the padded rows are dropped before any metric.
    ``reduce`` (``Distributed.sum_`` in a data-parallel run, where each rank's ``loader`` holds
    its own shard of the split) sums the loss, hit counts and image counts over the ranks, so
    every rank returns the metrics of the whole split, each image counted once. ``tta``: the
    logits are averaged over that test-time augmentation's views (``tta.tta_logits``).
    """
    if tta not in TTA_MODES:
        raise ValueError(f"tta={tta!r} is not valid. Valid choices: {', '.join(TTA_MODES)}.")
    was_training = model.training
    model.eval()
    forward = forward if forward is not None else model
    total = min(len(loader), limit_batches) if limit_batches else len(loader)
    loss_sum = torch.zeros((), device=device)
    accuracy = TopKAccuracy((1, 5))
    full = None
    with (progress or ProgressReporter(enabled=False)).phase(desc, total) as report:
        for index, (images, targets) in enumerate(iterate_batches(loader)):
            if index >= total:
                break
            count = targets.shape[0]
            if pad_last_batch:
                full = full or _full_batch_size(loader, count)
                images = pad_batch(images, full)
            images, targets = to_device(images, targets, device, channels_last)
            with autocast_context(device, precision):
                logits = tta_logits(forward, images, tta)[:count]
            loss_sum += F.cross_entropy(logits.float(), targets, reduction="sum")
            accuracy.update(logits, targets)
            report.update(count)
    model.train(was_training)
    if reduce is not None:
        totals = torch.stack([torch.as_tensor(value, dtype=torch.float64, device=device)
                              for value in (loss_sum, *accuracy.correct, accuracy.count)])
        loss_sum, *correct, count = reduce(totals).tolist()
        accuracy.correct, accuracy.count = correct, round(count)
    acc1, acc5 = accuracy.compute().values()
    if acc5 is None and model not in _NOTED_UNDEFINED_TOP5:
        _NOTED_UNDEFINED_TOP5.add(model)
        log.info("Top-5 accuracy is undefined for %d classes: acc5 is reported as None.", accuracy.num_classes)
    seen = max(accuracy.count, 1)
    return {"loss": float(loss_sum) / seen, "acc1": acc1, "acc5": acc5, "images": seen}


def _metrics_text(name: str, metrics: dict) -> str:
    """E.g. "val loss 0.6931 acc1 50.00 acc5 n/a"."""
    acc5 = "n/a" if metrics["acc5"] is None else f"{metrics['acc5']:.2f}"
    return f"{name} loss {metrics['loss']:.4f} acc1 {metrics['acc1']:.2f} acc5 {acc5}"


def train_forward(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, objective: Objective,
                  soft: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and mean loss of one training batch (``Objective``): the part of the step that is compiled."""
    logits = model(images)
    return logits, objective(logits, targets, soft)


def eval_forward(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Logits of one evaluation batch (compiled apart from ``train_forward``)."""
    return model(images)


class Trainer:
    """Owns one run: the model, its optimizer and schedule, the loaders and the run folder.

    ``lr_schedule(optimizer_steps_per_epoch)`` returns the scheduler (``optim.build_scheduler``), or a
    function of the optimizer step giving the lr multiplier (run by ``LambdaLR``); it is stepped
    after every optimizer step.
    ``val_loader`` is evaluated every epoch and picks best.pt. With a ``test_loader``, ``val_loader``
    is a held-out part of the training data and the test set is evaluated every epoch beside it;
    the summary's final metrics are then the test set's. ``progress`` defaults to a reporter built
    from the settings (``progress``, ``progress_interval``, ``log_every_steps``).

    ``distributed``: this rank of a data-parallel run (``start_distributed``). Each rank's loaders
    hold its shard; the step runs the model in DistributedDataParallel; the meters, validation
    metrics and checkpoint checks are agreed across ranks; only rank 0 writes checkpoints,
    progress and logs: the other ranks' ``loggers`` are not used.

    ``loggers`` (``loggers.Logger``, e.g. ``TensorBoardLogger()``; none by default) receive each
    epoch's scalars, the hyperparameters and the final metrics; ``fit`` starts them and closes them.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        lr_schedule: Callable[[int], Callable[[int], float]],
        train_loader: BatchLoader,
        val_loader: BatchLoader,
        settings: TrainerSettings,
        run_dir: str | os.PathLike,
        device: torch.device,
        config: dict | None = None,
        model_spec: dict | None = None,
        loggers: LoggerList | list[Logger] | None = None,
        test_loader: BatchLoader | None = None,
        progress: ProgressReporter | None = None,
        callbacks: list[Callback] | None = None,
        objective: Objective | None = None,
        input_info: dict | None = None,
        distributed: Distributed | None = None,
    ) -> None:
        if settings.tta not in TTA_MODES:
            raise ValueError(f"trainer.tta={settings.tta!r} is not valid. Valid choices: {', '.join(TTA_MODES)}.")
        if settings.eval_precision not in EVAL_PRECISIONS:
            raise ValueError(f"trainer.eval_precision={settings.eval_precision!r} is not valid. "
                             f"Valid choices: {', '.join(EVAL_PRECISIONS)}.")
        check_compile_mode(settings.compile_mode)
        for key in ("val_every_epochs", "checkpoint_every_epochs"):
            value = getattr(settings, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"trainer.{key}={value!r} is not valid: it must be a positive integer "
                                 f"(1: after every epoch).")
        self.settings = settings
        # The loss (and batch mixing); by default the settings' cross-entropy or BCE, unmixed.
        self.objective = objective or Objective(settings.loss, settings.label_smoothing,
                                                settings.bce_target_threshold)
        self.device = device
        self.model = model.to(device)
        if settings.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.distributed = distributed or Distributed()
        self.step_model = self.distributed.wrap(self.model)  # the module a step runs
        self.optimizer = optimizer
        self.scaler = torch.amp.GradScaler(device.type) if settings.precision == "fp16" else None
        self.eval_precision = settings.precision if settings.eval_precision == "same" else settings.eval_precision
        self._configure_cudnn()
        self.throughput = Throughput(device, replicas=self.distributed.world_size)
        self._train_forward, self._eval_forward = train_forward, eval_forward
        if settings.compile:
            calls = compiling_calls(settings.compile_mode, device)
            self.throughput.compiling_steps = calls
            self._train_forward = compile_pass(train_forward, settings.compile_mode)
            if settings.compile_eval:
                self._eval_forward = self.throughput.time_first_calls(
                    compile_pass(eval_forward, settings.compile_mode), calls)
        self.train_loader, self.val_loader, self.test_loader = train_loader, val_loader, test_loader
        main = self.distributed.is_main
        self.progress = progress or ProgressReporter(settings.progress and main, settings.progress_interval,
                                                     settings.log_every_steps)
        self.run_dir = Path(run_dir)
        self.checkpoints = Checkpointer(self.run_dir / "checkpoints", config, model_spec, input_info)
        self.loggers = (loggers if isinstance(loggers, LoggerList) else LoggerList(loggers or ())) if main \
            else LoggerList()
        self.epoch = 0
        self.batch_in_epoch = 0
        self.global_step = 0
        self.best_acc1 = -1.0
        self.best_epoch = -1
        self.history: list[dict] = []
        # The fp16 grad scaler skips steps with inf/NaN gradients; up to max_nonfinite_skips in a row are allowed.
        self.meters = TrainingMeters(device, settings.max_nonfinite_skips if self.scaler is not None else 0,
                                     self.distributed.gather if self.distributed.enabled else None)
        self._training_epoch, self._epoch_first_step = 0, 0  # the epoch being trained and its first step
        self._last_step_lr: float | None = None  # the lr of the latest optimizer step (the epoch line's end lr)
        self.train_loader.batch_sampler.set_epoch(0)
        self._full_epoch_batches = len(self.train_loader.batch_sampler)
        # lr_schedule(steps per epoch) gives a scheduler, or a per-step lr factor function for LambdaLR.
        schedule = lr_schedule(self.optimizer_steps_per_epoch())
        self.scheduler = schedule if isinstance(schedule, torch.optim.lr_scheduler.LRScheduler) \
            else torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        self.callbacks = CallbackList([*self._setting_callbacks(), *(callbacks or [])])
        # Set from outside (Ctrl-C, a stop signal): the loop stops at the next optimizer step boundary, with a
        # checkpoint.
        self.stop_request = StopRequest()
        self._stop_agreed = False  # data-parallel: a stop that every rank has read (``_stop_due``)
        self._fit_start_step = 0
        self.callbacks.call("setup", self)

    def _setting_callbacks(self) -> list[Callback]:
        """The callbacks that the settings switch on (the weight average)."""
        if self.settings.ema_decay:
            from .ema import WeightAverage

            return [WeightAverage(self.settings.ema_decay, self.settings.ema_warmup)]
        return []

    def _configure_cudnn(self) -> None:
        if self.device.type != "cuda":
            return
        deterministic = torch.are_deterministic_algorithms_enabled()
        if self.settings.cudnn_benchmark and deterministic:
            log.info("trainer.cudnn_benchmark is off while deterministic algorithms are on.")
        torch.backends.cudnn.benchmark = self.settings.cudnn_benchmark and not deterministic

    # ----------------------------------------------------------------- helpers
    def train_batches_per_epoch(self) -> int:
        """Batches in one full epoch (before any mid-epoch skip), after limit_train_batches."""
        total = self._full_epoch_batches
        limit = self.settings.limit_train_batches
        return min(total, limit) if limit else total

    def current_lr(self) -> float:
        """The base lr: that of the groups trained at the full rate (``lr_scale`` 1; with layer-wise decay the
        classifier's, with ``optim.head_lr_scale`` the trunk's), or the largest when no group has scale 1."""
        groups = self.optimizer.param_groups
        full = [group["lr"] for group in groups if group.get("lr_scale", 1.0) == 1.0]
        return max(full or [group["lr"] / group["lr_scale"] for group in groups])

    def optimizer_steps_per_epoch(self) -> int:
        return math.ceil(self.train_batches_per_epoch() / self.settings.accumulate)

    def position(self) -> str:
        """Where the run stands, as the stop, resume and checkpoint messages all say it: epochs counted from 1,
        as the epoch lines count them, and the batches of the epoch in progress that are done."""
        epochs = self.settings.epochs
        if self.batch_in_epoch:
            return (f"during epoch {self.epoch + 1}/{epochs}, after batch {self.batch_in_epoch} of "
                    f"{self.train_batches_per_epoch()}")
        return f"after epoch {self.epoch}/{epochs}" if self.epoch else f"before epoch 1/{epochs}"

    # -------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        return self.checkpoints.state(self, self._read_meters())

    def save(self, name: str) -> Path:
        """Write checkpoints/``name``; refused (NonFiniteLossError) if the loss or any weight went non-finite.

        One device-to-host copy reads the meters and the finiteness of every weight together.
        In a data-parallel run every rank reads and checks; rank 0 writes, and all ranks learn
        whether it could, so that a failed write stops them all.
        """
        reading = self._read_meters(all_finite(self.model))
        path, error = self.checkpoints.directory / name, None
        if self.distributed.is_main:
            try:
                path = self.checkpoints.save(self, name, reading)
            except Exception as caught:  # noqa: BLE001 - re-raised below, after the ranks agree
                error = caught
        if not self.distributed.all_ok(error is None):
            raise error if error is not None else PeerRankError(
                f"Rank 0 could not write checkpoints/{name} (its error is in the run's log and results.json); "
                f"this rank stops with it.")
        return path

    def load_state_dict(self, checkpoint: dict, source: str = "checkpoint") -> None:
        self.checkpoints.load(self, checkpoint, source)

    # -------------------------------------------------------------- evaluation
    def evaluate(self, loader: BatchLoader | None = None, desc: str = "val") -> dict[str, float | None]:
        settings = self.settings
        self.distributed.broadcast_buffers(self.model)  # every rank evaluates the model rank 0 saves
        return evaluate_model(self.model, loader if loader is not None else self.val_loader, self.device,
                              self.eval_precision, settings.channels_last, settings.limit_val_batches, self.progress,
                              desc, forward=partial(self._eval_forward, self.model),
                              pad_last_batch=settings.compile and settings.compile_eval,  # one shape, no recompile
                              reduce=self.distributed.sum_ if self.distributed.enabled else None, tta=settings.tta)

    # ---------------------------------------------------------------- training
    def train_epoch(self, epoch: int, start_batch: int | None = None) -> dict[str, float]:
        """Train epoch ``epoch`` (0-based) from batch ``start_batch``, by default where the state left off
        (``batch_in_epoch``: 0, or a resumed run's position); the epoch's training loss and accuracy."""
        if start_batch is not None:
            self.batch_in_epoch = start_batch
        settings = self.settings
        self.model.train()
        self.callbacks.call("on_train_epoch_start", self, epoch)
        sampler = self.train_loader.batch_sampler
        sampler.set_epoch(epoch)
        sampler.set_start_batch(self.batch_in_epoch)
        if self.batch_in_epoch == 0:
            self.meters.reset()
        total_batches = self.train_batches_per_epoch()
        self._training_epoch = epoch
        self._epoch_first_step = self.global_step - self.batch_in_epoch // settings.accumulate
        progress = self.progress.phase(f"train epoch {epoch + 1}/{settings.epochs}", total_batches,
                                       self.batch_in_epoch, self._running_stats)
        self.optimizer.zero_grad(set_to_none=True)
        batch = self.batch_in_epoch
        self.throughput.start()
        with progress:
            for images, targets in iterate_batches(self.train_loader):
                if batch >= total_batches:
                    break
                count = targets.shape[0]
                with self.throughput.step(count):
                    self._train_step(images, targets, batch, total_batches)
                batch += 1
                self.batch_in_epoch = batch
                if settings.log_every_steps and batch % settings.log_every_steps == 0:
                    self._read_meters()  # a log point: the one host read, which also checks the loss
                progress.update(count)
                if (settings.checkpoint_every_steps and batch % settings.accumulate == 0
                        and self.global_step % settings.checkpoint_every_steps == 0 and batch < total_batches):
                    self.throughput.stop()
                    self.save("last.pt")
                    self.throughput.start()
                if self._stop_due() and batch % settings.accumulate == 0 and batch < total_batches:
                    self.throughput.stop()
                    self.save("last.pt")  # the state after this step: a resume continues exactly here
                    raise self._stop_error()
        self.throughput.stop()
        reading = self._read_meters()
        return {"loss": reading.loss, "acc1": reading.acc1}

    def _train_step(self, images: torch.Tensor, targets: torch.Tensor, batch: int, total_batches: int) -> None:
        """Forward and backward of batch ``batch``, and the optimizer step that ends its group; no host sync."""
        settings = self.settings
        images, targets = to_device(images, targets, self.device, settings.channels_last)
        ends_group = (batch + 1) % settings.accumulate == 0 or batch + 1 == total_batches
        # Across ranks, gradients are all-reduced only in the backward that ends an accumulation group.
        with self.distributed.grad_sync(self.step_model, ends_group):
            images, soft, hard = self.objective.batch(images, targets, self._training_epoch, batch)
            with autocast_context(self.device, settings.precision):
                logits, loss = self._train_forward(self.step_model, images, targets, self.objective, soft)
            self.meters.update(loss.detach(), logits.detach(), hard, batch)
            scaled = loss / self._accumulation_group_size(batch, total_batches)
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        if ends_group:
            self._optimizer_step()

    def _accumulation_group_size(self, batch: int, total_batches: int) -> int:
        """Micro-batches in the accumulation group of ``batch`` (0-based in the epoch); the last may be short.

        Each micro-batch loss is divided by this, so every optimizer step sees the mean gradient
        of its group, also for a short last group and after a mid-epoch resume.
        """
        accumulate = self.settings.accumulate
        group_start = batch // accumulate * accumulate
        return min(accumulate, total_batches - group_start)

    def _optimizer_step(self) -> None:
        settings = self.settings
        self.callbacks.call("on_after_backward", self)
        if settings.grad_clip:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(self.model.parameters(), settings.grad_clip)
        self._last_step_lr = self.current_lr()  # before the schedule moves it on for the next step
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
        self.callbacks.call("on_optimizer_step", self)

    def _read_meters(self, extra: torch.Tensor | None = None) -> MeterReading:
        """Copy the training meters (and ``extra``) to the host; stop if a loss went non-finite since the last read."""
        if self.distributed.enabled:  # the stop flag travels with the reading: any rank's request stops all
            flag = torch.tensor([self._stop_flag()], dtype=torch.float64, device=self.device)
            extra = flag if extra is None else torch.cat([extra.reshape(-1).to(flag), flag])
        reading = self.meters.read(extra)
        if self.distributed.enabled and reading.extra[-1] < 1 and not self._stop_agreed:
            self._stop_agreed = True
            if reading.extra[-1] < 0 and not self.stop_request.signals:  # another rank's signal stops this one
                self.stop_request.signalled(signal.Signals(round(-reading.extra[-1])).name)
        if reading.bad_batch is not None:
            raise self._nonfinite_loss_error(reading)
        return reading

    def _nonfinite_loss_error(self, reading: MeterReading) -> NonFiniteLossError:
        batch = reading.bad_batch
        return nonfinite_loss_error(
            reading.bad_loss, self._training_epoch, batch, self._epoch_first_step + batch // self.settings.accumulate,
            self.batch_in_epoch, self.global_step, self.meters.tolerance, self.checkpoints.last_good)

    def _running_stats(self) -> dict[str, str]:
        """The running epoch loss, accuracy and lr for progress reports (reads the device: called only when due).

        This rank's own meters, without a collective (only rank 0 reports progress, at times of
        its own); a non-finite loss is left to the next log point or checkpoint, which all ranks reach.
        """
        reading = self.meters.read(local=True) if self.distributed.enabled else self._read_meters()
        return {"loss": f"{reading.loss:.3f}", "acc": f"{reading.acc1:.1f}",
                "lr": f"{self.current_lr():.3g}"}

    def fit(self) -> dict[str, Any]:
        """Train to ``settings.epochs`` (continuing from the loaded state), validating as ``val_every_epochs`` says;
        the loggers start here, receive the final metrics and are closed, also when the run fails or stops."""
        self.loggers.start(self.run_dir, self.epoch, [(record["epoch"], epoch_scalars(record))
                                                      for record in self.history])
        try:
            summary = self._train_epochs()
        except BaseException as error:
            stopped = isinstance(error, (RunInterrupted, RunStopped, KeyboardInterrupt))  # to be resumed
            self.loggers.finish("interrupted" if stopped else "failed")
            raise
        final, best = summary["final"], summary["best"]
        metrics = {"hparam/final_acc1": final["acc1"], "hparam/final_acc5": final["acc5"],
                   "hparam/best_acc1": best["acc1"]}
        self.loggers.log_summary({k: v for k, v in metrics.items() if v is not None}, summary["epochs_completed"])
        self.loggers.finish("completed")
        return summary

    def _train_epochs(self) -> dict[str, Any]:
        settings = self.settings
        self._fit_start_step = self.global_step
        self.callbacks.call("on_train_start", self)
        while self.epoch < settings.epochs:
            epoch = self.epoch
            self.throughput.new_epoch()
            lr = self.current_lr()
            self._last_step_lr = None
            train = self.train_epoch(epoch)
            evaluated = {}
            if self._epoch_is_due(epoch + 1, settings.val_every_epochs):
                self.callbacks.call("on_eval_start", self)
                try:
                    evaluated["val"] = self.evaluate(self.val_loader, "val")
                    if self.test_loader is not None:
                        evaluated["test"] = self.evaluate(self.test_loader, "test")
                finally:  # the trained weights come back even when an evaluation fails
                    self.callbacks.call("on_eval_end", self)
            self.epoch, self.batch_in_epoch = epoch + 1, 0
            improved = "val" in evaluated and evaluated["val"]["acc1"] > self.best_acc1
            if improved:
                self.best_acc1, self.best_epoch = evaluated["val"]["acc1"], epoch + 1
            self._record_epoch(epoch + 1, lr, self._last_step_lr if self._last_step_lr is not None else lr, train,
                               evaluated)
            self.callbacks.call("on_epoch_end", self, epoch + 1, self.history[-1])
            due = self._epoch_is_due(epoch + 1, settings.checkpoint_every_epochs)
            if due:
                self.save("last.pt")
            if improved and settings.save_best:
                self.save("best.pt")
            if self._stop_due() and self.epoch < settings.epochs:
                if not due:
                    self.save("last.pt")
                raise self._stop_error()
        return self.summary()

    def _stop_due(self) -> bool:
        """Whether to stop at this optimizer-step boundary: a stop was requested here (one process), or, in a
        data-parallel run, on any rank by the latest meter reading, a collective all ranks make at the same batch
        (log points, checkpoints, the end of each epoch), so that every rank stops at the same step."""
        return self._stop_agreed if self.distributed.enabled else self.stop_request.requested

    def _stop_flag(self) -> float:
        """This rank's stop request as one number for the reading's minimum over the ranks: 1 (none), 0 (Ctrl-C)
        or minus the number of the stop signal received, so that every rank learns which signal stopped the run."""
        request = self.stop_request
        if not request.requested:
            return 1.0
        return -float(signal.Signals[request.signals[0]]) if request.signals else 0.0

    def _stop_error(self) -> RuntimeError:
        """The exception of a stop, after its checkpoint: where the run stands, and the steps this attempt made."""
        log.warning("Stop requested%s: checkpoints/last.pt written %s (optimizer step %d).",
                    f" ({', '.join(self.stop_request.signals)})" if self.stop_request.signals else "",
                    self.position(), self.global_step)
        return self.stop_request.error(f"{self.position()}; checkpoints/last.pt holds the state there",
                                       (self._fit_start_step, self.global_step))

    def _epoch_is_due(self, epoch: int, every: int) -> bool:
        """Whether the (1-based) ``epoch`` is every ``every``-th one or the run's last."""
        return epoch % every == 0 or epoch == self.settings.epochs

    def _record_epoch(self, epoch: int, lr: float, lr_end: float, train: dict, evaluated: dict[str, dict]) -> None:
        """Append the epoch to the history, hand its scalars to the loggers and log its line.

        ``lr`` is the lr the epoch started at, ``lr_end`` that of its last optimizer step: a per-step
        schedule (cosine, warmup, onecycle) moves it within the epoch, and the line shows both then.
        """
        images_per_sec, seconds = self.throughput.epoch_images_per_sec, self.throughput.epoch_seconds
        record = {"epoch": epoch, "train_loss": train["loss"], "train_acc1": train["acc1"]}
        for split, metrics in evaluated.items():
            for key in ("loss", "acc1", "acc5"):
                record[f"{split}_{key}"] = metrics[key]
            record[f"{split}_images"] = metrics["images"]  # each image once, whatever the number of ranks
        record.update(lr=lr, lr_end=lr_end, images_per_sec=images_per_sec, epoch_seconds=seconds)
        self.history.append(record)
        self.loggers.log_metrics(epoch_scalars(record), epoch)
        lr_text = f"{lr:.4g}" if f"{lr:.4g}" == f"{lr_end:.4g}" else f"{lr:.4g} -> {lr_end:.4g}"
        log.info("epoch %d/%d  train loss %.4f acc1 %.2f | %slr %s | %.0f img/s, %.1f s", epoch,
                 self.settings.epochs, train["loss"], train["acc1"],
                 "".join(f"{_metrics_text(split, metrics)} | " for split, metrics in evaluated.items()), lr_text,
                 images_per_sec, seconds)

    def summary(self) -> dict[str, Any]:
        """Run totals; ``final`` is the last validated epoch on the test set when there is one, else on val.

        With a test set, ``final_val`` holds that epoch's held-out metrics; ``best`` is always
        the best held-out (val) epoch, the one saved as best.pt. ``images_per_sec`` leaves out the
        steps that compiled, whose time is ``compile_seconds`` (evaluation's compile included).
        """
        # The last validated epoch: with val_every_epochs > 1 a stopped run may end between two.
        last = next((record for record in reversed(self.history) if "val_acc1" in record), {})

        def final(split: str) -> dict[str, float | None]:
            return {key: last.get(f"{split}_{key}") for key in ("acc1", "acc5", "loss")}

        has_test = "test_acc1" in last
        summary = {
            "epochs_completed": self.epoch,
            "global_step": self.global_step,
            "final": final("test" if has_test else "val"),
            "best": {"acc1": self.best_acc1 if self.best_epoch > 0 else None, "epoch": self.best_epoch},
            "train_seconds": self.throughput.seconds,
            "images_per_sec": self.throughput.images_per_sec,
            "compile_seconds": self.throughput.compile_seconds,
            "history": self.history,
        }
        if has_test:
            summary["final_val"] = final("val")
        return summary
