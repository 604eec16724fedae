"""Top-k accuracy, and the training meters that stay on the device."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


def topk_correct(logits: torch.Tensor, target: torch.Tensor, topk: tuple[int, ...] = (1, 5)) -> list[torch.Tensor]:
    """Number of samples whose target is among the k highest logits, for each k (on device).

    A k above the class count is clamped to it (every sample counts as correct); accuracies
    that are reported go through ``TopKAccuracy``, which calls such a k undefined instead.
    """
    maxk = min(max(topk), logits.shape[1])
    predicted = logits.topk(maxk, dim=1).indices
    hits = predicted.eq(target[:, None])
    return [hits[:, : min(k, maxk)].any(dim=1).sum() for k in topk]


class TopKAccuracy:
    """Top-k accuracies (%) over many batches; counts stay on the device until ``compute``.

    Top-k of a model with k or fewer classes is always 100%, so ``compute`` gives None for
    any k above the class count rather than a number that looks like a result.
    """

    def __init__(self, topk: tuple[int, ...] = (1, 5)) -> None:
        self.topk = tuple(topk)
        self.correct: list[torch.Tensor | int] = [0] * len(self.topk)
        self.count = 0
        self.num_classes: int | None = None

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        hits = topk_correct(logits, target, self.topk)
        self.correct = [total + new for total, new in zip(self.correct, hits)]
        self.count += target.shape[0]
        self.num_classes = logits.shape[1]

    def defined(self, k: int) -> bool:
        return self.num_classes is None or k <= self.num_classes

    def compute(self) -> dict[int, float | None]:
        count = max(self.count, 1)
        return {k: 100.0 * float(correct) / count if self.defined(k) else None
                for k, correct in zip(self.topk, self.correct)}


@dataclass(frozen=True)
class MeterReading:
    """The host copy of ``TrainingMeters`` at one moment; ``extra`` holds what was read along with it."""

    loss_sum: float
    correct: float
    images: int
    bad_batch: int | None      # batch (0-based in the epoch) whose loss broke the non-finite limit, if any
    bad_loss: float            # that batch's loss
    extra: tuple[float, ...] = ()

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.images, 1)

    @property
    def acc1(self) -> float:
        return 100.0 * self.correct / max(self.images, 1)


class TrainingMeters:
    """Loss, top-1 hits and a non-finite-loss watch over one training epoch, all kept on the device.

    ``update`` is a handful of in-place tensor ops, so a training step never waits for the host;
    ``read`` copies everything to the host in one transfer, at log points and checkpoints. A batch
    with a NaN/inf loss is left out of the sums. ``tolerance`` is how many consecutive non-finite
    losses are allowed (those steps the fp16 grad scaler skips; 0 otherwise): the first batch past it
    is recorded with its loss, so the error can name it exactly although it is read later.

    ``gather`` (``Distributed.gather`` in a data-parallel run) makes ``read`` a collective that
    returns the whole run's sums and the earliest non-finite batch of any rank, so every rank
    sees the same reading and stops together; ``read(local=True)`` reads this rank alone.
    """

    def __init__(self, device: torch.device, tolerance: int = 0,
                 gather: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.device = device
        self.tolerance = int(tolerance)
        self.gather = gather
        self.reset()

    def reset(self) -> None:
        def scalar(value, dtype):
            return torch.full((), value, dtype=dtype, device=self.device)

        self.loss_sum = scalar(0.0, torch.float64)
        self.correct = scalar(0.0, torch.float64)
        self.images = scalar(0.0, torch.float64)
        self.streak = scalar(0, torch.int64)          # consecutive non-finite losses so far
        self.bad_batch = scalar(-1, torch.int64)
        self.bad_loss = scalar(0.0, torch.float32)
        self._reading: MeterReading | None = None

    def update(self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, batch: int) -> None:
        """Add one batch (``batch``: its 0-based index in the epoch); no host sync."""
        count = targets.shape[0]
        loss = loss.float()
        finite = torch.isfinite(loss)
        self.loss_sum.add_(torch.where(finite, loss, 0.0), alpha=count)
        self.correct.add_(torch.where(finite, topk_correct(logits, targets, (1,))[0], 0))
        self.images.add_(finite, alpha=count)
        self.streak.add_(1).mul_(~finite)
        broke_limit = (self.streak > self.tolerance) & (self.bad_batch < 0)
        self.bad_batch.copy_(torch.where(broke_limit, batch, self.bad_batch))
        self.bad_loss.copy_(torch.where(broke_limit, loss, self.bad_loss))
        self._reading = None

    def read(self, extra: torch.Tensor | None = None, local: bool = False) -> MeterReading:
        """Everything in one device-to-host copy, with ``extra`` (a 0-d or 1-d tensor) read along.

        Without ``extra`` a reading is cached until the next ``update``, so progress reports and
        checks at the same batch share one copy. Across ranks (``gather``) the sums are the
        run's, ``bad_batch`` the earliest of any rank and ``extra`` its minimum over the ranks
        (a finiteness flag is true only if true everywhere). ``local``: this rank alone, no
        collective (for progress displays, which only rank 0 shows).
        """
        if local and self.gather is not None:
            return self._reading_of(self._values(extra)[None].tolist())
        if extra is None and self._reading is not None:
            return self._reading
        values = self._values(extra)
        rows = (self.gather(values) if self.gather is not None else values[None]).tolist()
        reading = self._reading_of(rows)
        if extra is None:
            self._reading = reading
        return reading

    def _values(self, extra: torch.Tensor | None) -> torch.Tensor:
        values = [self.loss_sum, self.correct, self.images, self.bad_batch.double(), self.bad_loss.double()]
        if extra is not None:
            values.append(extra.detach().double().reshape(-1).to(self.device))
        return torch.cat([value.reshape(-1) for value in values])

    @staticmethod
    def _reading_of(rows: list[list[float]]) -> MeterReading:
        """One reading from each rank's row of values (one row for a single process)."""
        bad = [row for row in rows if row[3] >= 0]
        first_bad = min(bad, key=lambda row: row[3]) if bad else None
        extra = tuple(min(column) for column in zip(*(row[5:] for row in rows)))
        return MeterReading(sum(row[0] for row in rows), sum(row[1] for row in rows), round(sum(row[2] for row in rows)),
                            None if first_bad is None else round(first_bad[3]),
                            0.0 if first_bad is None else first_bad[4], extra)

    @staticmethod
    def state_from(reading: MeterReading) -> dict:
        """A checkpoint's ``epoch_meters`` (running sums of loss and of 100 * hits, over ``count`` images)."""
        return {"loss": {"total": reading.loss_sum, "count": reading.images},
                "acc1": {"total": 100.0 * reading.correct, "count": reading.images}}

    def load_state_dict(self, state: dict) -> None:
        self.reset()
        self.loss_sum.fill_(float(state["loss"]["total"]))
        self.correct.fill_(float(state["acc1"]["total"]) / 100.0)
        self.images.fill_(float(state["loss"]["count"]))
