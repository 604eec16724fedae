"""The optimizer and schedule registries: a name and where its callable lives.

Torch-free, as ``attention_registry`` is for the blocks, so that the config layer knows the valid
``optim.name`` and ``sched.name`` without importing torch; the config validation and the builders
in ``engine.optim`` all read these registries (``attn_resnet.registry.Registry``). Adding a built-in
optimizer is one line here plus one ``conf/optim/<name>.yaml``: the keys of that file other than the
project's own (``PROJECT_OPTIM_KEYS``) are passed to the optimizer's constructor, and the config
validation checks, before any data is read, that its constructor takes each of them. One from
outside the package comes in the same way as a block: ``optim.name=mypkg.optim:MyOptimizer`` (an
import path), an entry point of the group ``attn_resnet.optimizers`` (``attn_resnet.schedules`` for
schedules), or ``register_optimizer(name, cls)``; its options come from the user's own
``conf/optim/<name>.yaml`` on ``hydra.searchpath``.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from .registry import Registry, RegistryError

__all__ = ["OPTIMIZERS", "OPTIMIZER_DEFAULTS", "PROJECT_OPTIM_KEYS", "SCHEDULES", "RegistryError", "accepted_options",
           "check_options", "register_optimizer", "register_schedule", "resolve"]

# name -> "module:callable"; the callable is the optimizer class, called as cls(param_groups, lr=..., **options)
OPTIMIZERS = Registry("optimizer", "attn_resnet.optimizers", {
    "sgd": "torch.optim:SGD",
    "adamw": "torch.optim:AdamW",
    # LAMB (You et al., 2020) and Lion (Chen et al., 2023) as timm implements and maintains them.
    "lamb": "timm.optim:Lamb",
    "lion": "timm.optim:Lion",
})

# Options the project gives an optimizer when the caller does not: SGD here means SGD with momentum
# 0.9, as in the papers (torch's own default is no momentum).
OPTIMIZER_DEFAULTS: dict[str, dict[str, Any]] = {"sgd": {"momentum": 0.9}}

# name -> "module:callable"; called as builder(optimizer, total_epochs, steps_per_epoch, name=name, **options)
# -> LRScheduler
SCHEDULES = Registry("schedule", "attn_resnet.schedules", {
    "step": "attn_resnet.engine.optim:factor_scheduler",
    "multistep": "attn_resnet.engine.optim:factor_scheduler",
    "cosine": "attn_resnet.engine.optim:factor_scheduler",
    "constant": "attn_resnet.engine.optim:factor_scheduler",
    "onecycle": "attn_resnet.engine.optim:one_cycle_scheduler",
})

# optim.* keys the project handles itself (parameter groups, lr scaling); the rest go to the optimizer.
PROJECT_OPTIM_KEYS = ("name", "lr", "reference_batch_size", "weight_decay", "exempt_bn_and_bias", "layer_decay",
                      "head_lr_scale")


def register_optimizer(name: str, cls: Any, *, replace: bool = False) -> None:
    """Register an optimizer class (called as ``cls(param_groups, lr=..., **options)``) under ``name``."""
    OPTIMIZERS.register(name, cls, replace=replace)


def register_schedule(name: str, builder: Any, *, replace: bool = False) -> None:
    """Register a schedule builder (``builder(optimizer, total_epochs, steps_per_epoch, name=..., **options)``
    returning an ``LRScheduler`` stepped once per optimizer step) under ``name``."""
    SCHEDULES.register(name, builder, replace=replace)


def resolve(registry: Registry, name: str, kind: str | None = None) -> Callable[..., Any]:
    """Import and return the callable ``name`` names in ``registry`` (a name, an entry point or an import path)."""
    return registry.load(name)


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
