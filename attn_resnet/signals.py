"""Stops from outside: SIGTERM as an exception, Ctrl-C (SIGINT) as a request to stop at the next step boundary."""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator


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


class StopRequest:
    """Set by a first Ctrl-C: the loop finishes its optimizer step, writes a checkpoint there and stops."""

    def __init__(self) -> None:
        self.requested = False


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
