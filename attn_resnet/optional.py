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


def missing_extra(module: str, extra: str) -> str | None:
    """None when ``module`` can be imported; else the sentence saying which extra installs it."""
    try:
        if importlib.util.find_spec(module) is not None:
            return None
    except (ImportError, ValueError):
        pass
    return (f"needs the {module} package, which is not installed here. Install the optional extra: "
            f"pip install -e \".[{extra}]\" in a checkout (pip install \"attn-resnet[{extra}]\" from a wheel).")
