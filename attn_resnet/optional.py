"""Optional packages (the extras in pyproject.toml): whether one is installed, checked without
importing it, and the sentence that says how to install it. Torch-free, for the config checks."""

from __future__ import annotations

import importlib.util

DALI_INSTALL = (
    "data.loader=dali needs NVIDIA DALI, which is not installed. Install the optional extra "
    "(pip install -e \".[dali]\", the nvidia-dali-cuda130 package for Linux), or use data.loader=workers."
)


def dali_available() -> bool:
    """True when NVIDIA DALI can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except ModuleNotFoundError:
        return False
