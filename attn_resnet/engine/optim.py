"""Optimizers (SGD, AdamW) and per-step learning-rate schedules with warmup."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

OPTIMIZER_CHOICES = ("sgd", "adamw")
SCHEDULE_CHOICES = ("step", "multistep", "cosine", "constant")


def parameter_groups(model: nn.Module, weight_decay: float, exempt_bn_and_bias: bool) -> list[dict]:
    """One group, or two when BN/bias parameters (every parameter with < 2 dims) skip weight decay."""
    if not exempt_bn_and_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.dim() <= 1 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    nesterov: bool = False,
    betas: Sequence[float] = (0.9, 0.999),
    eps: float = 1e-8,
    exempt_bn_and_bias: bool = False,
    device: torch.device | str | None = None,
    fused: bool | None = None,
) -> torch.optim.Optimizer:
    """SGD or AdamW over ``model``'s parameters, with the update kernel that suits ``device``.

    ``device`` is where the parameters will train (that of the model's parameters by default; pass
    it when the model moves there later). ``fused=None`` picks one fused kernel per step on CUDA and
    multi-tensor (foreach) ops elsewhere; True insists on the fused kernel, False on foreach. A fused
    optimizer also takes the fp16 grad scaler's inf check without a host sync.
    """
    groups = parameter_groups(model, weight_decay, exempt_bn_and_bias)
    kernel = {"fused": True} if _use_fused(model, device, fused) else {"foreach": True}
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov, **kernel)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, **kernel)
    raise ValueError(f"Unknown optimizer {name!r}. Valid choices: {', '.join(OPTIMIZER_CHOICES)}.")


def _use_fused(model: nn.Module, device: torch.device | str | None, fused: bool | None) -> bool:
    if fused is not None:
        return bool(fused)
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return torch.device(device).type == "cuda"


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
    if name not in SCHEDULE_CHOICES:
        raise ValueError(f"Unknown schedule {name!r}. Valid choices: {', '.join(SCHEDULE_CHOICES)}.")
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
