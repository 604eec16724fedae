"""TensorBoard scalars plus hyperparameters written into the SAME run folder.

``SummaryWriter.add_hparams`` opens a new timestamped sub-run, which splits a sweep's
HParams view from its curves; writing the three hparams summaries through the run's
own file writer keeps one run per job.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

log = logging.getLogger(__name__)


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


class TensorBoardLogger:
    def __init__(self, log_dir: str, enabled: bool = True) -> None:
        self.writer = SummaryWriter(log_dir=log_dir) if enabled else None

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        if self.writer is None:
            return
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def images(self, tag: str, images, step: int) -> None:
        """A batch of (N, 3, H, W) images in [0, 1]."""
        if self.writer is not None:
            self.writer.add_images(tag, images.clamp(0, 1), step, dataformats="NCHW")

    def histogram(self, tag: str, values, step: int) -> None:
        """A histogram of the finite ``values``; none when none is finite (a diverging run's attention weights
        must not stop it here: the loss check names the divergence)."""
        if self.writer is None:
            return
        values = torch.as_tensor(values).detach().float().flatten()
        finite = values[torch.isfinite(values)]
        if finite.numel() == 0:
            log.warning("TensorBoard histogram %s at step %d skipped: none of its %d values is finite.", tag, step,
                        values.numel())
            return
        self.writer.add_histogram(tag, finite, step)

    def hparams(self, hparam_dict: Mapping[str, Any], metric_dict: Mapping[str, float], step: int) -> None:
        """Record hyperparameters with their final metrics in this run (HParams tab)."""
        if self.writer is None:
            return
        experiment, start, end = hparams(dict(hparam_dict), dict(metric_dict))
        file_writer = self.writer._get_file_writer()
        for summary in (experiment, start, end):
            file_writer.add_summary(summary)
        self.scalars(metric_dict, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
