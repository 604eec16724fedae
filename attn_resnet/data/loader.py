"""Loaders: ``build_loader`` (a DataLoader over a ``ResumableBatchSampler`` with seeded workers),
``resolve_num_workers`` (how many workers this machine can feed) and ``iterate_batches``
(the loop's view of a loader, with readable errors from worker processes)."""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterable, Iterator
from numbers import Integral
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .common import DataError
from .sampler import ResumableBatchSampler

MAX_AUTO_WORKERS = 8  # more rarely helps one GPU and costs memory and start-up time


def seed_worker(worker_id: int) -> None:
    """Seed ``random`` and ``numpy`` in a worker from its torch seed (torch seeds only itself)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, else all of them)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def resolve_num_workers(requested: Any, local_processes: int = 1) -> tuple[int, str]:
    """``(num_workers, sentence for the log)`` for the option ``data.num_workers``.

    "auto" takes every available core, at most ``MAX_AUTO_WORKERS``; an integer is used as
    given but capped at the available cores, since more workers than cores only add
    switching (and PyTorch warns about them). ``local_processes`` processes on this machine
    (data-parallel ranks) share the cores equally. DataError for anything else.
    """
    if isinstance(local_processes, bool) or not isinstance(local_processes, Integral) or local_processes < 1:
        raise DataError(f"local_processes must be a positive integer, got {local_processes!r}.")
    cores = max(available_cores() // int(local_processes), 1)
    available = _plural(cores, "core") + (" available" if local_processes == 1 else " per process available")
    if isinstance(requested, str) and requested.strip().lower() == "auto":
        workers = min(cores, MAX_AUTO_WORKERS)
        return workers, f"data.num_workers=auto -> {_plural(workers, 'worker')} ({available})"
    if isinstance(requested, bool) or not isinstance(requested, Integral) or requested < 0:
        raise DataError(
            f"data.num_workers must be a non-negative integer or 'auto', got {requested!r}. "
            "Use 0 to load batches in the main process, or auto to use the available cores."
        )
    requested = int(requested)
    if requested > cores:
        return cores, f"data.num_workers={requested} capped to {cores} ({available})"
    if requested == 0:
        return 0, "data.num_workers=0: batches are loaded in the main process"
    return requested, f"data.num_workers={requested} ({available})"


def epoch_sampler(num_samples: int, batch_size: int, train: bool, seed: int, drop_last: bool | None = None,
                  num_replicas: int = 1, rank: int = 0) -> ResumableBatchSampler:
    """The batch sampler every loader uses: shuffled and dropping the last partial batch when ``train``."""
    return ResumableBatchSampler(num_samples, batch_size, shuffle=train, seed=seed,
                                 drop_last=train if drop_last is None else drop_last,
                                 num_replicas=num_replicas, rank=rank)


def build_loader(
    dataset: Dataset,
    batch_size: int = 128,
    train: bool = True,
    seed: int = 0,
    num_workers: int = 2,
    pin_memory: bool = False,
    persistent_workers: bool = True,
    drop_last: bool | None = None,
    *,
    num_replicas: int = 1,
    rank: int = 0,
) -> DataLoader:
    """DataLoader whose ``batch_sampler`` is a ``ResumableBatchSampler`` (shuffled when ``train``).

    ``drop_last`` defaults to ``train``: a last train batch of one sample breaks BatchNorm,
    while validation must see every sample. Call ``loader.batch_sampler.set_epoch(epoch)``
    before each epoch and ``set_start_batch(k)`` to resume mid-epoch. Batches are the same
    for any ``num_workers``, since every augmentation is seeded by its sample's key.
    Iterate it with ``iterate_batches`` so that errors in workers read cleanly.
    """
    sampler = epoch_sampler(len(dataset), batch_size, train, seed, drop_last, num_replicas, rank)
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers and num_workers > 0,
        worker_init_fn=seed_worker if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
    )


# torch.utils.data re-raises a worker's exception as ``Type(message)`` with this message, where
# "Original Traceback ..." is ``traceback.format_exception`` of the exception (see
# torch/_utils.py, ExceptionWrapper.reraise).
_WORKER_WRAPPER = re.compile(
    r"Caught (?P<type>[\w.]+) (?P<where>[^\n]*?)\.\nOriginal (?P<trace>Traceback \(most recent call last\):\n.*)\Z",
    re.DOTALL,
)
_TRACEBACK_HEADER = "Traceback (most recent call last):\n"


def _wrapped_text(error: BaseException) -> str:
    if error.args and isinstance(error.args[0], str):
        return error.args[0]
    message = getattr(error, "message", None)  # torch's path for exceptions built with message=...
    return message if isinstance(message, str) else str(error)


def _last_exception_message(trace: str, type_name: str) -> str | None:
    """The message of the last exception in ``format_exception`` text, or None if there is none.

    The last block is the exception that was raised (earlier ones are its causes): a header,
    indented frame lines, then ``module.Type: message`` over as many lines as the message has.
    Headers are tried from the last one back, in case a message quotes a traceback itself.
    """
    exception_line = re.compile(rf"(?:[\w.<>]+\.)?{re.escape(type_name)}(?:: |$)")
    end = len(trace)
    while (start := trace.rfind(_TRACEBACK_HEADER, 0, end)) >= 0:
        end = start
        if start and trace[start - 1] != "\n":
            continue
        lines = trace[start + len(_TRACEBACK_HEADER) :].split("\n")
        first = next((i for i, line in enumerate(lines) if not line.startswith(" ")), len(lines))
        if first < len(lines) and (match := exception_line.match(lines[first])):
            return "\n".join(lines[first:])[match.end() :].rstrip("\n")
    return None


def worker_error(error: BaseException) -> DataError | None:
    """A DataError with the original message of an exception re-raised from a DataLoader worker.

    None when ``error`` did not come through torch's worker wrapper (num_workers=0, or an
    error of the main process): those are already readable and pass through unchanged.
    """
    match = _WORKER_WRAPPER.match(_wrapped_text(error))
    if match is None:
        return None
    type_name = match["type"]
    message = _last_exception_message(match["trace"], type_name)
    if message is None:  # an unexpected layout: the last line is still the most telling one
        message = match["trace"].rstrip("\n").rsplit("\n", 1)[-1]
    if isinstance(error, DataError):
        return DataError(message)
    text = f"{type_name}: {message}" if message else type_name
    if not text.endswith((".", "!", "?")):
        text += "."
    return DataError(
        f"Error in a data loader worker: {text} Run with data.num_workers=0 to see the full traceback."
    )


def iterate_batches(loader: Iterable) -> Iterator:
    """The batches of ``loader``; an exception from a worker process is re-raised as a DataError
    carrying the original message, without torch's wrapper text and the worker's traceback.

    Use it for every pass over a DataLoader: ``for images, targets in iterate_batches(loader)``.
    """
    iterator = iter(loader)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except Exception as error:  # noqa: BLE001 - only worker errors are translated, see below
            clean = worker_error(error)
            if clean is None:
                raise
            # torch's re-raising frame holds the error whose traceback holds that frame: a cycle
            # that keeps the iterator, and so the worker processes, alive until the garbage
            # collector runs (then each takes a 5 s timeout to stop). Cut it here.
            error.__traceback__ = None
        else:
            yield batch
            continue
        # Raised outside the except block so that the new error does not hold the old one:
        # a loader without persistent workers then shuts its workers down at once.
        del iterator
        raise clean
