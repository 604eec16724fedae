#!/usr/bin/env python
"""Speed benchmark: our attention ResNets beside torchvision/timm peers, the data path and the trainer.

    python scripts/benchmark.py                   # CPU suite -> docs/benchmarks.md and docs/benchmarks.json
    python scripts/benchmark.py --suite gpu       # CUDA: 224x224, batch 256, bf16 autocast, channels_last, compiled
    python scripts/benchmark.py --suite gpu --sections fused   # SE and CBAM with model.fused off and on
    python scripts/benchmark.py --quick --output-md out/bench.md --output-json out/bench.json   # smoke test

Every comparison runs in this one process: warm-up first, then the contenders take turns
(the order rotates each repeat) and each reports the median of its repeats. A ratio of two
contenders is the median of their per-repeat ratios (each pair timed in the same turn), shown with
the first and third quartiles of those ratios. What is timed:

- models: a train step (forward, cross-entropy, backward, SGD step) of our ``ResidualNet``
  ("ImageNet" network type) and of its peer on the same input, dtype, batch and memory format:
  torchvision ``resnetD`` for no attention, timm ``seresnetD`` for SE, timm ``resnetD`` with
  ``block_args=dict(attn_layer="cbam")`` for CBAM; BAM has no peer. Peak memory of one step
  (CUDA: ``max_memory_allocated``; CPU: peak RSS growth, measured in a child process per model).
  Attention overhead: our step time with the block over our plain net's.
- data: images/s of the device-resident loader (``attn_resnet.data.DeviceImageLoader``) vs the
  torchvision per-image pipeline (DataLoader workers, PIL, RandomCrop + flip + ToTensor +
  Normalize) over the same in-memory uint8 CIFAR-sized images, batches on the device.
- trainer: ``Trainer.train_epoch`` vs a bare for-loop of the same steps (same loader, model
  and optimizer): the framework's overhead.
- fused (``--sections fused``, not run by default): eager train steps of our plain ResNet and
  of SE and CBAM with ``model.fused`` false (the eager formula) and true (the Triton kernels),
  at ``--fused-depth``: each block's overhead over the plain step both ways, and the fused
  kernels' speedup. Our models elsewhere run with the default ``model.fused=auto`` (the
  kernels on CUDA). On the CPU the kernels need ``TRITON_INTERPRET=1`` (``--quick`` only: the
  interpreter measures nothing); without it the section says why it was skipped.

Ratios come first in the tables, absolute numbers beside them. The numbers say what this
machine did while the script ran: on a shared machine, run it when the machine is quiet.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere, without installing the package
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from attn_resnet.models import ResidualNet  # noqa: E402

SCHEMA_VERSION = 1
ATT_TYPES = ("none", "SE", "CBAM", "BAM")
NETWORK_TYPE = "ImageNet"  # the peers have the ImageNet stem (7x7/2 conv + max-pool)
NUM_CLASSES = 1000
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

# Sizes per suite. "trainer" names the model of the trainer-vs-bare-loop section: on the CPU a
# cheap one (ImageNet stem on 32x32), so that the per-step overhead is not lost in a slow step.
SUITES: dict[str, dict[str, Any]] = {
    "cpu": dict(image_size=64, batch_size=16, depths=(18, 50), precision="32", channels_last=False,
                compile=False, repeats=7, warmup=2, iters=2,
                data=dict(batch_size=512, batches=12, repeats=5),
                trainer=dict(network_type="ImageNet", depth=18, batch_size=32, batches=12,
                             repeats=5)),
    "gpu": dict(image_size=224, batch_size=256, depths=(18, 34, 50, 101), precision="bf16", channels_last=True,
                compile=True, repeats=5, warmup=3, iters=3,
                data=dict(batch_size=512, batches=98, repeats=5),
                trainer=dict(network_type="CIFAR10", depth=18, batch_size=512, batches=48,
                             repeats=5)),
}
QUICK = dict(image_size=32, batch_size=4, depths=(18,), repeats=2, warmup=1, iters=1,
             data=dict(batch_size=512, batches=2, repeats=2),
             trainer=dict(network_type="ImageNet", depth=18, batch_size=8, batches=3, repeats=2))

# Targets the project set itself; each is checked where its measurement exists.
TARGETS = {
    "cpu": {"overhead": {"CBAM": 1.20, "BAM": 1.12}},
    "gpu": {"overhead": {"CBAM": 1.15, "SE": 1.10}},
    "common": {"ours_vs_peer": 1.00, "loader_speedup": 10.0, "trainer_vs_bare": 0.97, "depth": 50},
}

PEER_NOTES = [
    "Our models are `ResidualNet(\"ImageNet\", depth, 1000, att_type)`: 7x7/2 stem + max-pool, stride on the "
    "3x3 conv of the Bottleneck, adaptive average pool + fc, the same trunk as torchvision's `resnetD` and "
    "timm's `resnetD`.",
    "timm's SE module is 1x1 convs with the hidden width rounded up to a multiple of 8 (e.g. 8 instead of our "
    "4 for 64 channels); ours is Linear(C, C//16) + bias as in the SE paper and the CBAM authors' code, so "
    "the parameter counts differ slightly (see the params columns).",
    "timm's CBAM has no biases in its channel MLP and runs the MLP once per descriptor; its spatial gate pools "
    "[mean, max] (ours [max, mean], as the authors' code) and uses BatchNorm momentum 0.1 (ours 0.01). "
    "The compute is otherwise the same.",
    "BAM has no torchvision or timm implementation: its peer cells read \"—\".",
    "Our SE and CBAM models run with model.fused=auto: their fused Triton kernels on CUDA, the eager "
    "formula on the CPU and under torch.compile.",
]
# The fused section's contenders: (att_type, model.fused).
FUSED_CONTENDERS = (("none", False), ("SE", False), ("SE", True), ("CBAM", False), ("CBAM", True))


# ------------------------------------------------------------------------------------------ settings
@dataclass
class Settings:
    suite: str
    device: str
    image_size: int
    batch_size: int
    depths: tuple[int, ...]
    precision: str
    channels_last: bool
    compile: bool
    repeats: int
    warmup: int
    iters: int
    data: dict
    trainer: dict
    threads: int
    quick: bool
    cpu_memory: bool
    timm: bool
    workers: int
    att_types: tuple[str, ...] = ATT_TYPES
    notes: list[str] = field(default_factory=list)
    profile_dir: Path | None = None
    aug_policy: str = "none"
    fused_depth: int = 50

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def memory_format(self) -> str:
        return "channels_last" if self.channels_last else "contiguous"

    @property
    def dtype_text(self) -> str:
        return {"32": "float32", "bf16": "bfloat16 autocast (float32 weights)",
                "fp16": "float16 autocast (float32 weights)"}[self.precision]


def autocast(device: torch.device, precision: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median(values: list[float]) -> float:
    return statistics.median(values)


def paired_ratio(numerator: list[float] | None, denominator: list[float] | None) -> dict[str, Any]:
    """``{"ratio", "spread"}`` of two contenders' per-repeat times: the median of the per-repeat
    ratios ``numerator[i] / denominator[i]``, and their first and third quartiles.

    Repeat i of two contenders ran in the same turn, seconds apart, so each of these ratios sees
    nearly the same machine load. The ratio of the two medians would not: on a machine whose load
    drifts, the two medians can come from different repeats, and that ratio can fall outside the
    range of every paired one. The quartiles say how far the ratio can be trusted on this machine
    (None with fewer than two repeats).
    """
    if not numerator or not denominator or len(numerator) != len(denominator):
        return {"ratio": None, "spread": None}
    ratios = [n / d for n, d in zip(numerator, denominator) if d > 0]
    if not ratios:
        return {"ratio": None, "spread": None}
    if len(ratios) < 2:
        return {"ratio": ratios[0], "spread": None}
    first, middle, third = statistics.quantiles(ratios, n=4, method="inclusive")
    return {"ratio": middle, "spread": [first, third]}


def repeat_steps(step: Callable[[], None], iters: int) -> Callable[[], int]:
    """A contender for ``timed_turns``: ``iters`` calls of ``step``, counted as ``iters`` units."""
    def run() -> int:
        for _ in range(iters):
            step()
        return iters

    return run


def timed_turns(contenders: dict[str, Callable[[], int]], repeats: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per unit of each contender, one value per repeat; the contenders take turns.

    Each callable runs its work and returns how many units (steps, images) it did. The order
    rotates every repeat, so no contender always follows the same neighbour.
    """
    names = list(contenders)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            synchronize(device)
            started = time.perf_counter()
            units = contenders[name]()
            synchronize(device)
            seconds[name].append((time.perf_counter() - started) / units)
    return seconds


