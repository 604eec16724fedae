"""SIGTERM as an exception, so that a run stopped from outside records how it ended."""

from __future__ import annotations

import os
import signal
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
