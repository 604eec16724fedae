"""Training throughput: seconds and images of the measured steps, with compile time kept apart.

The loop measures spans (an epoch, or the part of one between two checkpoints) and counts the
images trained in them. A step that compiles (or records CUDA graphs) is timed on its own, with a
device sync on both sides, and reported as compile time instead of training time, so images/s
describes the steady state whatever the compile mode.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that the host clock measures it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Throughput:
    """Training seconds and images for images/s (run total and current epoch), and compile seconds.

    ``compiling_steps``: how many of the next training steps compile (set by the trainer when it
    compiles); each is timed apart. ``replicas``: the ranks of a data-parallel run, which step in
    lockstep on equal shares of each global batch; images/s is the whole run's (this rank's
    images times ``replicas``), while ``images`` counts this rank's.
    """

    def __init__(self, device: torch.device, compiling_steps: int = 0, replicas: int = 1) -> None:
        self.device = device
        self.replicas = int(replicas)
        self.compiling_steps = compiling_steps
        self.seconds = 0.0
        self.images = 0
        self.compile_seconds = 0.0
        self.epoch_seconds = 0.0
        self.epoch_images = 0
        self._span_start: float | None = None
        self._span_images = 0
        self._span_excluded = 0.0

    # ------------------------------------------------------------ spans
    def new_epoch(self) -> None:
        self.epoch_seconds, self.epoch_images = 0.0, 0

    def start(self) -> None:
        """Begin a measured span of training steps."""
        self._span_start = time.perf_counter()
        self._span_images, self._span_excluded = 0, 0.0

    def stop(self) -> None:
        """End the span: wait for the device, then add its time (less compile time) and images."""
        if self._span_start is None:
            return
        synchronize(self.device)
        seconds = time.perf_counter() - self._span_start - self._span_excluded
        self.seconds += seconds
        self.epoch_seconds += seconds
        self.images += self._span_images
        self.epoch_images += self._span_images
        self._span_start = None

    @contextmanager
    def step(self, images: int) -> Iterator[None]:
        """One training step of ``images`` images; a step that compiles is timed apart and not counted."""
        if self.compiling_steps <= 0:
            self._span_images += images
            yield
            return
        self.compiling_steps -= 1
        synchronize(self.device)
        start = time.perf_counter()
        yield
        synchronize(self.device)
        seconds = time.perf_counter() - start
        self.compile_seconds += seconds
        self._span_excluded += seconds

    def time_first_calls(self, function: Callable, calls: int) -> Callable:
        """``function`` whose first ``calls`` calls (those that compile) are added to the compile time.

        For a forward-only pass (evaluation), where compiling happens inside the call.
        """
        remaining = [calls]

        def timed(*args: Any, **kwargs: Any):
            if remaining[0] <= 0:
                return function(*args, **kwargs)
            remaining[0] -= 1
            synchronize(self.device)
            start = time.perf_counter()
            result = function(*args, **kwargs)
            synchronize(self.device)
            self.compile_seconds += time.perf_counter() - start
            return result

        return timed

    # ---------------------------------------------------------- results
    @property
    def images_per_sec(self) -> float:
        return self.images * self.replicas / max(self.seconds, 1e-9)

    @property
    def epoch_images_per_sec(self) -> float:
        return self.epoch_images * self.replicas / max(self.epoch_seconds, 1e-9)

    def state_dict(self) -> dict[str, float]:
        return {"train_seconds": self.seconds, "train_images": self.images, "compile_seconds": self.compile_seconds}

    def load_state_dict(self, state: dict) -> None:
        self.seconds = float(state["train_seconds"])
        self.images = int(state["train_images"])
        self.compile_seconds = float(state.get("compile_seconds", 0.0))  # absent from older checkpoints