# -------------------------------------------------------------------------------------------- models
def timm_module():
    try:
        import timm
    except ImportError:
        return None
    return timm


def build_ours(depth: int, att_type: str, fused: bool | str = "auto") -> nn.Module:
    return ResidualNet(NETWORK_TYPE, depth, NUM_CLASSES, att_type, fused=fused)


def build_peer(depth: int, att_type: str, use_timm: bool) -> tuple[nn.Module | None, str, str | None]:
    """``(model or None, its name, why it is missing)`` for the peer of our (depth, att_type)."""
    if att_type == "none":
        import torchvision

        return getattr(torchvision.models, f"resnet{depth}")(num_classes=NUM_CLASSES), f"torchvision resnet{depth}", None
    if att_type == "BAM":
        return None, "—", "no torchvision/timm implementation of BAM"
    name = f"timm seresnet{depth}" if att_type == "SE" else f"timm resnet{depth} + attn_layer='cbam'"
    timm = timm_module() if use_timm else None
    if timm is None:
        why = "timm is not installed (pip install -e '.[bench]')" if use_timm else "timm peers switched off (--no-timm)"
        return None, name, why
    if att_type == "SE":
        return timm.create_model(f"seresnet{depth}", num_classes=NUM_CLASSES), name, None
    return timm.create_model(f"resnet{depth}", num_classes=NUM_CLASSES, block_args=dict(attn_layer="cbam")), name, None


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def make_train_step(forward: Callable, model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                    targets: torch.Tensor, device: torch.device, precision: str) -> Callable[[], None]:
    def step() -> None:
        with autocast(device, precision):
            loss = F.cross_entropy(forward(images), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)


def model_inputs(settings: Settings, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    size = settings.image_size
    images = torch.randn(settings.batch_size, 3, size, size, generator=generator)
    targets = torch.randint(0, NUM_CLASSES, (settings.batch_size,), generator=generator)
    images, targets = images.to(settings.torch_device), targets.to(settings.torch_device)
    if settings.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets


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
    model = model.train()
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
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
        result = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--memory-probe", json.dumps(spec)],
                                capture_output=True, text=True, timeout=600, cwd=REPO)
    except subprocess.TimeoutExpired:
        return None, "the memory probe timed out"
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"memory probe failed: {last}"
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_growth_mb"], None


@dataclass
class Contender:
    key: str
    impl: str  # "ours" | "peer"
    att_type: str
    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    params: int


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
                model = model.to(device).train()
                if settings.channels_last:
                    model = model.to(memory_format=torch.channels_last)
                contenders.append(Contender(f"{impl}/{att_type}", impl, att_type, name, model, make_optimizer(model),
                                            parameter_count(model)))
        for mode in modes:
            steps, compile_seconds = {}, {}
            for contender in contenders:
                forward = torch.compile(contender.model) if mode == "compiled" else contender.model
                steps[contender.key] = make_train_step(forward, contender.model, contender.optimizer, images, targets,
                                                       device, settings.precision)
            for contender in contenders:  # warm-up (and compilation) before anything is timed
                synchronize(device)
                started = time.perf_counter()
                for _ in range(settings.warmup):
                    steps[contender.key]()
                synchronize(device)
                compile_seconds[contender.key] = time.perf_counter() - started
            memory: dict[str, tuple[float | None, str]] = {}
            for contender in contenders:
                if device.type == "cuda":
                    peak = cuda_step_peak_mb(steps[contender.key], contender.model, contender.optimizer, device)
                    memory[contender.key] = (peak, "cuda max_memory_allocated over one step + weights + momentum")
                elif settings.cpu_memory and mode == "eager":
                    peak, why = cpu_step_peak_mb(contender.impl, depth, contender.att_type, settings)
                    memory[contender.key] = (peak, why or "peak RSS growth over two steps in a child process")
                else:
                    memory[contender.key] = (None, "n/a (CPU RSS probe off)" if not settings.cpu_memory
                                             else "n/a (measured in eager mode only)")
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


