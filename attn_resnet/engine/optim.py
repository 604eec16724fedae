"""Optimizers and learning-rate schedules, built from the registries in ``optim_registry``.

Parameter groups: weight decay off for BN parameters and biases on request, and layer-wise lr
decay (``layer_decay``) and a classifier lr factor (``head_lr_scale``). Schedules: per-step lr factors with a linear warmup (step, multistep,
cosine, constant) and torch's one-cycle schedule with momentum cycling (onecycle).
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..optim_registry import (OPTIMIZER_DEFAULTS, OPTIMIZERS, PROJECT_OPTIM_KEYS, SCHEDULES, accepted_options,
                              check_options, resolve)


_BLOCK = re.compile(r"^layer(\d+)\.(\d+)\.")
_STAGE_ATTENTION = re.compile(r"^stage_attn\.(\d+)\.")


def layer_ids(model: nn.Module) -> tuple[dict[str, int], int]:
    """``({parameter name: layer id}, number of ids)`` of a ResNet with stages ``layer1``.. of blocks.

    The stem is layer 0, each residual block the next id in order, and the classifier (with any
    other parameter) the last; attention after a stage (``stage_attn.k``) shares the id of that
    stage's last block, and attention before the pooling (``head_attn``) that of the network's
    last block, as timm groups a ResNet's parameters for layer-wise lr decay.
    """
    blocks = sorted({tuple(int(v) for v in match.groups()) for name, _ in model.named_parameters()
                     if (match := _BLOCK.match(name))})
    if not blocks:
        raise ValueError("optim.layer_decay needs a ResNet whose stages are layer1, layer2, ... of residual "
                         "blocks; this model has none. Set optim.layer_decay=null.")
    block_id = {block: index + 1 for index, block in enumerate(blocks)}
    last_of_stage = {stage: block_id[max(b for b in blocks if b[0] == stage)] for stage, _ in blocks}
    head = len(blocks) + 1
    ids = {}
    for name, _ in model.named_parameters():
        if match := _BLOCK.match(name):
            ids[name] = block_id[(int(match.group(1)), int(match.group(2)))]
        elif match := _STAGE_ATTENTION.match(name):
            ids[name] = last_of_stage.get(int(match.group(1)) + 1, head)
        elif name.startswith("head_attn."):
            ids[name] = len(blocks)
        elif name.startswith(("conv1.", "bn1.")):
            ids[name] = 0
        else:
            ids[name] = head
    return ids, head + 1


def parameter_groups(model: nn.Module, weight_decay: float, exempt_bn_and_bias: bool,
                     lr: float | None = None, layer_decay: float | None = None,
                     head_lr_scale: float = 1.0) -> list[dict]:
    """The optimizer's parameter groups, over the parameters that train (frozen ones are left out).

    Without ``layer_decay`` and ``head_lr_scale``: one group, or two when BN/bias parameters (every
    parameter with < 2 dims) skip weight decay. With ``layer_decay``, each layer's parameters
    (``layer_ids``) get the lr ``lr * layer_decay ** (last id - id)``: the classifier trains at ``lr``
    and each layer below it at ``layer_decay`` times the lr of the one above (BEiT's layer-wise decay).
    ``head_lr_scale`` multiplies the classifier's (``fc``) lr on top, e.g. 10 for a new head on a
    pretrained trunk. Each scaled group records its ``lr_scale``.
    """
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if layer_decay is None and head_lr_scale == 1.0:
        if not exempt_bn_and_bias:
            return [{"params": [p for _, p in named], "weight_decay": weight_decay}]
        decay, no_decay = [], []
        for _, param in named:
            (no_decay if param.dim() <= 1 else decay).append(param)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if lr is None:
        raise ValueError("parameter_groups needs the base lr to scale per layer (optim.layer_decay) or for the "
                         "classifier (optim.head_lr_scale).")
    ids, count = layer_ids(model) if layer_decay is not None else ({name: 0 for name, _ in named}, 1)
    groups: dict[tuple[int, bool, bool], dict] = {}
    for name, param in named:
        exempt = exempt_bn_and_bias and param.dim() <= 1
        head = name.startswith("fc.")
        layer = ids[name]
        scale = (layer_decay ** (count - 1 - layer) if layer_decay is not None else 1.0) * \
            (head_lr_scale if head else 1.0)
        group = groups.setdefault((layer, head, exempt), {"params": [], "weight_decay": 0.0 if exempt else weight_decay,
                                                          "lr": lr * scale, "lr_scale": scale})
        group["params"].append(param)
    return [groups[key] for key in sorted(groups)]


def optimizer_class(name: str):
    """The optimizer class registered as ``name`` (imports its package)."""
    return resolve(OPTIMIZERS, name, "optimizer")


def build_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    weight_decay: float = 0.0,
    exempt_bn_and_bias: bool = False,
    layer_decay: float | None = None,
    head_lr_scale: float = 1.0,
    device: torch.device | str | None = None,
    fused: bool | None = None,
    **options: Any,
) -> torch.optim.Optimizer:
    """The optimizer registered as ``name`` over ``model``'s parameter groups, with the update kernel that
    suits ``device``; ``options`` go to its constructor (``momentum``, ``betas``, ...), which must take them,
    on top of the project's ``OPTIMIZER_DEFAULTS`` (SGD: momentum 0.9).

    ``device`` is where the parameters will train (that of the model's parameters by default; pass
    it when the model moves there later). ``fused=None`` picks one fused kernel per step on CUDA and
    multi-tensor (foreach) ops elsewhere, where the optimizer has them; True insists on the fused
    kernel, False on foreach. A fused optimizer also takes the fp16 grad scaler's inf check without
    a host sync.
    """
    cls = optimizer_class(name)
    options = {**OPTIMIZER_DEFAULTS.get(name, {}), **options}
    check_options(cls, options, 1, "optim", PROJECT_OPTIM_KEYS)
    groups = parameter_groups(model, weight_decay, exempt_bn_and_bias, lr, layer_decay, head_lr_scale)
    takes = accepted_options(cls, 1)
    if "fused" in takes and _use_fused(model, device, fused):
        options["fused"] = True
    elif "foreach" in takes:
        options["foreach"] = True
    if "betas" in options:
        options["betas"] = tuple(options["betas"])
    return cls(groups, lr=lr, **options)


def _use_fused(model: nn.Module, device: torch.device | str | None, fused: bool | None) -> bool:
    if fused is not None:
        return bool(fused)
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return torch.device(device).type == "cuda"


def factor_scheduler(optimizer: torch.optim.Optimizer, total_epochs: int, steps_per_epoch: int, name: str = "cosine",
                     warmup_epochs: float = 0.0, warmup_start_factor: float = 0.1, step_size: int = 30,
                     milestones: Sequence[int] = (), gamma: float = 0.1,
                     min_factor: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` over ``lr_factor_schedule(name, ...)``: step, multistep, cosine or constant."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor_schedule(
        name, total_epochs, steps_per_epoch, warmup_epochs, warmup_start_factor, step_size, milestones, gamma,
        min_factor))


def one_cycle_scheduler(optimizer: torch.optim.Optimizer, total_epochs: int, steps_per_epoch: int,
                        name: str = "onecycle", warmup_epochs: float | None = None, div_factor: float = 25.0,
                        final_div_factor: float = 1e4, anneal_strategy: str = "cos", cycle_momentum: bool = True,
                        base_momentum: float = 0.85, max_momentum: float = 0.95,
                        three_phase: bool = False) -> torch.optim.lr_scheduler.OneCycleLR:
    """torch's ``OneCycleLR`` (Smith & Topin, 2017) over the whole run, per optimizer step.

    The lr rises from ``lr / div_factor`` to each group's lr over ``warmup_epochs`` (the warmup:
    the cycle's first phase; None: the first 30% of the run, OneCycleLR's default), then anneals to ``lr / (div_factor * final_div_factor)``; with
    ``cycle_momentum`` the momentum (SGD's, or the first beta of Adam-like optimizers) moves the
    other way, from ``max_momentum`` down to ``base_momentum`` and back.
    """
    total = max(1, total_epochs * steps_per_epoch)
    warmup_epochs = 0.3 * total_epochs if warmup_epochs is None else warmup_epochs
    if not 0 < warmup_epochs < total_epochs:
        raise ValueError(f"sched.warmup_epochs={warmup_epochs!r} is not valid for onecycle: the rising phase must "
                         f"last more than 0 and fewer than trainer.epochs={total_epochs} epochs.")
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[group["lr"] for group in optimizer.param_groups], total_steps=total,
        pct_start=warmup_epochs / total_epochs, anneal_strategy=anneal_strategy, cycle_momentum=cycle_momentum,
        base_momentum=base_momentum, max_momentum=max_momentum, div_factor=div_factor,
        final_div_factor=final_div_factor, three_phase=three_phase)


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, total_epochs: int, steps_per_epoch: int,
                    **options: Any) -> torch.optim.lr_scheduler.LRScheduler:
    """The schedule registered as ``name``, stepped once per optimizer step."""
    builder = resolve(SCHEDULES, name, "schedule")
    check_options(builder, options, 3, "sched", ("name",))
    return builder(optimizer, total_epochs, steps_per_epoch, name=name, **options)


def lr_factor_schedule(
    name: str,
    total_epochs: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0.0,
    warmup_start_factor: float = 0.1,
    step_size: int = 30,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    min_factor: float = 0.0,
) -> Callable[[int], float]:
    """Multiplier of the base lr after ``step`` optimizer steps (for ``LambdaLR``).

    Epoch-based rules (step, multistep) change the lr at epoch boundaries as in the
    papers; cosine anneals per step. A linear warmup over ``warmup_epochs`` (fractions
    allowed) ramps from ``warmup_start_factor`` up to the schedule's value.
    """
    if name not in ("step", "multistep", "cosine", "constant"):
        raise ValueError(f"Unknown schedule {name!r}. Valid choices: {', '.join(SCHEDULES)}.")
    steps_per_epoch = max(1, steps_per_epoch)
    total_steps = max(1, total_epochs * steps_per_epoch)
    warmup_steps = int(round(warmup_epochs * steps_per_epoch))
    sorted_milestones = sorted(milestones)

    def base(step: int) -> float:
        epoch = step // steps_per_epoch
        if name == "step":
            return gamma ** (epoch // step_size)
        if name == "multistep":
            return gamma ** sum(epoch >= m for m in sorted_milestones)
        if name == "cosine":
            span = max(1, total_steps - warmup_steps)
            progress = min(1.0, max(0, step - warmup_steps) / span)
            return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    def factor(step: int) -> float:
        if step < warmup_steps:
            ramp = warmup_start_factor + (1 - warmup_start_factor) * step / warmup_steps
            return ramp * base(step)
        return base(step)

    return factor
