"""Training checkpoints: atomic writes, safe reads, and the full RNG state."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models.official import CheckpointError, read_checkpoint

CHECKPOINT_FORMAT = "attn-resnet-checkpoint"
CHECKPOINT_VERSION = 1


def save_atomic(payload: Any, path: str | os.PathLike) -> None:
    """Write ``payload`` with torch.save to a temp file, fsync it, then rename over ``path``.

    A crash at any moment leaves either the old file or the new one, never a torn file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temp_name, 0o666 & ~umask)  # mkstemp creates 0600; give the usual file mode
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(payload, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except BaseException:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


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