def model_ratios(records: list[dict], depths: list[int]) -> tuple[list[dict], list[dict]]:
    """``(ours vs peer, attention overhead)`` rows, each with both times, their ratio and its spread."""
    by_key = {(r["depth"], r["att_type"], r["impl"], r["mode"]): r for r in records}
    versus, overhead = [], []
    modes = sorted({r["mode"] for r in records}, key=["eager", "compiled"].index)
    for mode in modes:
        for depth in depths:
            plain = by_key.get((depth, "none", "ours", mode))
            for att_type in ATT_TYPES:
                ours = by_key.get((depth, att_type, "ours", mode))
                peer = by_key.get((depth, att_type, "peer", mode))
                if ours is not None and peer is not None:
                    versus.append({"depth": depth, "att_type": att_type, "mode": mode, "peer": peer["name"],
                                   "ours_seconds": ours["median_step_seconds"],
                                   "peer_seconds": peer["median_step_seconds"],
                                   **paired_ratio(ours["step_seconds"], peer["step_seconds"])})
                if att_type != "none" and ours is not None and plain is not None:
                    overhead.append({"depth": depth, "att_type": att_type, "mode": mode,
                                     "with_seconds": ours["median_step_seconds"],
                                     "plain_seconds": plain["median_step_seconds"],
                                     **paired_ratio(ours["step_seconds"], plain["step_seconds"])})
    return versus, overhead


# --------------------------------------------------------------------------------------------- fused
def fused_key(att_type: str, fused: bool) -> str:
    return "none" if att_type == "none" else f"{att_type}/fused={str(fused).lower()}"


def benchmark_fused(settings: Settings, log: Callable[[str], None]) -> dict:
    """Eager train-step times of our plain ResNet and of SE and CBAM with model.fused false and true."""
    from attn_resnet.models.attention.fused import FusedKernelError, ops, use_fused

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
        model = build_ours(depth, att_type, fused).to(device).train()
        if settings.channels_last:
            model = model.to(memory_format=torch.channels_last)
        key = fused_key(att_type, fused)
        steps[key] = make_train_step(model, model, make_optimizer(model), images, targets, device, settings.precision)
        synchronize(device)
        started = time.perf_counter()
        for _ in range(settings.warmup):  # the first fused step compiles the kernels
            steps[key]()
        synchronize(device)
        warmup_seconds[key] = time.perf_counter() - started
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


def fused_ratios(fused: dict) -> list[dict]:
    """Per block and model.fused: the step time over the plain step's, and (fused rows) the eager step's over it."""
    contenders = fused.get("contenders")
    if not contenders:
        return []
    plain = contenders["none"]["step_seconds"]
    rows = []
    for key, record in contenders.items():
        if record["att_type"] == "none":
            continue
        row = {"att_type": record["att_type"], "fused": record["fused"],
               **paired_ratio(record["step_seconds"], plain)}
        if record["fused"]:
            eager = contenders[fused_key(record["att_type"], False)]["step_seconds"]
            speedup = paired_ratio(eager, record["step_seconds"])
            row["speedup"], row["speedup_spread"] = speedup["ratio"], speedup["spread"]
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------- data
TARGETS_DATA_NOTE = ("loader target (>= 10x) in the table above is that of the plain crop + flip pipeline and does "
                     "not apply to a run with a policy.")
class PerImageCifar(torch.utils.data.Dataset):
    """What ``torchvision.datasets.CIFAR10`` does per item: a uint8 HWC row -> PIL image -> transform."""

    def __init__(self, data, targets: list[int], transform) -> None:
        self.data, self.targets, self.transform = data, targets, transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.data[index])), self.targets[index]


def cifar_like(count: int, seed: int = 0):
    """``TensorImageDataset`` of ``count`` random uint8 32x32 images (training augmentation on) + its HWC array."""
    from attn_resnet.data.common import TensorImageDataset

    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (count,), generator=generator)
    dataset = TensorImageDataset(images, labels, [str(i) for i in range(10)], CIFAR_MEAN, CIFAR_STD, True, pad=4,
                                 flip=True)
    return dataset, images.permute(0, 2, 3, 1).contiguous().numpy(), labels.tolist()


def device_loader_class():
    """The device-resident loader of ``attn_resnet.data``, or None while the package has none.

    Protocol: ``Loader(dataset, batch_size=..., train=True, seed=0, device=...)`` over a
    ``TensorImageDataset``, iterating ``(images, targets)`` already normalized on ``device``,
    with ``batch_sampler.set_epoch(epoch)``.
    """
    import attn_resnet.data as data

    return getattr(data, "DeviceImageLoader", None)


def make_device_loader(loader_class, dataset, batch_size: int, device: torch.device, channels_last: bool):
    options = {"channels_last": True} if channels_last else {}
    return loader_class(dataset, batch_size=batch_size, train=True, seed=0, device=device, **options)


