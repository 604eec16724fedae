"""The logger interface: where a run's scalars, hyperparameters and final metrics go.

A logger is one small class; the built-in ones (TensorBoard, a CSV file, MLflow, W&B) and a
user's own (``+logger.NAME._target_=package.module.Class``) are built the same way, with
Hydra's ``instantiate`` from the ``logger`` config group, and handed to the ``Trainer``, which
calls them in this order, on rank 0 only:

- ``start(run, state)``: once, when ``fit`` starts; ``state`` is what ``state_dict`` returned
  in an earlier attempt of the same run folder (None the first time), so that a resumed run
  continues its MLflow or W&B run instead of opening another;
- ``log_hyperparams(params)``: the flattened config (``{"optim.lr": 0.1, ...}``), right after;
- ``log_metrics(metrics, step)``: each epoch's scalars (``train/loss``, ``val/acc1``...), ``step``
  being the 1-based epoch;
- ``log_images(tag, images, step)`` and ``log_histogram(tag, values, step)``: the attention maps
  and channel weights, for the loggers whose ``takes_images`` is true;
- ``log_summary(metrics, step)``: the final metrics (``hparam/final_acc1``...), when the run has
  trained its last epoch;
- ``finish(status)``: "completed", "failed" or "interrupted" (a killed process calls nothing; its
  resume calls ``start`` again with the saved state).

This module is torch-free: the config checks import the logger classes to read their
arguments before torch is imported.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

log = logging.getLogger(__name__)

__all__ = ["EPOCH_SCALARS", "Logger", "LoggerList", "RunInfo", "epoch_scalars", "flatten_hparams", "STATE_FILE"]

# The loggers' states (an MLflow run id, a W&B run id), kept in the run folder as soon as they start.
STATE_FILE = "loggers.json"


# The loggers' scalar of each history key, per epoch.
EPOCH_SCALARS = {"train/loss": "train_loss", "train/acc1": "train_acc1",
                 **{f"{split}/{key}": f"{split}_{key}" for split in ("val", "test") for key in ("loss", "acc1", "acc5")},
                 "opt/lr": "lr", "perf/images_per_sec": "images_per_sec", "perf/epoch_seconds": "epoch_seconds"}


def epoch_scalars(record: dict) -> dict[str, float]:
    """The loggers' scalars of one history row (``train/loss``...); an undefined metric (top-5 of fewer than 5
    classes) or a split not evaluated that epoch gets none rather than a made-up one."""
    return {tag: record[key] for tag, key in EPOCH_SCALARS.items() if record.get(key) is not None}


def flatten_hparams(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> {"a.b": scalar}; lists/None become strings (TensorBoard needs scalars)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_hparams(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


@dataclass(frozen=True)
class RunInfo:
    """What a logger knows of the run it records.

    ``name``: the run's name (the config's ``name``, e.g. ``CIFAR10_resnet50_CBAM``); ``tags``:
    block, depth, dataset and seed; ``resume_step``: the last epoch the run's checkpoint holds (0
    for a run from the start): the steps after it are logged again by this attempt. ``history``: the
    ``(step, scalars)`` of the epochs the checkpoint holds, for a logger that must log them again (one
    whose earlier attempt may have lost them when it was killed, or one that was not chosen then).
    """

    run_dir: Path
    name: str
    tags: Mapping[str, str] = field(default_factory=dict)
    resume_step: int = 0
    history: tuple[tuple[int, Mapping[str, float]], ...] = ()

    @property
    def label(self) -> str:
        """The run's name and its folder's (``CIFAR10_resnet50_CBAM/2026-12-07_08-30-00_ab12``)."""
        return f"{self.name}/{self.run_dir.name}" if self.name != self.run_dir.name else self.name


class Logger:
    """Base class: every method does nothing; a logger overrides what it records.

    ``name`` is the logger's key under ``logger:`` in the config (it keys its saved state);
    ``requires``: ``(module, extra)`` when it needs an optional package, so that choosing it
    where the package is missing is refused before the run folder is made, naming the extra;
    ``takes_images``: whether it records the attention maps (images and histograms).
    """

    name: str = "logger"
    requires: tuple[str, str] | None = None
    takes_images: bool = False

    def start(self, run: RunInfo, state: dict[str, Any] | None) -> None:
        pass

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_images(self, tag: str, images: Any, step: int) -> None:
        """A batch of (N, 3, H, W) images in [0, 1] (a torch tensor)."""

    def log_histogram(self, tag: str, values: Any, step: int) -> None:
        """The distribution of ``values`` (a torch tensor)."""

    def log_summary(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def state_dict(self) -> dict[str, Any] | None:
        """What ``start`` needs to continue this logger's run in a later attempt; None: nothing."""
        return None

    def finish(self, status: str) -> None:
        pass


