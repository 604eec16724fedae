"""Peak memory of one model's train step: CUDA's allocator peak, or on the CPU the RSS growth in a child process."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from typing import Callable

import torch
from torch import nn

from ..engine.throughput import synchronize
from .contenders import build_ours, build_peer, make_optimizer, make_train_step, model_inputs, place
from .settings import REPO, Settings


def static_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the weights and the optimizer state (momentum) that a train step keeps."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    for state in optimizer.state.values():
        total += sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v))
    return total


def cuda_step_peak_mb(step: Callable[[], None], model: nn.Module, optimizer, device: torch.device) -> float:
    """Peak memory of one train step of this model alone: its transient peak plus its weights and momentum."""
    synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    synchronize(device)
    transient = torch.cuda.max_memory_allocated(device) - before
    return (transient + static_bytes(model, optimizer)) / 2**20


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def probe_cpu_memory(spec: dict) -> dict:
    """Run in a child process: peak RSS growth (MiB) over the first two train steps of one model."""
    torch.set_num_threads(spec["threads"])
    settings = Settings(**{**spec["settings"], "depths": tuple(spec["settings"]["depths"])})
    torch.manual_seed(0)
    if spec["impl"] == "ours":
        model = build_ours(spec["depth"], spec["att_type"])
    else:
        model = build_peer(spec["depth"], spec["att_type"], use_timm=True)[0]
    model = place(model, settings)
    optimizer = make_optimizer(model)
    images, targets = model_inputs(settings)
    step = make_train_step(model, model, optimizer, images, targets, settings.torch_device, settings.precision)
    gc.collect()
    baseline = _rss_bytes()
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # resets VmHWM (peak RSS) to the current RSS
    step()
    step()
    return {"peak_rss_growth_mb": (_peak_rss_bytes() - baseline) / 2**20}


def cpu_step_peak_mb(impl: str, depth: int, att_type: str, settings: Settings) -> tuple[float | None, str | None]:
    """Peak RSS growth of two train steps, measured in a child process (so other models do not count)."""
    spec = {"impl": impl, "depth": depth, "att_type": att_type, "threads": settings.threads,
            "settings": {k: v for k, v in vars(settings).items()}}
    try:
        result = subprocess.run([sys.executable, "-m", __name__, json.dumps(spec, default=str)],  # Path: text
                                capture_output=True, text=True, timeout=600, cwd=REPO)  # imports this package
    except subprocess.TimeoutExpired:
        return None, "the memory probe timed out"
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"memory probe failed: {last}"
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_growth_mb"], None


if __name__ == "__main__":  # the child process of cpu_step_peak_mb: python -m attn_resnet.benchmarks.memory SPEC
    print(json.dumps(probe_cpu_memory(json.loads(sys.argv[1]))))
