"""Top-k accuracy and running averages."""

from __future__ import annotations

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


class RunningMean:
    """Sum and count kept as device tensors, so updating never forces a host sync."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def update(self, value, count: int = 1) -> None:
        self.total = self.total + value
        self.count += count

    @property
    def mean(self) -> float:
        return float(self.total) / max(self.count, 1)

    def state_dict(self) -> dict:
        return {"total": float(self.total), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.total, self.count = state["total"], state["count"]
