"""What a resumed run may change: settings that do not alter the training trajectory.

A run resumed with another schedule, epoch count, batch size, accumulation, data subset
or seed would silently re-stretch its lr schedule and skip the wrong samples. The
checkpoint holds the config of the run that wrote it; ``trajectory_changes`` lists every
key that differs (the model's included), except the operational ones below: where the
data lives, how many workers read it, logging and the loggers, checkpoint frequency, the device. A key that
a checkpoint from an older release lacks counts as its "off" value (``OFF_VALUES``).
"""

from __future__ import annotations

from typing import Any, Mapping

from ..dataset_registry import DEFAULT_CROP_PCT, DEFAULT_CROP_SCALE, RegistryError, normalize_data_config
from .choices import canonical_attention

# Keys that may differ on resume: they change how a run is executed or reported, not its trajectory.
OPERATIONAL_KEYS = frozenset({
    "name", "seeds", "optimized_metric",
    "data.root", "data.download", "data.num_workers", "data.pin_memory", "data.persistent_workers",
    "data.val_batch_size", "data.val_subset", "data.loader",
    "trainer.device", "trainer.compile", "trainer.compile_mode", "trainer.compile_eval", "trainer.cudnn_benchmark",
    "trainer.eval_precision",
    "trainer.channels_last", "trainer.deterministic",
    "trainer.progress", "trainer.progress_interval", "trainer.log_every_steps", "trainer.tensorboard",
    "trainer.checkpoint_every_steps", "trainer.checkpoint_every_epochs",
    "trainer.resume", "trainer.resume_allow_changes",
    "trainer.limit_val_batches", "trainer.val_every_epochs", "trainer.max_nonfinite_skips", "trainer.dist_timeout",
    "trainer.stop_signals",
    "trainer.tta", "trainer.save_best",
    "model.fused",
})

# Keys that say which task a run learns: which images, which classes, which split picks best.pt. A
# resume across a change of these would report the old task's best as the new one's: never allowed,
# not even with trainer.resume_allow_changes (fine-tuning on the new task is model.init_from's job).
TASK_KEYS = frozenset({"data.name", "data.classes", "data.num_classes", "data.val_split", "data.val_fraction"})

# Trajectory keys added after checkpoints were first written, with the value that means "off":
# a checkpoint whose config lacks one was trained without the feature, so resuming it with the
# feature off is no change (and with it on, one).
OFF_VALUES: dict[str, Any] = {
    "aug.cutout": 0,
    "aug.policy": "none",
    "aug.num_ops": 2,
    "aug.magnitude": 9,
    "aug.random_erasing": 0.0,
    "aug.mixup": 0.0,
    "aug.cutmix": 0.0,
    "aug.mix_prob": 1.0,
    "aug.switch_prob": 0.5,
    "aug.mix_off_epoch": 0,
    "trainer.loss": "ce",
    "optim.layer_decay": None,
    "model.drop_path": 0.0,
    "model.width": 1.0,
    "model.cardinality": 1,
    "model.width_per_group": 64,
    "data.repeat_aug": 1,
    "trainer.bce_target_threshold": None,
    "trainer.ema_decay": 0.0,
    "trainer.ema_warmup": False,
    "model.init_from": None,
    "model.init_from_format": "auto",
    "model.new_head": "auto",
    "model.freeze": "none",
    "model.freeze_bn_stats": True,
    "optim.head_lr_scale": 1.0,
    "data.classes": None,
    "data.image_size": None,
    "data.mean": None,
    "data.std": None,
    "data.crop_scale": list(DEFAULT_CROP_SCALE),
    "data.crop_pct": DEFAULT_CROP_PCT,
}


def _with_stem(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """``config`` with ``data.stem`` resolved and the older ``data.network_type`` gone, so that a checkpoint of
    an earlier release (``data.network_type: CIFAR10``) compares with a config that says ``data.stem: cifar``."""
    data = config.get("data")
    if not isinstance(data, Mapping):
        return config
    try:
        return {**config, "data": normalize_data_config(data)}
    except RegistryError:
        return config  # a value validation reports; compared as it is


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = list(value) if isinstance(value, tuple) else value
    return flat


def trajectory_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{key: (checkpoint's value, this run's value)}`` for every trajectory key that differs."""
    old, new = _flatten(_with_stem(saved)), _flatten(_with_stem(current))
    for flat in (old, new):  # "cbam" and "CBAM" are the same block
        if "model.att_type" in flat:
            flat["model.att_type"] = canonical_attention(flat["model.att_type"]) or flat["model.att_type"]
    changes = {}
    for key in sorted(set(old) | set(new)):
        if key in OPERATIONAL_KEYS or key.startswith(("hydra.", "logger.")):  # where the metrics go
            continue
        if key not in old and key in OFF_VALUES:
            old[key] = OFF_VALUES[key]  # written before the key existed: the feature was off
        if old.get(key) != new.get(key):
            changes[key] = (old.get(key), new.get(key))
    return changes


def describe_changes(changes: Mapping[str, tuple[Any, Any]]) -> str:
    return "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changes.items())
