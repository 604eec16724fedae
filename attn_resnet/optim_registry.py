"""The optimizer and schedule registries: a name and where its callable lives.

Torch-free, as ``attention_registry`` is for the blocks, so that the config layer knows the valid
``optim.name`` and ``sched.name`` without importing torch; the choice lists, the config
validation and the builders in ``engine.optim`` all read these tables. Adding an optimizer is one
line here plus one ``conf/optim/<name>.yaml``: the keys of that file other than the project's own
(``PROJECT_OPTIM_KEYS``) are passed to the optimizer's constructor, and the config validation
checks, before any data is read, that its constructor takes each of them.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable

# name -> "module:callable"; the callable is the optimizer class, called as cls(param_groups, lr=..., **options)
OPTIMIZERS: dict[str, str] = {
    "sgd": "torch.optim:SGD",
    "adamw": "torch.optim:AdamW",
    # LAMB (You et al., 2020) and Lion (Chen et al., 2023) as timm implements and maintains them.
    "lamb": "timm.optim:Lamb",
    "lion": "timm.optim:Lion",
}

# Options the project gives an optimizer when the caller does not: SGD here means SGD with momentum
# 0.9, as in the papers (torch's own default is no momentum).
OPTIMIZER_DEFAULTS: dict[str, dict[str, Any]] = {"sgd": {"momentum": 0.9}}

# name -> "module:callable"; called as builder(optimizer, total_epochs, steps_per_epoch, **options) -> LRScheduler
SCHEDULES: dict[str, str] = {
    "step": "attn_resnet.engine.optim:factor_scheduler",
    "multistep": "attn_resnet.engine.optim:factor_scheduler",
    "cosine": "attn_resnet.engine.optim:factor_scheduler",
    "constant": "attn_resnet.engine.optim:factor_scheduler",
    "onecycle": "attn_resnet.engine.optim:one_cycle_scheduler",
}

# optim.* keys the project handles itself (parameter groups, lr scaling); the rest go to the optimizer.
PROJECT_OPTIM_KEYS = ("name", "lr", "reference_batch_size", "weight_decay", "exempt_bn_and_bias", "layer_decay",
                      "head_lr_scale")

# The package a module needs, and how to install it, for the ones outside the core dependencies.
INSTALL_HINTS = {
    "timm": 'pip install "timm>=1.0" (or: pip install -e ".[recipes]")',
}


class RegistryError(ValueError):
    """A name that is not registered, an option its callable does not take, or a package that is missing."""


def resolve(table: dict[str, str], name: str, kind: str) -> Callable[..., Any]:
    """Import and return the callable registered as ``name`` in ``table``."""
    if name not in table:
        raise RegistryError(f"Unknown {kind} {name!r}. Valid choices: {', '.join(table)}.")
    module_name, _, attribute = table[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        package = module_name.split(".")[0]
        hint = INSTALL_HINTS.get(package, f"pip install {package}")
        raise RegistryError(f"The {kind} {name!r} comes from the package {package!r}, which is not installed "
                            f"({error}). Install it: {hint}.") from None
    return getattr(module, attribute)


def accepted_options(function: Callable[..., Any], skip: int) -> dict[str, Any]:
    """``{keyword: default}`` of ``function``'s parameters after the first ``skip`` (positional ones)."""
    parameters = list(inspect.signature(function).parameters.values())[skip:]
    return {p.name: p.default for p in parameters
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"}


def check_options(function: Callable[..., Any], options: dict[str, Any], skip: int, where: str,
                  handled: tuple[str, ...] = ()) -> None:
    """RegistryError naming the first of ``options`` that ``function`` does not take, and those it does
    (less the ``handled`` ones, which the project sets itself)."""
    accepted = {key: value for key, value in accepted_options(function, skip).items() if key not in handled}
    unknown = [key for key in options if key not in accepted]
    if unknown:
        listed = ", ".join(f"{key} (default {value!r})" if value is not inspect.Parameter.empty else key
                           for key, value in accepted.items())
        raise RegistryError(f"{where}.{unknown[0]} is not an option of {function.__module__}."
                            f"{getattr(function, '__qualname__', function)}; it takes: {listed}.")
