"""The boundary between Hydra configs and the library: validate, build, run, write results.

``train.py`` and ``evaluate.py`` call ``train(cfg)`` / ``evaluate(cfg)``. Everything below
this module receives plain arguments; no other module reads the config tree.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import random
import subprocess
import time
import traceback
from dataclasses import fields
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from . import __version__
from .complexity import measure
from .data import DATASET_CHOICES, build_datasets, build_loader
from .engine.checkpoint import load_training_checkpoint
from .engine.optim import OPTIMIZER_CHOICES, SCHEDULE_CHOICES, build_optimizer, lr_factor_schedule
from .engine.tb_logger import flatten_hparams
from .engine.trainer import (
    PRECISION_CHOICES,
    Trainer,
    TrainerSettings,
    device_name,
    evaluate_model,
    resolve_device,
)
from .models import DEPTHS, NETWORK_TYPES, ResidualNet, attention_choices
from .models.attention import canonical_name
from .models.attention.bam import COMBINE_CHOICES
from .models.official import load_official
from .models.resnet import INIT_CHOICES

log = logging.getLogger(__name__)

LOADER_KEYS = ("batch_size", "val_batch_size", "num_workers", "pin_memory", "persistent_workers")
DATA_META_KEYS = ("name", "network_type")
MODEL_OPTION_KEYS = ("reduction", "kernel_size", "combine", "stride_in_1x1", "zero_init_residual", "init")


class ConfigError(ValueError):
    """A config value that cannot work; raised before any data is read."""


# ------------------------------------------------------------------ validation
def _fail(key: str, value: Any, choices) -> None:
    listed = ", ".join(str(c) for c in choices)
    raise ConfigError(
        f"Invalid config value {key}={value!r}. Valid choices: {listed}. "
        f"Fix it on the command line (e.g. {key}={next(iter(choices))}) or in the config file."
    )


def _positive(cfg: DictConfig, key: str, allow_zero: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(
            f"Invalid config value {key}={value!r}: it must be a {'non-negative' if allow_zero else 'positive'} number."
        )


def validate_model(cfg: DictConfig) -> None:
    if cfg.model.depth not in DEPTHS or isinstance(cfg.model.depth, bool):
        _fail("model.depth", cfg.model.depth, sorted(DEPTHS))
    try:
        canonical_name(cfg.model.att_type)
    except ValueError:
        _fail("model.att_type", cfg.model.att_type, attention_choices())
    if cfg.model.init not in INIT_CHOICES:
        _fail("model.init", cfg.model.init, INIT_CHOICES)
    if cfg.model.combine not in COMBINE_CHOICES:
        _fail("model.combine", cfg.model.combine, COMBINE_CHOICES)


def validate_data(cfg: DictConfig) -> None:
    if cfg.data.name not in DATASET_CHOICES:
        _fail("data.name", cfg.data.name, DATASET_CHOICES)
    if str(cfg.data.network_type).lower() not in NETWORK_TYPES:
        _fail("data.network_type", cfg.data.network_type, NETWORK_TYPES.values())
    _positive(cfg, "data.batch_size")
    _positive(cfg, "data.num_workers", allow_zero=True)


def validate_train_config(cfg: DictConfig) -> None:
    """Check every choice and number the run depends on; names the key and the valid values."""
    validate_model(cfg)
    validate_data(cfg)
    if cfg.optim.name not in OPTIMIZER_CHOICES:
        _fail("optim.name", cfg.optim.name, OPTIMIZER_CHOICES)
    _positive(cfg, "optim.lr")
    _positive(cfg, "optim.weight_decay", allow_zero=True)
    if cfg.sched.name not in SCHEDULE_CHOICES:
        _fail("sched.name", cfg.sched.name, SCHEDULE_CHOICES)
    if str(cfg.trainer.precision) not in ("auto", *PRECISION_CHOICES):
        _fail("trainer.precision", cfg.trainer.precision, ("auto", *PRECISION_CHOICES))
    for key in ("trainer.epochs", "trainer.accumulate"):
        _positive(cfg, key)
    for key in ("trainer.label_smoothing", "trainer.grad_clip", "trainer.checkpoint_every_steps",
                "trainer.limit_train_batches", "trainer.limit_val_batches"):
        _positive(cfg, key, allow_zero=True)
    resume = str(cfg.trainer.resume)
    if resume not in ("auto", "never") and not Path(resume).is_file():
        raise ConfigError(
            f"Invalid config value trainer.resume={resume!r}: no such file. Use trainer.resume=auto (continue "
            f"from the run folder's checkpoints/last.pt when present), never, or the path of a checkpoint."
        )


# ------------------------------------------------------------------- builders
def model_spec(cfg: DictConfig, num_classes: int) -> dict:
    """Plain keyword arguments for ``ResidualNet``; stored in checkpoints to rebuild the model."""
    return {
        "network_type": NETWORK_TYPES[str(cfg.data.network_type).lower()],
        "depth": int(cfg.model.depth),
        "num_classes": int(num_classes),
        "att_type": canonical_name(cfg.model.att_type),
        **{key: cfg.model[key] for key in MODEL_OPTION_KEYS},
    }


def describe_spec(spec: dict) -> str:
    """E.g. "ResNet-50 + CBAM (CIFAR100 stem, 100 classes)"."""
    attention = "" if spec["att_type"] == "none" else f" + {spec['att_type']}"
    return f"ResNet-{spec['depth']}{attention} ({spec['network_type']} stem, {spec['num_classes']} classes)"


def build_model(spec: dict) -> torch.nn.Module:
    return ResidualNet(**spec)


def resolve_precision(requested: str, device: torch.device) -> str:
    """"auto": bf16 on GPUs that support it, fp16 on older GPUs, fp32 on the CPU."""
    requested = str(requested)
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "32"


def dataset_options(data_cfg: DictConfig) -> dict:
    options = OmegaConf.to_container(data_cfg, resolve=True)
    return {k: v for k, v in options.items() if k not in LOADER_KEYS + DATA_META_KEYS}


def make_loaders(data_cfg: DictConfig, seed: int, device: torch.device):
    train_set, val_set, info = build_datasets(data_cfg.name, **dataset_options(data_cfg))
    common = dict(
        num_workers=int(data_cfg.num_workers),
        pin_memory=bool(data_cfg.pin_memory) and device.type == "cuda",
        persistent_workers=bool(data_cfg.persistent_workers),
        seed=seed,
    )
    train_loader = build_loader(train_set, batch_size=int(data_cfg.batch_size), train=True, **common)
    val_batch = int(data_cfg.get("val_batch_size") or data_cfg.batch_size)
    val_loader = build_loader(val_set, batch_size=val_batch, train=False, **common)
    return train_loader, val_loader, info


def configure_determinism(seed: int, deterministic: bool) -> None:
    """Seed every RNG; set (or, for a later job of a sweep, unset) deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        # warn_only: a few CUDA kernels (e.g. adaptive pooling backward) have no deterministic version.
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the code as imported (cached: later jobs of a sweep run the same code)."""
    try:
        root = Path(__file__).resolve().parent
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def write_json(path: Path, payload: dict) -> None:
    """Write JSON atomically (temp file + rename), so a crash never leaves half a results file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(temp, path)