class LoggerList:
    """The run's loggers, called in order; their states live in the run folder's ``loggers.json``.

    ``name``, ``tags`` and ``hyperparams`` describe the run (the entry point fills them from the
    config); a ``Trainer`` built by hand with a plain list of loggers gets the run folder's name
    and no tags or hyperparameters.
    """

    def __init__(self, loggers: Iterable[Logger] = (), name: str | None = None,
                 tags: Mapping[str, str] | None = None, hyperparams: Mapping[str, Any] | None = None) -> None:
        self.loggers: list[Logger] = list(loggers)
        names = [logger.name for logger in self.loggers]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"Two loggers share the name {repeated[0]!r}; each needs its own (it keys its saved "
                             f"state in {STATE_FILE}).")
        self.name, self.tags = name, dict(tags or {})
        self.hyperparams = dict(hyperparams or {})
        self.started: RunInfo | None = None

    def __iter__(self):
        return iter(self.loggers)

    def __len__(self) -> int:
        return len(self.loggers)

    @property
    def takes_images(self) -> bool:
        return any(logger.takes_images for logger in self.loggers)

    def start(self, run_dir: str | Path, resume_step: int = 0,
              history: Iterable[tuple[int, Mapping[str, float]]] = ()) -> None:
        """Start every logger with its state from an earlier attempt in ``run_dir``, record the new states and
        log the hyperparameters; ``history``: the epochs' scalars a resumed run holds. Starting again (a second
        ``fit``) does nothing."""
        if self.started is not None or not self.loggers:
            return
        run_dir = Path(run_dir)
        run = RunInfo(run_dir, self.name or run_dir.name, self.tags, resume_step, tuple(history))
        states = read_states(run_dir)
        started = []
        try:
            for logger in self.loggers:
                logger.start(run, states.get(logger.name))
                started.append(logger)
        except BaseException:
            self._finish(started, "failed")  # an MLflow run opened before a later logger failed is closed
            raise
        finally:  # the ids of the runs opened, also when a later logger failed: a retry continues them
            self.started = run
            self.save_states()
            self.started = None
        self.started = run
        for logger in self.loggers:
            logger.log_hyperparams(self.hyperparams)

    def save_states(self) -> None:
        from ...runfiles import write_json_atomic

        if self.started is None:
            return
        states = read_states(self.started.run_dir)
        states.update({logger.name: state for logger in self.loggers
                       if (state := logger.state_dict()) is not None})
        if states:
            write_json_atomic(self.started.run_dir / STATE_FILE, states)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for logger in self.loggers:
            logger.log_metrics(metrics, step)

    def log_images(self, tag: str, images: Any, step: int) -> None:
        for logger in self.loggers:
            if logger.takes_images:
                logger.log_images(tag, images, step)

    def log_histogram(self, tag: str, values: Any, step: int) -> None:
        for logger in self.loggers:
            if logger.takes_images:
                logger.log_histogram(tag, values, step)

    def log_summary(self, metrics: Mapping[str, float], step: int) -> None:
        for logger in self.loggers:
            logger.log_summary(metrics, step)

    def finish(self, status: str) -> None:
        """Close every started logger. After a failure each is closed even if another's close fails (logged), so
        that the run's own error is the one reported."""
        if self.started is None:
            return
        self.started = None
        self._finish(self.loggers, status)

    @staticmethod
    def _finish(loggers: list[Logger], status: str) -> None:
        for logger in loggers:
            try:
                logger.finish(status)
            except Exception:  # noqa: BLE001 - closing one logger must not hide the run's error or skip the others
                if status == "completed":
                    raise
                log.exception("Logger %s could not be closed after the run %s.", logger.name, status)


def read_states(run_dir: Path) -> dict[str, Any]:
    """The loggers' states saved in ``run_dir`` (empty when none, or unreadable: then each starts a new run)."""
    path = Path(run_dir) / STATE_FILE
    if not path.is_file():
        return {}
    try:
        states = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        log.warning("%s could not be read (%s): the loggers start new runs.", path, error)
        return {}
    return states if isinstance(states, dict) else {}
