"""Progress of a phase (a train epoch, a validation pass): a tqdm bar on a terminal, log lines elsewhere.

Under Slurm, nohup or CI stderr is not a terminal and a bar would only litter the log, so
there the phase logs one line every ``interval`` seconds instead (so it does on a terminal too
narrow to show a bar, such as a console that reports 0 columns): batches done, images/s,
elapsed time and ETA, plus the caller's running statistics. Statistics come from a callable
read only when a bar refresh or a line is due, so reporting never syncs the device per step.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from typing import Callable, Mapping, TextIO

from tqdm import tqdm

log = logging.getLogger(__name__)

Stats = Callable[[], Mapping[str, str]]


def format_duration(seconds: float) -> str:
    """Seconds as m:ss or h:mm:ss; "?" when unknown."""
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(max(round(seconds), 0), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


# Narrower than this a bar shows little more than its description; some consoles (an IDE's run
# pane, a container started without a size) report 0 columns, where tqdm shows nothing at all.
MIN_BAR_COLUMNS = 20


def is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def terminal_columns(stream) -> int | None:
    """The width of the terminal behind ``stream``, as tqdm measures it; None when it cannot be asked."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):  # no file descriptor (a wrapped stream), or no size
        return None


def _wide_enough(columns: int | None) -> bool:
    return columns is None or columns >= MIN_BAR_COLUMNS  # a size that cannot be asked: trust the terminal


class ProgressReporter:
    """How a run reports progress: ``phase(...)`` opens one phase (use it as a context manager).

    ``enabled=False`` reports nothing; ``interval`` is the seconds between log lines when
    ``stream`` (stderr by default) is not a terminal or one narrower than ``MIN_BAR_COLUMNS``, 0 for none; a terminal bar refreshes its
    statistics every ``refresh_every`` batches. ``clock`` is injectable for tests.
    """

    def __init__(self, enabled: bool = True, interval: float = 30.0, refresh_every: int = 20,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = enabled
        self.interval = float(interval)
        self.refresh_every = max(int(refresh_every), 1)
        self.stream = stream
        self.clock = clock

    def phase(self, desc: str, total: int, initial: int = 0, stats: Stats | None = None) -> PhaseProgress:
        """Progress of ``total`` batches named ``desc``, of which ``initial`` were done before (a resume)."""
        stream = self.stream if self.stream is not None else sys.stderr
        if not self.enabled:
            mode = None
        elif is_terminal(stream) and _wide_enough(terminal_columns(stream)):
            mode = "bar"
        else:
            mode = "lines" if self.interval > 0 else None
        return PhaseProgress(self, desc, total, initial, stats, mode, stream)


class PhaseProgress:
    """One phase; the loop calls ``update(images)`` once per batch."""

    def __init__(self, reporter: ProgressReporter, desc: str, total: int, initial: int, stats: Stats | None,
                 mode: str | None, stream: TextIO) -> None:
        self.reporter, self.desc, self.total, self.initial = reporter, desc, total, initial
        self.stats = stats or dict
        self.mode = mode
        self.done, self.images = initial, 0
        self.started = reporter.clock()
        self.next_line = self.started + reporter.interval
        self.bar = None
        if mode == "bar":
            self.bar = tqdm(total=total, initial=initial, desc=desc, file=stream, leave=False, dynamic_ncols=True,
                            unit="batch")

    def __enter__(self) -> PhaseProgress:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def update(self, images: int) -> None:
        """One more batch of ``images`` images is done."""
        self.done += 1
        self.images += images
        if self.bar is not None:
            self.bar.update(1)
            if self.done % self.reporter.refresh_every == 0:
                elapsed = self.reporter.clock() - self.started
                self.bar.set_postfix(**self.stats(), img_s=f"{self.images / max(elapsed, 1e-9):.0f}")
        elif self.mode == "lines":
            now = self.reporter.clock()
            if now >= self.next_line:
                self.next_line = now + self.reporter.interval
                log.info("%s", self.line(now))

    def line(self, now: float) -> str:
        """E.g. "train epoch 2/90: 120/390 batches (31%), 812.4 img/s, elapsed 1:10, ETA 2:38, loss 1.234"."""
        elapsed = now - self.started
        done_here = self.done - self.initial
        eta = (self.total - self.done) * elapsed / done_here if done_here > 0 else math.inf
        parts = [f"{self.done}/{self.total} batches ({100 * self.done / max(self.total, 1):.0f}%)",
                 f"{self.images / max(elapsed, 1e-9):.1f} img/s",
                 f"elapsed {format_duration(elapsed)}", f"ETA {format_duration(eta)}"]
        parts += [f"{name} {value}" for name, value in self.stats().items()]
        return f"{self.desc}: {', '.join(parts)}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