def benchmark_data(settings: Settings, log: Callable[[str], None]) -> dict:
    """Images/s of the device loader vs the torchvision per-image pipeline, batches delivered on the device."""
    import torchvision.transforms as T

    cfg = settings.data
    device = settings.torch_device
    batch_size, batches = cfg["batch_size"], cfg["batches"]
    result: dict[str, Any] = {"batch_size": batch_size, "images_per_pass": batch_size * batches,
                              "image_size": 32, "workers": settings.workers, "repeats": cfg["repeats"]}
    loader_class = device_loader_class()
    if loader_class is None:
        result["skipped"] = ("attn_resnet.data has no DeviceImageLoader yet: this section runs once the device "
                             "loader exists")
        return result
    dataset, hwc, labels = cifar_like(batch_size * batches)
    policy = []
    if settings.aug_policy != "none":
        from attn_resnet.data.policies import AugmentSpec

        dataset.set_augment(AugmentSpec(policy=settings.aug_policy, num_ops=2, magnitude=9))
        policy = [T.RandAugment(num_ops=2, magnitude=9) if settings.aug_policy == "randaugment"
                  else T.TrivialAugmentWide()]
        result["aug_policy"] = settings.aug_policy
    device_loader = make_device_loader(loader_class, dataset, batch_size, device, settings.channels_last)
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), *policy, T.ToTensor(),
                           T.Normalize(CIFAR_MEAN, CIFAR_STD)])
    per_image = torch.utils.data.DataLoader(
        PerImageCifar(hwc, labels, transform), batch_size=batch_size, shuffle=True, drop_last=True,
        num_workers=settings.workers, pin_memory=device.type == "cuda", persistent_workers=settings.workers > 0)
    epoch = [0]

    def device_pass() -> int:
        epoch[0] += 1
        device_loader.batch_sampler.set_epoch(epoch[0])
        count = 0
        for images, targets in device_loader:
            count += targets.shape[0]
        return count

    def per_image_pass() -> int:
        count = 0
        for images, targets in per_image:
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            if settings.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            count += targets.shape[0]
        return count

    log(f"data: device loader vs per-image pipeline ({settings.workers} workers), {cfg['repeats']} repeats")
    device_pass(), per_image_pass()  # warm-up; starts the workers
    seconds = timed_turns({"device_loader": device_pass, "per_image": per_image_pass}, cfg["repeats"], device)
    policy_note = f" + aug.policy={settings.aug_policy}" if policy else ""
    result["device_loader"] = {"name": f"attn_resnet.data.{loader_class.__name__}{policy_note}", "seconds_per_image":
                               seconds["device_loader"], "images_per_second": 1 / median(seconds["device_loader"])}
    result["per_image"] = {"name": "DataLoader + PIL + RandomCrop/Flip/" + (type(policy[0]).__name__ + "/" if policy
                                                                            else "") + "ToTensor/Normalize",
                           "seconds_per_image": seconds["per_image"],
                           "images_per_second": 1 / median(seconds["per_image"])}
    return result  # its ratio and spread: derive()


# ------------------------------------------------------------------------------------------- trainer
def benchmark_trainer(settings: Settings, log: Callable[[str], None]) -> dict:
    """Images/s of ``Trainer.train_epoch`` vs a bare loop of the same steps on the same loader, model, optimizer."""
    from attn_resnet.data.loader import build_loader
    from attn_resnet.engine.trainer import Trainer, TrainerSettings

    cfg = settings.trainer
    device = settings.torch_device
    dataset, _, _ = cifar_like(cfg["batch_size"] * cfg["batches"], seed=1)
    loader_class = device_loader_class()
    if loader_class is not None:
        loader = make_device_loader(loader_class, dataset, cfg["batch_size"], device, settings.channels_last)
        loader_name = f"attn_resnet.data.{loader_class.__name__}"
    else:
        loader = build_loader(dataset, cfg["batch_size"], train=True, seed=0, num_workers=0)
        loader_name = "attn_resnet.data.build_loader (no workers)"
    torch.manual_seed(0)
    model = ResidualNet(cfg["network_type"], cfg["depth"], 10, "none")
    optimizer = make_optimizer(model)
    trainer_settings = TrainerSettings(epochs=1, precision=settings.precision, channels_last=settings.channels_last,
                                       progress=False)
    with tempfile.TemporaryDirectory(prefix="attn-resnet-benchmark-") as run_dir:
        trainer = Trainer(model, optimizer, lambda steps: (lambda step: 1.0), loader, None, trainer_settings,
                          run_dir, device, tensorboard=False)
        return _trainer_vs_bare(trainer, loader, loader_name, len(dataset), settings, log)


def _trainer_vs_bare(trainer, loader, loader_name: str, images: int, settings: Settings,
                     log: Callable[[str], None]) -> dict:
    cfg = settings.trainer
    device = settings.torch_device
    model, optimizer = trainer.model, trainer.optimizer
    epoch = [0]

    def trainer_epoch() -> int:
        epoch[0] += 1
        trainer.batch_in_epoch = 0
        trainer.train_epoch(epoch[0])
        return images

    def bare_epoch() -> int:
        epoch[0] += 1
        model.train()
        loader.batch_sampler.set_epoch(epoch[0])
        count = 0
        for images, targets in loader:
            images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            if settings.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(device, settings.precision):
                loss = F.cross_entropy(model(images), targets)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            count += targets.shape[0]
        return count

    log(f"trainer: Trainer.train_epoch vs bare loop, {cfg['repeats']} repeats")
    trainer_epoch(), bare_epoch()  # warm-up
    seconds = timed_turns({"trainer": trainer_epoch, "bare_loop": bare_epoch}, cfg["repeats"], device)
    result = {
        "model": f"ResidualNet({cfg['network_type']!r}, {cfg['depth']}, 10, 'none')",
        "loader": loader_name, "batch_size": cfg["batch_size"], "batches_per_epoch": cfg["batches"],
        "image_size": 32, "repeats": cfg["repeats"], "compiled": False,
        "trainer": {"seconds_per_image": seconds["trainer"], "images_per_second": 1 / median(seconds["trainer"])},
        "bare_loop": {"seconds_per_image": seconds["bare_loop"],
                      "images_per_second": 1 / median(seconds["bare_loop"])},
    }
    if settings.profile_dir is not None:
        log(f"trainer: profiling one epoch of each into {settings.profile_dir}")
        result["profiles"] = profile_epochs({"trainer": trainer_epoch, "bare_loop": bare_epoch}, device,
                                            settings.profile_dir)
    return result


