"""Contenders timed in turns, and the medians and paired ratios of their per-repeat times."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch

from ..engine.throughput import synchronize


def median(values: list[float]) -> float:
    return statistics.median(values)


def paired_ratio(numerator: list[float] | None, denominator: list[float] | None) -> dict[str, Any]:
    """``{"ratio", "spread"}`` of two contenders' per-repeat times: the median of the per-repeat
    ratios ``numerator[i] / denominator[i]``, and their first and third quartiles.

    Repeat i of two contenders ran in the same turn, seconds apart, so each of these ratios sees
    nearly the same machine load. The ratio of the two medians would not: on a machine whose load
    drifts, the two medians can come from different repeats, and that ratio can fall outside the
    range of every paired one. The quartiles say how far the ratio can be trusted on this machine
    (None with fewer than two repeats).
    """
    if not numerator or not denominator or len(numerator) != len(denominator):
        return {"ratio": None, "spread": None}
    ratios = [n / d for n, d in zip(numerator, denominator) if d > 0]
    if not ratios:
        return {"ratio": None, "spread": None}
    if len(ratios) < 2:
        return {"ratio": ratios[0], "spread": None}
    first, middle, third = statistics.quantiles(ratios, n=4, method="inclusive")
    return {"ratio": middle, "spread": [first, third]}


def repeat_steps(step: Callable[[], None], iters: int) -> Callable[[], int]:
    """A contender for ``timed_turns``: ``iters`` calls of ``step``, counted as ``iters`` units."""
    def run() -> int:
        for _ in range(iters):
            step()
        return iters

    return run


def timed_turns(contenders: dict[str, Callable[[], int]], repeats: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per unit of each contender, one value per repeat; the contenders take turns.

    Each callable runs its work and returns how many units (steps, images) it did. The order
    rotates every repeat, so no contender always follows the same neighbour.
    """
    names = list(contenders)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            synchronize(device)
            started = time.perf_counter()
            units = contenders[name]()
            synchronize(device)
            seconds[name].append((time.perf_counter() - started) / units)
    return seconds


def timed_warmup(step: Callable[[], None], steps: int, device: torch.device) -> float:
    """Seconds that ``steps`` calls of ``step`` take: the warm-up before the timed turns (compilation included)."""
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return time.perf_counter() - started
