"""A deployable weights file: the network's tensors in safetensors, its description in the header.

The header's metadata (strings only, as safetensors requires) says what the tensors are:
``format`` ("attn-resnet-weights"), ``version``, ``model_spec`` (the keyword arguments of
``ResidualNet``, as JSON) and ``input`` (mean, std, image_size and class_names, as JSON).
Reading one never runs code: safetensors holds tensors and a JSON header, nothing else.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import torch

from .official import CheckpointError

WEIGHTS_FORMAT = "attn-resnet-weights"
WEIGHTS_VERSION = 1
SAFETENSORS_SUFFIXES = (".safetensors",)


def is_safetensors(path: str | os.PathLike) -> bool:
    """True when ``path`` starts like a safetensors file: an 8-byte little-endian header size, then '{'."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(9)
    except OSError:
        return False
    if len(head) < 9 or head[8:9] != b"{":
        return False
    size = int.from_bytes(head[:8], "little")
    return 0 < size <= os.path.getsize(path) - 8


def save_weights(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], model_spec: Mapping[str, Any],
                 input_info: Mapping[str, Any] | None = None, package_version: str | None = None) -> None:
    """Write ``state_dict`` as safetensors with the model spec and input description in its header."""
    from safetensors.torch import save_file

    from .. import __version__

    metadata = {
        "format": WEIGHTS_FORMAT,
        "version": str(WEIGHTS_VERSION),
        "package_version": package_version or __version__,
        "model_spec": json.dumps(dict(model_spec), sort_keys=True),
        "input": json.dumps(dict(input_info or {}), sort_keys=True),
    }
    # safetensors refuses tensors that share memory or are not contiguous; a state_dict may hold both.
    tensors = {key: value.detach().to("cpu").contiguous().clone() for key, value in state_dict.items()}
    save_file(tensors, os.fspath(path), metadata=metadata)


def read_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, metadata)`` of a safetensors file; metadata's JSON fields decoded (empty for a foreign file).

    A corrupt or truncated file raises ``CheckpointError`` saying so.
    """
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"Weights file {path!r} does not exist. Check the path.")
    try:
        with safe_open(path, framework="pt", device="cpu") as handle:
            raw = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"Could not read {path!r} ({os.path.getsize(path):,} bytes) as a safetensors file: "
            f"{str(error).splitlines()[0][:200]}. The file is corrupt or truncated; re-copy or re-export it."
        ) from None
    metadata: dict[str, Any] = dict(raw)
    for key in ("model_spec", "input"):
        if key in raw:
            try:
                metadata[key] = json.loads(raw[key])
            except json.JSONDecodeError:
                raise CheckpointError(
                    f"{path!r}: its header's {key!r} entry is not valid JSON; the file was not written by "
                    f"attn-resnet's export, or was edited. Re-export it with scripts/export.py."
                ) from None
    return tensors, metadata


def is_our_weights(metadata: Mapping[str, Any]) -> bool:
    """True for the metadata of a file that ``save_weights`` wrote."""
    return metadata.get("format") == WEIGHTS_FORMAT and isinstance(metadata.get("model_spec"), dict)