def profile_epochs(runs: dict[str, Callable[[], int]], device: torch.device, folder: Path) -> list[str]:
    """One call of each run under torch.profiler; per run a text file of its op table(s). Their names.

    On CUDA the ops are listed by their own device time and, apart, by their own host time (what
    the host spends launching them); comparing the two runs' tables shows where one loop's extra
    time goes.
    """
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, run in runs.items():
        synchronize(device)
        started = time.perf_counter()
        with profile(activities=activities) as profiler:
            run()
            synchronize(device)
        seconds = time.perf_counter() - started
        averages = profiler.key_averages()
        text = [f"# {name}: one epoch under torch.profiler on {device} ({seconds:.3f} s with the profiler on)", ""]
        if cuda:
            text += ["## ops by self device time", "", averages.table(sort_by="self_device_time_total", row_limit=30),
                     ""]
        # every op by host time: the small per-step ops are the suspects when one loop is slower
        text += ["## ops by self host time (all)", "", averages.table(sort_by="self_cpu_time_total", row_limit=-1)]
        path = folder / f"trainer_profile_{name}.txt"
        path.write_text("\n".join(text) + "\n")
        written.append(path.name)
    return written


# ------------------------------------------------------------------------------------------- machine
def cpu_name() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu_name(),
            "cpu_cores": cores, "torch_threads": torch.get_num_threads(),
            "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_memory_gb"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    return info


def versions() -> dict:
    import torchvision

    timm = timm_module()
    return {"torch": torch.__version__, "torchvision": torchvision.__version__,
            "timm": timm.__version__ if timm is not None else None,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None}


# -------------------------------------------------------------------------------------------- report
def headline(report: dict) -> list[dict]:
    """Each target: what was measured against it, and whether it was met (None: not measured)."""
    settings = report["settings"]
    suite_targets = TARGETS[settings["suite"]]
    common = TARGETS["common"]
    depth = common["depth"]
    rows = []

    def add(check: str, value: float | None, target: float, at_most: bool, detail: str,
            spread: list[float] | None) -> None:
        met = None if value is None else (value <= target if at_most else value >= target)
        rows.append({"check": check, "value": value, "target": target, "spread": spread,
                     "comparison": "<=" if at_most else ">=", "met": met, "detail": detail})

    eager = "eager"
    overhead = {(r["depth"], r["att_type"], r["mode"]): r for r in report["ratios"]["attention_overhead"]}
    for att_type, target in suite_targets["overhead"].items():
        row = overhead.get((depth, att_type, eager), {})
        add(f"{att_type} overhead over our plain ResNet-{depth} ({eager})", row.get("ratio"),
            target, True, "step time with the block / without", row.get("spread"))
    fused = report.get("fused", {})
    if not fused.get("interpreted", True) and fused.get("depth") == depth:  # interpreted kernels measure nothing
        for row in report["ratios"].get("fused", []):
            if row["fused"] and row["att_type"] in suite_targets["overhead"]:
                add(f"{row['att_type']} overhead over our plain ResNet-{depth}, model.fused=true ({eager})",
                    row["ratio"], suite_targets["overhead"][row["att_type"]], True,
                    "step time with the block / without (fused section)", row.get("spread"))
    versus = {(r["depth"], r["att_type"], r["mode"]): r for r in report["ratios"]["ours_vs_peer"]}
    for att_type, label in (("none", "R"), ("SE", "SE-R"), ("CBAM", "CBAM-R")):
        row = versus.get((depth, att_type, eager))
        add(f"our {label}{depth} / {row['peer'] if row else 'peer'} ({eager})", row["ratio"] if row else None,
            common["ours_vs_peer"], True, "train step time ratio", row.get("spread") if row else None)
    data = report["data"]
    add(f"device loader / per-image pipeline (batch {settings['data']['batch_size']})", data.get("ratio"),
        common["loader_speedup"], False, "images/s ratio", data.get("spread"))
    add("Trainer epoch / bare loop", report["trainer"].get("ratio"), common["trainer_vs_bare"], False,
        "images/s ratio", report["trainer"].get("spread"))
    return rows


def derive(report: dict) -> None:
    """(Re)compute every ratio, its spread and the headline from the per-repeat times in ``report``."""
    versus, overhead = model_ratios(report.get("models", []), report["settings"]["depths"])
    data, trainer = report["data"], report["trainer"]
    if "device_loader" in data:  # images/s ratio = per-image seconds / device-loader seconds
        data.update(paired_ratio(data["per_image"]["seconds_per_image"], data["device_loader"]["seconds_per_image"]))
    if "bare_loop" in trainer:
        trainer.update(paired_ratio(trainer["bare_loop"]["seconds_per_image"], trainer["trainer"]["seconds_per_image"]))
    report["ratios"] = {"ours_vs_peer": versus, "attention_overhead": overhead,
                        "data_loader": data.get("ratio"), "trainer_vs_bare": trainer.get("ratio"),
                        "fused": fused_ratios(report.get("fused", {}))}
    report["headline"] = headline(report)


def spread_text(spread: list[float] | None, digits: int = 2) -> str:
    """" (0.97-1.04)": the middle half of the per-repeat ratios, or nothing when unknown."""
    return "" if not spread else f" ({spread[0]:.{digits}f}–{spread[1]:.{digits}f})"


def fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "—" if value is None else f"{value:.{digits}f}{suffix}"


def ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1e3:.1f}"


