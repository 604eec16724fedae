"""The models suite: train steps of our ResNets with each block beside their peers, eager and compiled."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .contenders import build_ours, build_peer, make_optimizer, make_train_step, model_inputs, parameter_count, place
from .memory import cpu_step_peak_mb, cuda_step_peak_mb
from .settings import NETWORK_TYPE, Settings
from .timing import median, repeat_steps, timed_turns, timed_warmup


@dataclass
class Contender:
    key: str
    impl: str  # "ours" | "peer"
    att_type: str
    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    params: int


def build_contenders(settings: Settings, depth: int, missing: list[dict]) -> list[Contender]:
    """Ours and the peer (where there is one) for each attention type at ``depth``; missing peers go to ``missing``."""
    contenders: list[Contender] = []
    for att_type in settings.att_types:
        torch.manual_seed(0)
        candidates = [("ours", build_ours(depth, att_type), f"ResidualNet {NETWORK_TYPE}-{depth} {att_type}")]
        peer, peer_name, why = build_peer(depth, att_type, settings.timm)
        if peer is None:
            missing.append({"depth": depth, "att_type": att_type, "peer": peer_name, "reason": why})
        else:
            candidates.append(("peer", peer, peer_name))
        for impl, model, name in candidates:
            model = place(model, settings)
            contenders.append(Contender(f"{impl}/{att_type}", impl, att_type, name, model, make_optimizer(model),
                                        parameter_count(model)))
    return contenders


def peak_memory(contender: Contender, step: Callable[[], None], depth: int, mode: str,
                settings: Settings) -> tuple[float | None, str]:
    """``(peak MiB or None, how it was measured or why not)`` of one train step of ``contender``."""
    device = settings.torch_device
    if device.type == "cuda":
        peak = cuda_step_peak_mb(step, contender.model, contender.optimizer, device)
        return peak, "cuda max_memory_allocated over one step + weights + momentum"
    if settings.cpu_memory and mode == "eager":
        peak, why = cpu_step_peak_mb(contender.impl, depth, contender.att_type, settings)
        return peak, why or "peak RSS growth over two steps in a child process"
    return None, "n/a (CPU RSS probe off)" if not settings.cpu_memory else "n/a (measured in eager mode only)"


def benchmark_models(settings: Settings, log: Callable[[str], None],
                     on_progress: Callable[[list[dict], list[dict]], None] | None = None
                     ) -> tuple[list[dict], list[dict]]:
    """Train-step timings of every model and peer, per depth and mode; the peers that are missing and why.

    ``on_progress(records, missing)`` is called after each depth and mode, so that a report of what is
    measured so far can be written before a long compile that might not finish in time.
    """
    device = settings.torch_device
    modes = ["eager", "compiled"] if settings.compile else ["eager"]
    records, missing = [], []
    images, targets = model_inputs(settings)
    for depth in settings.depths:
        contenders = build_contenders(settings, depth, missing)
        for mode in modes:
            steps, compile_seconds = {}, {}
            for contender in contenders:
                forward = torch.compile(contender.model) if mode == "compiled" else contender.model
                steps[contender.key] = make_train_step(forward, contender.model, contender.optimizer, images, targets,
                                                       device, settings.precision)
            for contender in contenders:  # warm-up (and compilation) before anything is timed
                compile_seconds[contender.key] = timed_warmup(steps[contender.key], settings.warmup, device)
            memory = {contender.key: peak_memory(contender, steps[contender.key], depth, mode, settings)
                      for contender in contenders}
            log(f"depth {depth} {mode}: timing {len(steps)} models x {settings.repeats} repeats x {settings.iters} steps")

            seconds = timed_turns({key: repeat_steps(step, settings.iters) for key, step in steps.items()},
                                  settings.repeats, device)
            for contender in contenders:
                per_step = seconds[contender.key]
                step_seconds = median(per_step)
                records.append({
                    "depth": depth, "att_type": contender.att_type, "impl": contender.impl, "name": contender.name,
                    "mode": mode, "params": contender.params, "step_seconds": per_step,
                    "median_step_seconds": step_seconds,
                    "images_per_second": settings.batch_size / step_seconds,
                    "warmup_seconds": compile_seconds[contender.key],
                    "peak_memory_mb": memory[contender.key][0], "memory_method": memory[contender.key][1],
                })
            del steps
            if on_progress is not None:
                on_progress(records, missing)
        del contenders
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return records, missing
