"""Training checkpoints: atomic writes, safe reads, and the full RNG state."""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

from ..models.official import CheckpointError, read_checkpoint
from ..runfiles import write_file_atomic

CHECKPOINT_FORMAT = "attn-resnet-checkpoint"
CHECKPOINT_VERSION = 1


def save_atomic(payload: Any, path: str | os.PathLike) -> None:
    """Write ``payload`` with torch.save to a temp file, fsync it, then rename it over ``path``.

    A crash at any moment leaves either the old file or the new one, never a torn file. A
    full disk, a read-only folder or a file named like the checkpoint folder raises a
    RunFolderError naming ``path``; the old checkpoint stays as it was and no temp file remains.
    """
    write_file_atomic(path, lambda stream: torch.save(payload, stream), action="save the checkpoint")


def rng_state() -> dict:
    """Every RNG the loop touches, as plain tensors/containers (loadable with weights_only)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_training_checkpoint(path: str | os.PathLike) -> dict:
    """Read one of our training checkpoints; refuse foreign or corrupt files with a clear error."""
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        keys = sorted(checkpoint)[:6] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(
            f"{os.fspath(path)!r} is not an attn-resnet training checkpoint (found {keys}). "
            f"To evaluate the CBAM/BAM authors' released weights pass checkpoint_format=official; "
            f"to resume training pass a checkpoints/last.pt written by train.py."
        )
    if checkpoint.get("version", 0) > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{os.fspath(path)!r} was written by a newer attn-resnet (checkpoint version "
            f"{checkpoint['version']}); upgrade the package to read it."
        )
    return checkpoint