def thousands(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def command_line(arguments: list[str], script: str = "scripts/benchmark.py") -> str:
    """The command that measured, with each --note text shortened to "..." (the notes are listed below it)."""
    shown = ["python", script]
    for index, argument in enumerate(arguments):
        shown.append("..." if index and arguments[index - 1] == "--note" else argument)
    return shlex.join(shown).replace("'...'", "...")


def load(average: list[float] | None) -> str:
    return "n/a" if not average else f"{average[0]:.2f}"


def markdown(report: dict) -> str:
    s, m, v = report["settings"], report["machine"], report["versions"]
    device_text = m.get("gpu") or m["cpu"]
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{command_line(report['arguments'])}` on {report['date']}.",
        "Every comparison ran in one process, warm-up first, the contenders taking turns; each number is "
        "the median of the repeats. Ratios first, absolute numbers beside them. A ratio is the median of the "
        "per-repeat ratios, each of two contenders timed in the same turn, seconds apart; in brackets beside it, "
        "their middle half (first to third quartile): how far the ratio can be trusted on this machine.",
        "",
        f"- machine: {m['platform']}; {device_text}"
        + (f" ({m['gpu_memory_gb']} GiB)" if m.get("gpu") else "")
        + f"; {m['cpu_cores']} CPU cores, {m['torch_threads']} torch threads; 1-minute load average "
        f"{load(m.get('load_average_start'))} at the start, {load(m.get('load_average_end'))} at the end",
        f"- versions: torch {v['torch']}, torchvision {v['torchvision']}, timm {v['timm'] or 'not installed'}"
        + (f", CUDA {v['cuda']}, cuDNN {v['cudnn']}" if s["device"].startswith("cuda") else ""),
        f"- suite {s['suite']}{' (quick)' if s['quick'] else ''} on {s['device']}: {s['dtype']}, batch {s['batch_size']}, "
        f"{s['image_size']}x{s['image_size']} images, {s['memory_format']}, repeats {s['repeats']} "
        f"(x {s['iters']} steps each, after {s['warmup']} warm-up steps), torch.compile "
        f"{'on' if s['compile'] else 'off'}",
    ]
    for note in report["notes"]:
        lines.append(f"- note: {note}")
    lines += ["", "## Targets", "", "| check | measured | target | met |", "|---|---|---|---|"]
    for row in report["headline"]:
        met = {True: "yes", False: "**no**", None: "not measured"}[row["met"]]
        digits = 3 if row["value"] is None or row["value"] < 10 else 1  # 1.001x is not "1.00x"
        lines.append(f"| {row['check']} | {fmt(row['value'], digits)}x{spread_text(row.get('spread'), digits)} | "
                     f"{row['comparison']} {row['target']:.2f}x | {met} |")

    records = report["models"]
    by_key = {(r["depth"], r["att_type"], r["impl"], r["mode"]): r for r in records}
    lines += ["", "## Our models vs their peers (train step)", "",
              "ratio = our step time / the peer's (below 1: ours is faster).", "",
              "| depth | attention | mode | ratio | ours ms | peer ms | ours img/s | peer img/s | ours params | "
              "peer params | ours peak MiB | peer peak MiB | peer |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    missing = {(gap["depth"], gap["att_type"]): gap for gap in report["missing_peers"]}
    versus = {(r["depth"], r["att_type"], r["mode"]): r for r in report["ratios"]["ours_vs_peer"]}
    for ours in (r for r in records if r["impl"] == "ours"):
        peer = by_key.get((ours["depth"], ours["att_type"], "peer", ours["mode"]))
        if peer is None:
            gap = missing.get((ours["depth"], ours["att_type"]), {"reason": "no peer"})
            peer = {"median_step_seconds": None, "images_per_second": None, "params": None, "peak_memory_mb": None,
                    "name": gap["reason"]}
        paired = versus.get((ours["depth"], ours["att_type"], ours["mode"]), {"ratio": None, "spread": None})
        lines.append(
            f"| {ours['depth']} | {ours['att_type']} | {ours['mode']} | {fmt(paired['ratio'], 3)}"
            f"{spread_text(paired['spread'], 3)} | "
            f"{ms(ours['median_step_seconds'])} | {ms(peer['median_step_seconds'])} | "
            f"{fmt(ours['images_per_second'], 1)} | {fmt(peer['images_per_second'], 1)} | {thousands(ours['params'])} | "
            f"{thousands(peer['params'])} | {fmt(ours['peak_memory_mb'], 0)} | {fmt(peer['peak_memory_mb'], 0)} | "
            f"{peer['name']} |")
    memory_methods = sorted({r["memory_method"] for r in records})
    lines += ["", "Peak memory: " + "; ".join(memory_methods) + "."]

    lines += ["", "## Attention overhead (our models)", "",
              "ratio = our step time with the block / our plain ResNet of the same depth.", "",
              "| depth | attention | mode | ratio | with ms | plain ms |", "|---|---|---|---|---|---|"]
    for row in report["ratios"]["attention_overhead"]:
        lines.append(f"| {row['depth']} | {row['att_type']} | {row['mode']} | {row['ratio']:.3f}"
                     f"{spread_text(row.get('spread'), 3)} | "
                     f"{row['with_seconds'] * 1e3:.1f} | {row['plain_seconds'] * 1e3:.1f} |")

    data = report["data"]
    lines += ["", "## Data path", ""]
    if "skipped" in data:
        lines.append(f"Skipped: {data['skipped']}.")
    else:
        lines += [
            f"Batches of {data['batch_size']} CIFAR-sized uint8 images ({data['images_per_pass']} per pass, random crop "
            f"with padding 4 + flip{' + ' + data['aug_policy'] + ' (2 ops, magnitude 9)' if data.get('aug_policy') else ''}"
            f" + normalize), delivered on {s['device']}; per-image pipeline with "
            f"{data['workers']} DataLoader workers"
            f"{': torchvision ' + data['per_image']['name'].split('/')[2] + ' per image' if data.get('aug_policy') else ''}.",
            *([f"The policy makes both paths do more per image; the {TARGETS_DATA_NOTE}"] if data.get("aug_policy")
              else []), "",
            "| ratio | device loader img/s | per-image pipeline img/s |", "|---|---|---|",
            f"| {data['ratio']:.1f}x{spread_text(data.get('spread'), 1)} | "
            f"{data['device_loader']['images_per_second']:,.0f} | "
            f"{data['per_image']['images_per_second']:,.0f} |"]

    lines += fused_markdown(report)
    trainer = report["trainer"]
    lines += ["", "## Trainer vs bare loop", ""]
    if "skipped" in trainer:
        lines.append(f"Skipped: {trainer['skipped']}.")
    else:
        lines += [
            f"{trainer['model']} on {trainer['image_size']}x{trainer['image_size']} images, batch "
            f"{trainer['batch_size']}, {trainer['batches_per_epoch']} batches per epoch from {trainer['loader']}, eager. "
            "ratio = Trainer images/s / bare loop images/s (1.00: no framework overhead).", "",
            "| ratio | Trainer img/s | bare loop img/s |", "|---|---|---|",
            f"| {trainer['ratio']:.3f}{spread_text(trainer.get('spread'), 3)} | "
            f"{trainer['trainer']['images_per_second']:,.1f} | "
            f"{trainer['bare_loop']['images_per_second']:,.1f} |"]
        if trainer.get("profiles"):
            lines += ["", "One epoch of each under torch.profiler (op tables, device and host time): "
                      + ", ".join(f"`{name}`" for name in trainer["profiles"]) + " in the --profile-trainer folder."]

    lines += ["", "## How the peers differ", ""] + [f"- {note}" for note in PEER_NOTES]
    for gap in report["missing_peers"]:
        if gap["att_type"] != "BAM":
            lines.append(f"- ResNet-{gap['depth']} {gap['att_type']}: no peer, {gap['reason']}.")
    lines += ["", "## How to run", "", "```bash", "pip install -e '.[bench]'   # timm, for the SE and CBAM peers",
              "python scripts/benchmark.py                 # CPU suite: rewrites docs/benchmarks.md and .json",
              "python scripts/benchmark.py --suite gpu --output-md docs/benchmarks_gpu.md \\",
              "    --output-json docs/benchmarks_gpu.json    # CUDA: 224x224, batch 256, bf16, channels_last, compiled",
              "python scripts/benchmark.py --suite gpu --sections fused --output-md docs/benchmarks_fused.md \\",
              "    --output-json docs/benchmarks_fused.json  # SE and CBAM ResNet-50 with model.fused false and true",
              "python scripts/benchmark.py --help           # sizes, depths, repeats, --no-compile, --sections", "```"]
    return "\n".join(lines) + "\n"


