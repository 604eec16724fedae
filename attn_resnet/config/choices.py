"""The valid values of every choice key, in one place and without importing torch.

The modules that implement a choice (models, data, engine) keep their own registries;
tests check that these lists equal them.
"""

from __future__ import annotations

DEPTHS = (18, 34, 50, 101)
NO_ATTENTION = "none"
ATTENTION_TYPES = (NO_ATTENTION, "SE", "CBAM", "BAM")
# lower-case spelling -> canonical spelling
NETWORK_TYPES = {"imagenet": "ImageNet", "cifar10": "CIFAR10", "cifar100": "CIFAR100"}
DATASETS = ("cifar10", "cifar100", "imagenet", "imagefolder", "synthetic", "digits")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "multistep", "cosine", "constant")
PRECISIONS = ("32", "bf16", "fp16")
INITS = ("reference", "torchvision")
BAM_COMBINES = ("product", "sum")
CHECKPOINT_FORMATS = ("ours", "official")
LOADERS = ("auto", "device", "workers")


def canonical_attention(value) -> str | None:
    """The canonical spelling of an ``att_type`` (case-insensitive; None means "none"), or None if unknown."""
    if value is None:
        return NO_ATTENTION
    if isinstance(value, str):
        for name in ATTENTION_TYPES:
            if name.lower() == value.lower():
                return name
    return None
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
EVAL_PRECISIONS = ("32", "bf16", "fp16", "same")
