"""The benchmark suites' sizes and the resolved settings of one run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config.choices import DEPTHS

REPO = Path(__file__).resolve().parents[2]  # the reports go to its docs/ by default
ATT_TYPES = ("none", "SE", "CBAM", "BAM")
NETWORK_TYPE = "ImageNet"  # the peers have the ImageNet stem (7x7/2 conv + max-pool)
NUM_CLASSES = 1000

# Sizes per suite. "trainer" names the model of the trainer-vs-bare-loop section: on the CPU a
# cheap one (ImageNet stem on 32x32), so that the per-step overhead is not lost in a slow step.
SUITES: dict[str, dict[str, Any]] = {
    "cpu": dict(image_size=64, batch_size=16, depths=(18, 50), precision="32", channels_last=False,
                compile=False, repeats=7, warmup=2, iters=2,
                data=dict(batch_size=512, batches=12, repeats=5),
                trainer=dict(network_type="ImageNet", depth=18, batch_size=32, batches=12,
                             repeats=5)),
    "gpu": dict(image_size=224, batch_size=256, depths=DEPTHS, precision="bf16", channels_last=True,
                compile=True, repeats=5, warmup=3, iters=3,
                data=dict(batch_size=512, batches=98, repeats=5),
                trainer=dict(network_type="CIFAR10", depth=18, batch_size=512, batches=48,
                             repeats=5)),
}
QUICK = dict(image_size=32, batch_size=4, depths=(18,), repeats=2, warmup=1, iters=1,
             data=dict(batch_size=512, batches=2, repeats=2),
             trainer=dict(network_type="ImageNet", depth=18, batch_size=8, batches=3, repeats=2))


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
