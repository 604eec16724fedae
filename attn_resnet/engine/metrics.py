"""Top-k accuracy and running averages."""

from __future__ import annotations

import torch


def topk_correct(logits: torch.Tensor, target: torch.Tensor, topk: tuple[int, ...] = (1, 5)) -> list[torch.Tensor]:
    """Number of samples whose target is among the k highest logits, for each k (on device)."""
    maxk = min(max(topk), logits.shape[1])
    predicted = logits.topk(maxk, dim=1).indices
    hits = predicted.eq(target[:, None])
    return [hits[:, : min(k, maxk)].any(dim=1).sum() for k in topk]


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
