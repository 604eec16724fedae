"""Stops from outside: Ctrl-C (SIGINT) and the stop signals (``trainer.stop_signals``: SIGTERM and SIGUSR2 by
default) as requests to stop at the next step boundary with a checkpoint, and SIGTERM as an exception where it is
not a stop signal.

A stop signal's handler only sets a flag: the loop acts on it at an optimizer-step boundary (all ranks of a
data-parallel run at the same one), writes one checkpoint and raises ``RunStopped``; the entry point then exits
with ``REQUEUE_EXIT_CODE``, or lets submitit requeue the job. Nothing heavy runs in a handler, which Python may
call between any two bytecodes of the main thread (mid-write, mid-collective).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

# The exit status of a run stopped by a stop signal, for the launcher to requeue it: the status submitit's
# local executor reads as "requeue" (``submitit.local.local.LOCAL_REQUEUE_RETURN_CODE``); a batch script
# tests it to call ``scontrol requeue`` (docs/clusters.md).
REQUEUE_EXIT_CODE = 144
DEFAULT_STOP_SIGNALS = ("SIGTERM", "SIGUSR2")


class RunTerminated(RuntimeError):
    """The process was asked to stop (SIGTERM) while training."""


TERMINATED_MESSAGE = (
    "The run received SIGTERM and stopped: torchrun stops every rank when one of them fails (look for the "
    "first error among the ranks' output), and Slurm sends it at the job's time limit or on scancel. The last "
    "checkpoint in the run folder is kept; the same command with hydra.run.dir=<this run folder> resumes from it."
)


@contextmanager
def sigterm_as_error() -> Iterator[None]:
    """Within the block, SIGTERM raises RunTerminated in the main thread (the previous handler comes back after).

    Processes forked inside the block (data loader workers) inherit the handler; in them it
    falls back to the default action, so they still just end.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise RunTerminated(TERMINATED_MESSAGE)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class RunInterrupted(RuntimeError):
    """The run was stopped with Ctrl-C (SIGINT); the message says where and how to resume."""


class RunStopped(RuntimeError):
    """The run stopped on a stop signal with a checkpoint to resume from; the launcher may requeue it.

    ``signals``: the signals received, in order; ``seconds``: from the first of them to the stop (the
    checkpoint written); ``steps``: the optimizer steps at the start of this attempt and at the stop (the
    loop acts on a stop only after a step, so an attempt that stops has always made progress).
    """

    def __init__(self, message: str, signals: list[str], seconds: float, steps: tuple[int, int]) -> None:
        super().__init__(message)
        self.signals, self.seconds, self.steps = list(signals), seconds, steps
        self.signalled_at: float | None = None  # time.monotonic() of the first signal
        self.launcher_handlers: dict[str, Callable] = {}


class StopRequest:
    """Set by a first Ctrl-C or a stop signal: the loop finishes its optimizer step, writes a checkpoint there
    and stops (``RunInterrupted`` for Ctrl-C, ``RunStopped`` for a signal).

    ``signals`` lists the stop signals received (each once, in order) and ``signalled_at`` the
    ``time.monotonic()`` of the first;
    ``launcher_handlers`` the handlers that were in place for them before (submitit's requeue handler).
    """

    def __init__(self) -> None:
        self.requested = False
        self.signals: list[str] = []
        self.signalled_at: float | None = None
        self.launcher_handlers: dict[str, Callable] = {}

    def signalled(self, name: str) -> None:
        """Record the stop signal ``name`` (called from the handler: a few assignments, nothing else)."""
        if self.signalled_at is None:
            self.signalled_at = time.monotonic()
        if name not in self.signals:  # a signal sent twice (by Slurm and again by torchrun) is one request
            self.signals.append(name)
        self.requested = True

    def seconds_since_signal(self) -> float:
        return 0.0 if self.signalled_at is None else time.monotonic() - self.signalled_at

    def error(self, where: str, steps: tuple[int, int]) -> RuntimeError:
        """The exception that stops the loop ``where`` (the trainer's position and what holds it)."""
        if not self.signals:
            return RunInterrupted(where)
        names = " then ".join(self.signals)
        seconds = self.seconds_since_signal()
        stopped = RunStopped(f"Stopped on {names} {where} ({seconds:.1f} s after the signal).", self.signals,
                             seconds, steps)
        stopped.signalled_at, stopped.launcher_handlers = self.signalled_at, dict(self.launcher_handlers)
        return stopped


STOP_NOTICE = ("\nCtrl-C: stopping after this step and writing a checkpoint to resume from "
               "(press Ctrl-C again to stop at once, keeping only the last checkpoint written).")


@contextmanager
def sigint_as_stop_request(stop: StopRequest) -> Iterator[None]:
    """Within the block, a first SIGINT sets ``stop.requested``; a second raises KeyboardInterrupt.

    A stop between two optimizer steps leaves a checkpoint that resumes bit-exactly; a
    KeyboardInterrupt raised wherever Python happens to be (mid-step, mid-write) could not.
    Data loader workers forked inside the block inherit the handler and ignore the signal
    there: Ctrl-C reaches every process of the terminal's group, and the main process decides.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:
            return
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True
        print(STOP_NOTICE, file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def signal_numbers(names: list[str] | tuple[str, ...]) -> dict[str, int]:
    """``{"SIGTERM": 15, ...}`` for the signal names given; ValueError naming an unknown one and the valid ones."""
    numbers = {}
    for name in names:
        number = getattr(signal.Signals, str(name), None)
        if number is None or not str(name).startswith("SIG") or str(name) in ("SIGKILL", "SIGSTOP"):
            valid = sorted(s.name for s in signal.Signals if s.name not in ("SIGKILL", "SIGSTOP"))
            raise ValueError(f"Invalid signal {name!r} in trainer.stop_signals: give signal names such as "
                             f"[SIGTERM,SIGUSR2] (SIGKILL and SIGSTOP cannot be caught). Valid names: "
                             f"{', '.join(valid)}.")
        numbers[str(name)] = int(number)
    return numbers


@contextmanager
def stop_on_signals(stop: StopRequest, names: list[str] | tuple[str, ...]) -> Iterator[None]:
    """Within the block, each signal of ``names`` (e.g. SIGTERM, SIGUSR2) records itself in ``stop``; nothing more.

    The handlers in place before (submitit's requeue handler for its preemption signal) are kept in
    ``stop.launcher_handlers`` for the entry point, and come back after the block. Processes forked inside
    the block (data loader workers) inherit the handler and ignore the signal there: Slurm signals every
    process of a job step, and a loader worker that ended on it would stop the run before its checkpoint.
    """
    if threading.current_thread() is not threading.main_thread() or not names:
        yield
        return
    owner = os.getpid()
    numbers = signal_numbers(names)
    by_number = {number: name for name, number in numbers.items()}

    def handler(signum, frame):
        if os.getpid() == owner:
            stop.signalled(by_number[signum])

    previous = {}
    for name, number in numbers.items():
        previous[number] = signal.signal(number, handler)
        if callable(previous[number]):
            stop.launcher_handlers[name] = previous[number]
    try:
        yield
    finally:
        for number, handler_before in previous.items():
            signal.signal(number, handler_before)
