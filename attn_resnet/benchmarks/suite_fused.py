"""The fused suite: our plain ResNet and SE and CBAM with model.fused false (eager) and true (Triton kernels)."""

from __future__ import annotations

from typing import Callable

import torch

from .contenders import build_ours, make_optimizer, make_train_step, model_inputs, place
from .settings import Settings
from .timing import median, repeat_steps, timed_turns, timed_warmup

# The contenders: (att_type, model.fused).
FUSED_CONTENDERS = (("none", False), ("SE", False), ("SE", True), ("CBAM", False), ("CBAM", True))


def fused_key(att_type: str, fused: bool) -> str:
    return "none" if att_type == "none" else f"{att_type}/fused={str(fused).lower()}"


def benchmark_fused(settings: Settings, log: Callable[[str], None]) -> dict:
    """Eager train-step times of our plain ResNet and of SE and CBAM with model.fused false and true."""
    from ..models.attention.fused import FusedKernelError, ops, use_fused

    device = settings.torch_device
    try:
        use_fused(True, torch.empty(1, 1, 1, 1, device=device))
    except FusedKernelError as error:
        log(f"fused: skipped ({error})")
        return {"skipped": f"the fused kernels cannot run here: {error}"}
    depth = settings.fused_depth
    images, targets = model_inputs(settings)
    steps, warmup_seconds = {}, {}
    for att_type, fused in FUSED_CONTENDERS:
        torch.manual_seed(0)
        model = place(build_ours(depth, att_type, fused), settings)
        key = fused_key(att_type, fused)
        steps[key] = make_train_step(model, model, make_optimizer(model), images, targets, device, settings.precision)
        # the first fused step compiles the kernels
        warmup_seconds[key] = timed_warmup(steps[key], settings.warmup, device)
    log(f"fused: timing ResNet-{depth} none/SE/CBAM with model.fused false and true x {settings.repeats} repeats x "
        f"{settings.iters} steps")
    seconds = timed_turns({key: repeat_steps(step, settings.iters) for key, step in steps.items()}, settings.repeats,
                          device)
    return {"depth": depth, "mode": "eager", "interpreted": ops.interpreter_loaded(), "contenders": {
        fused_key(att_type, fused): {"att_type": att_type, "fused": fused, "step_seconds": seconds[key],
                                     "median_step_seconds": median(seconds[key]),
                                     "images_per_second": settings.batch_size / median(seconds[key]),
                                     "warmup_seconds": warmup_seconds[key]}
        for (att_type, fused), key in zip(FUSED_CONTENDERS, steps)}}
