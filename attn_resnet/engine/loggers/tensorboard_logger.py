"""TensorBoard: scalars, images, histograms, and the hyperparameters written into the SAME run folder.

``SummaryWriter.add_hparams`` opens a new timestamped sub-run, which splits a sweep's
HParams view from its curves; writing the three hparams summaries through the run's
own file writer keeps one run per job. A resumed run opens its writer with ``purge_step``
at the first epoch it trains again, so TensorBoard drops what the interrupted attempt had
logged from there on instead of showing those epochs twice. Each epoch's scalars are flushed
to the file at once.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from .base import Logger, RunInfo

log = logging.getLogger(__name__)


class TensorBoardLogger(Logger):
    """Event files in ``log_dir`` (null: the run folder): ``tensorboard --logdir outputs``."""

    name = "tensorboard"
    takes_images = True

    def __init__(self, log_dir: str | None = None) -> None:
        self.log_dir = log_dir
        self.writer = None
        self.params: dict[str, Any] = {}

    def start(self, run: RunInfo, state: dict | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        purge = run.resume_step + 1 if run.resume_step else None
        self.writer = SummaryWriter(log_dir=str(self.log_dir or run.run_dir), purge_step=purge)

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        self.params = dict(params)  # written with the final metrics: the HParams tab needs both at once

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()  # once an epoch: a killed run keeps the epochs it logged

    def log_images(self, tag: str, images, step: int) -> None:
        self.writer.add_images(tag, images.clamp(0, 1), step, dataformats="NCHW")

    def log_histogram(self, tag: str, values, step: int) -> None:
        """A histogram of the finite ``values``; none when none is finite (a diverging run's attention weights
        must not stop it here: the loss check names the divergence)."""
        import torch

        values = torch.as_tensor(values).detach().float().flatten()
        finite = values[torch.isfinite(values)]
        if finite.numel() == 0:
            log.warning("TensorBoard histogram %s at step %d skipped: none of its %d values is finite.", tag, step,
                        values.numel())
            return
        self.writer.add_histogram(tag, finite, step)

    def log_summary(self, metrics: Mapping[str, float], step: int) -> None:
        """The hyperparameters with their final metrics in this run (HParams tab), and the metrics as scalars."""
        from torch.utils.tensorboard.summary import hparams

        experiment, start, end = hparams(dict(self.params), dict(metrics))
        file_writer = self.writer._get_file_writer()
        for summary in (experiment, start, end):
            file_writer.add_summary(summary)
        self.log_metrics(metrics, step)

    def finish(self, status: str) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None