def record_results(run_dir: Path, payload: dict) -> Path:
    """Write results.json, except that a completed run's results are never replaced by an unfinished attempt.

    A later attempt in the same folder that fails (or is still running) writes
    ``results.last_attempt.json`` beside the completed results instead.
    """
    path = run_dir / "results.json"
    if payload.get("status") != "completed" and path.is_file():
        try:
            previous = json.loads(path.read_text()).get("status")
        except (OSError, json.JSONDecodeError):
            previous = None
        if previous == "completed":
            path = run_dir / "results.last_attempt.json"
    write_json(path, payload)
    return path


def environment() -> dict:
    return {
        "torch_version": str(torch.__version__),
        "package_version": __version__,
        "python_version": platform.python_version(),
        "git_commit": git_commit(),
        "hostname": platform.node(),
    }


# ----------------------------------------------------------------------- train
def train(cfg: DictConfig, run_dir: str | os.PathLike, job: dict | None = None) -> dict:
    """Run one training job in ``run_dir``; always leaves a results.json saying how it ended.

    ``job`` (Hydra's job number and command-line overrides) is recorded so that a table
    builder can tell which jobs of a sweep are missing.
    """
    run_dir = Path(run_dir)
    config = OmegaConf.to_container(cfg, resolve=True)
    started = time.time()
    base = {"status": "running", "run_dir": str(run_dir), "job": job or {}, "config": config, **environment()}
    try:
        validate_train_config(cfg)
        record_results(run_dir, {**base, "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
        results = _train(cfg, run_dir, config)
    except Exception as error:
        record_results(run_dir, {**base, "status": "failed", "error": f"{type(error).__name__}: {error}",
                                  "traceback": traceback.format_exc(), "wall_seconds": time.time() - started})
        raise
    results = {**base, **results, "status": "completed", "wall_seconds": time.time() - started}
    record_results(run_dir, results)
    return results


def _train(cfg: DictConfig, run_dir: Path, config: dict) -> dict:
    seed = int(cfg.seed)
    configure_determinism(seed, bool(cfg.trainer.deterministic))
    device = resolve_device(str(cfg.trainer.device))
    precision = resolve_precision(cfg.trainer.precision, device)

    resume_path = None
    resume = str(cfg.trainer.resume)
    if resume == "auto" and (run_dir / "checkpoints" / "last.pt").is_file():
        resume_path = run_dir / "checkpoints" / "last.pt"
    elif resume not in ("auto", "never"):
        resume_path = Path(resume)
    # Read (and so vet) the checkpoint before the expensive part starts.
    checkpoint = load_training_checkpoint(resume_path) if resume_path else None

    train_loader, val_loader, info = make_loaders(cfg.data, seed, device)
    if len(train_loader) == 0:
        raise ConfigError(
            f"data.batch_size={cfg.data.batch_size} is larger than the training set of {info.name} "
            f"({info.train_size} images), so an epoch would have no full batch. Lower data.batch_size."
        )
    spec = model_spec(cfg, info.num_classes)
    model = build_model(spec)
    with torch.device("meta"):
        complexity = measure(build_model(spec), (3, *info.image_size))

    batch_size = int(cfg.data.batch_size) * int(cfg.trainer.accumulate)
    lr = float(cfg.optim.lr)
    if cfg.optim.get("reference_batch_size"):
        lr = lr * batch_size / float(cfg.optim.reference_batch_size)
    optim_options = {k: v for k, v in OmegaConf.to_container(cfg.optim, resolve=True).items()
                     if k not in ("name", "lr", "reference_batch_size")}
    optimizer = build_optimizer(model, cfg.optim.name, lr, **optim_options)
    settings_keys = {f.name for f in fields(TrainerSettings)}
    settings = TrainerSettings(**{k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items()
                                  if k in settings_keys})
    settings.precision = precision
    sched_options = {k: v for k, v in OmegaConf.to_container(cfg.sched, resolve=True).items() if k != "name"}
    schedule = partial(lr_factor_schedule, cfg.sched.name, settings.epochs, **sched_options)

    trainer = Trainer(model, optimizer, schedule, train_loader, val_loader, settings, run_dir, device,
                      config=config, model_spec=spec, tensorboard=bool(cfg.trainer.tensorboard))
    if checkpoint is not None:
        trainer.load_state_dict(checkpoint, source=str(resume_path))
    log.info("Model %s: %.2fM params, %.3f GFLOPs at %dx%d; data %s (%d train / %d val, %d classes); device %s, "
             "precision %s; lr %.4g (batch %d)", describe_spec(spec), complexity.params_m, complexity.gflops,
             *info.image_size,
             info.name, info.train_size, info.val_size, info.num_classes, device_name(device), precision, lr,
             batch_size)
    summary = trainer.fit()
    final, best = summary["final"], summary["best"]
    metrics = {"hparam/final_acc1": final["acc1"], "hparam/final_acc5": final["acc5"],
               "hparam/best_acc1": best["acc1"]}
    trainer.tb.hparams(flatten_hparams({k: v for k, v in config.items() if k != "hydra"}), metrics,
                       summary["epochs_completed"])
    trainer.tb.close()
    log.info("Done: final val top-1 %.2f%% (top-5 %.2f%%), best top-1 %.2f%% at epoch %d; %.0f img/s.",
             final["acc1"], final["acc5"], best["acc1"], best["epoch"], summary["images_per_sec"])
    return {
        "model": spec,
        "data": {"name": info.name, "num_classes": info.num_classes, "train_size": info.train_size,
                 "val_size": info.val_size, "image_size": list(info.image_size)},
        "final": {**final, "err1": 100 - final["acc1"], "err5": 100 - final["acc5"]},
        "best": {**best, "err1": 100 - best["acc1"]},
        "params": complexity.params,
        "params_m": complexity.params_m,
        "gflops": complexity.gflops,
        "epochs": summary["epochs_completed"],
        "global_step": summary["global_step"],
        "train_seconds": summary["train_seconds"],
        "images_per_sec": summary["images_per_sec"],
        "device": device_name(device),
        "precision": precision,
        "history": summary["history"],
    }


# -------------------------------------------------------------------- evaluate
def evaluate(cfg: DictConfig, run_dir: str | os.PathLike, job: dict | None = None) -> dict:
    """Evaluate a checkpoint (ours or the authors') on the val split; write eval.json."""
    if not cfg.get("checkpoint"):
        raise ConfigError("evaluate.py needs checkpoint=PATH (a checkpoints/best.pt or last.pt of a run, "
                          "or the authors' .pth.tar with checkpoint_format=official).")
    fmt = cfg.checkpoint_format
    if fmt not in ("ours", "official"):
        _fail("checkpoint_format", fmt, ("ours", "official"))
    device = resolve_device(str(cfg.device))
    if fmt == "ours":
        checkpoint = load_training_checkpoint(cfg.checkpoint)
        data_cfg = cfg.data if cfg.get("data") is not None else OmegaConf.create(checkpoint["config"]["data"])
        spec = dict(checkpoint["model_spec"])
        model = build_model(spec)
        model.load_state_dict(checkpoint["model"])
    else:
        if cfg.get("data") is None or cfg.get("model") is None:
            raise ConfigError("checkpoint_format=official needs the model and data chosen explicitly, e.g. "
                              "model.depth=50 model.att_type=CBAM data=imagenet data.root=/path/to/imagenet.")
        data_cfg = cfg.data
        validate_model(cfg)
        checkpoint = None
    check = OmegaConf.create({"data": data_cfg})
    validate_data(check)
    seed = int(cfg.get("seed", 0))
    _, val_loader, info = make_loaders(data_cfg, seed, device)
    if fmt == "official":
        spec = model_spec(OmegaConf.create({"model": cfg.model, "data": data_cfg}), info.num_classes)
        model = load_official(build_model(spec), cfg.checkpoint)
    if spec["num_classes"] != info.num_classes:
        raise ConfigError(f"The checkpoint's model has {spec['num_classes']} classes but data {info.name!r} has "
                          f"{info.num_classes}; evaluate it on the data set it was trained for.")
    precision = resolve_precision(cfg.precision, device)
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    started = time.time()
    metrics = evaluate_model(model, val_loader, device, precision, bool(cfg.channels_last))
    with torch.device("meta"):
        complexity = measure(build_model(spec), (3, *info.image_size))
    result = {
        "checkpoint": str(cfg.checkpoint),
        "checkpoint_format": fmt,
        "model": spec,
        "data": {"name": info.name, "val_size": info.val_size, "num_classes": info.num_classes},
        "acc1": metrics["acc1"], "acc5": metrics["acc5"], "err1": 100 - metrics["acc1"],
        "err5": 100 - metrics["acc5"], "loss": metrics["loss"], "images": metrics["images"],
        "params": complexity.params, "gflops": complexity.gflops,
        "device": device_name(device), "precision": precision, "seconds": time.time() - started,
        **environment(),
    }
    if checkpoint is not None:
        result["trained_epochs"] = checkpoint["epoch"]
    write_json(Path(run_dir) / "eval.json", result)
    print(f"{info.name} val: top-1 {result['acc1']:.2f}% (err {result['err1']:.2f}), top-5 {result['acc5']:.2f}% "
          f"on {metrics['images']} images -> {Path(run_dir) / 'eval.json'}")
    return result


git_commit()  # record the commit when the code is loaded, before the working tree can move on