def fused_markdown(report: dict) -> list[str]:
    """The fused section's table, or why it was not measured (nothing for a report from before the section)."""
    fused = report.get("fused")
    if fused is None:
        return []
    lines = ["", "## Fused kernels (model.fused)", ""]
    if "skipped" in fused:
        return lines + [f"Skipped: {fused['skipped']}."]
    lines += [f"Our ResNet-{fused['depth']} train step ({fused['mode']}), same input and settings as above; "
              "overhead = step time with the block / without; speedup = the block's eager step time / its fused "
              "step time.", "",
              *(["The kernels ran in Triton's interpreter (TRITON_INTERPRET=1): their times measure nothing.", ""]
                if fused.get("interpreted") else []),
              "| attention | model.fused | overhead | speedup | step ms | img/s |", "|---|---|---|---|---|---|"]
    plain = fused["contenders"]["none"]
    lines.append(f"| none | — | 1.000 | — | {ms(plain['median_step_seconds'])} | "
                 f"{fmt(plain['images_per_second'], 1)} |")
    for row in report["ratios"]["fused"]:
        record = fused["contenders"][fused_key(row["att_type"], row["fused"])]
        speedup = (f"{fmt(row['speedup'], 3)}x{spread_text(row.get('speedup_spread'), 3)}" if row["fused"] else "—")
        lines.append(f"| {row['att_type']} | {str(row['fused']).lower()} | {fmt(row['ratio'], 3)}"
                     f"{spread_text(row.get('spread'), 3)} | {speedup} | {ms(record['median_step_seconds'])} | "
                     f"{fmt(record['images_per_second'], 1)} |")
    return lines


# ---------------------------------------------------------------------------------------------- main
KEPT_SECTION = ("<!-- imagenet-data:start -->", "<!-- imagenet-data:end -->")  # scripts/benchmark_imagenet_data.py


def write_report(report: dict, output_md: Path, output_json: Path) -> None:
    """Write both reports; a section that another script keeps in the Markdown file stays, before "## Trainer"."""
    text = markdown(report)
    start, end = KEPT_SECTION
    old = output_md.read_text() if output_md.is_file() else ""
    if start in old and end in old:
        kept = old[old.index(start):old.index(end) + len(end)]
        anchor = text.find("## Trainer vs bare loop")
        text = text[:anchor] + kept + "\n\n" + text[anchor:] if anchor >= 0 else text.rstrip("\n") + "\n\n" + kept + "\n"
    for path, content in ((output_json, json.dumps(report, indent=1) + "\n"), (output_md, text)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="default: cuda when available, else cpu")
    parser.add_argument("--suite", choices=tuple(SUITES), default=None, help="default: the device's suite")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per contender (median reported)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per model first")
    parser.add_argument("--iters", type=int, default=None, help="train steps per timed repeat")
    parser.add_argument("--depths", type=lambda text: tuple(int(v) for v in text.split(",")), default=None,
                        help="comma-separated, e.g. 18,50")
    parser.add_argument("--att-types", type=lambda text: tuple(text.split(",")), default=ATT_TYPES,
                        help="comma-separated subset of " + ",".join(ATT_TYPES) + " (default: all)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="also time torch.compile'd models (default: on in the gpu suite, off in the cpu suite)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--precision", choices=("32", "bf16", "fp16"), default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader workers of the per-image pipeline (default: the available cores, at most 8)")
    parser.add_argument("--cpu-memory", action=argparse.BooleanOptionalAction, default=None,
                        help="on the CPU, measure each model's peak RSS growth in a child process (default: on, "
                             "off with --quick)")
    parser.add_argument("--no-timm", action="store_true", help="leave out the timm peers even when timm is installed")
    parser.add_argument("--sections", default="models,data,trainer",
                        help="any of models,data,trainer,fused (fused: SE and CBAM with model.fused off and on)")
    parser.add_argument("--fused-depth", type=int, choices=(18, 34, 50, 101), default=None,
                        help="depth of the fused section's ResNets (default: 50; 18 with --quick)")
    parser.add_argument("--aug-policy", choices=("none", "randaugment", "trivialaugment"), default="none",
                        help="data section: both contenders also apply this policy (ours: aug.policy on the "
                             "device loader; the per-image path: torchvision's RandAugment / TrivialAugmentWide)")
    parser.add_argument("--note", action="append", default=[], help="a line for the report (e.g. how busy the "
                                                                    "machine was)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, not a measurement")
    parser.add_argument("--profile-trainer", type=Path, metavar="DIR",
                        help="after timing, record one Trainer epoch and one bare-loop epoch under torch.profiler "
                             "and write their op tables (device and host time) to DIR")
    parser.add_argument("--output-md", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--output-json", type=Path, default=REPO / "docs" / "benchmarks.json")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="measure nothing: rewrite the Markdown of this JSON report (adding any --note lines "
                             "to both)")
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def resolve_settings(args: argparse.Namespace) -> Settings:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but CUDA is not available here; use --device cpu.")
    suite = args.suite or ("gpu" if device == "cuda" else "cpu")
    base = {**SUITES[suite], **(QUICK if args.quick else {})}
    if args.threads:
        torch.set_num_threads(args.threads)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = args.workers if args.workers is not None else (min(cores, 2) if args.quick else min(cores, 8))

    def pick(name: str):
        value = getattr(args, name)
        return base[name] if value is None else value

    return Settings(
        suite=suite, device=device, image_size=pick("image_size"), batch_size=pick("batch_size"),
        depths=tuple(pick("depths")), precision=pick("precision"), channels_last=pick("channels_last"),
        compile=pick("compile"), repeats=pick("repeats"), warmup=pick("warmup"), iters=pick("iters"),
        data=dict(base["data"]), trainer=dict(base["trainer"]), threads=torch.get_num_threads(), quick=args.quick,
        cpu_memory=(not args.quick) if args.cpu_memory is None else args.cpu_memory, timm=not args.no_timm,
        workers=workers, att_types=tuple(args.att_types), notes=list(args.note), profile_dir=args.profile_trainer,
        aug_policy=args.aug_policy, fused_depth=args.fused_depth or (18 if args.quick else 50))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_probe:
        print(json.dumps(probe_cpu_memory(json.loads(args.memory_probe))))
        return 0
    if args.render:
        report = json.loads(args.render.read_text())
        report["notes"] += args.note
        derive(report)  # the spreads and ratios follow from the recorded per-repeat times
        write_report(report, args.output_md, args.output_json)
        return 0
    unknown = [name for name in args.att_types if name not in ATT_TYPES]
    if unknown or "none" not in args.att_types:
        raise SystemExit(f"--att-types {','.join(args.att_types)}: choose from {','.join(ATT_TYPES)} and include "
                         "none (the attention overhead is measured against it).")
    settings = resolve_settings(args)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f} s] {message}", flush=True)

    device = settings.torch_device
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    sections = set(args.sections.split(","))
    report: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "arguments": list(sys.argv[1:] if argv is None else argv),
        "machine": machine_info(device),
        "versions": versions(),
        "notes": list(settings.notes),
    }
    log(f"suite {settings.suite} on {settings.device} ({report['machine'].get('gpu') or report['machine']['cpu']}), "
        f"torch {torch.__version__}, {settings.dtype_text}, batch {settings.batch_size}, "
        f"{settings.image_size}x{settings.image_size}, {settings.memory_format}")
    not_yet = {"skipped": "not measured: the run stopped before this section"}
    report["data"], report["trainer"] = dict(not_yet), dict(not_yet)
    if "fused" in sections:  # a section of its own: a report without it has no "fused" entry
        report["fused"] = dict(not_yet)
    if not settings.timm or timm_module() is None:
        report["notes"].append("timm peers (SE, CBAM) left out: "
                               + ("--no-timm" if not settings.timm else "timm is not installed (pip install -e '.[bench]')"))
    if settings.quick:
        report["notes"].append("--quick: tiny sizes for a smoke test; these numbers measure nothing")
    report["settings"] = {
        "suite": settings.suite, "device": settings.device, "quick": settings.quick, "dtype": settings.dtype_text,
        "precision": settings.precision, "batch_size": settings.batch_size, "image_size": settings.image_size,
        "memory_format": settings.memory_format, "depths": list(settings.depths), "att_types": list(settings.att_types),
        "network_type": NETWORK_TYPE, "num_classes": NUM_CLASSES, "compile": settings.compile,
        "repeats": settings.repeats, "warmup": settings.warmup, "iters": settings.iters,
        "threads": settings.threads, "optimizer": "SGD(lr=0.01, momentum=0.9, weight_decay=1e-4)",
        "data": settings.data, "trainer": settings.trainer, "workers": settings.workers,
        "fused_depth": settings.fused_depth,
    }

    def save(records: list[dict], missing: list[dict]) -> None:
        """Write the report of everything measured so far (a timed-out run still leaves its numbers)."""
        report["models"] = records
        report["missing_peers"] = missing
        report["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        derive(report)
        write_report(report, args.output_md, args.output_json)

    records, missing = benchmark_models(settings, log, save) if "models" in sections else ([], [])
    skipped = {"skipped": "not asked for (--sections)"}
    if "fused" in sections:
        report["fused"] = benchmark_fused(settings, log)
        save(records, missing)
    if "data" in sections:
        report["data"] = benchmark_data(settings, log)
        save(records, missing)
    else:
        report["data"] = skipped
    report["trainer"] = benchmark_trainer(settings, log) if "trainer" in sections else dict(skipped)
    save(records, missing)
    for row in report["headline"]:
        met = {True: "met", False: "NOT met", None: "not measured"}[row["met"]]
        log(f"{row['check']}: {fmt(row['value'])}x{spread_text(row.get('spread'))} "
            f"(target {row['comparison']} {row['target']:.2f}x, {met})")
    log(f"wrote {args.output_md} and {args.output_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
