"""The boundary between Hydra configs and the library: validate, build, run, write results.

``train.py`` and ``evaluate.py`` call ``train(cfg, run_dir)`` / ``evaluate(cfg, run_dir)``.
The config is validated (``config.validate``) and turned into plain dicts here; everything
below receives plain arguments.
"""

from __future__ import annotations

import logging
import os
import shlex
import time
import traceback
from contextlib import nullcontext
from dataclasses import fields
from functools import partial
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from .build import (
    Sharding,
    batch_mix,
    build_model,
    configure_determinism,
    configured_callbacks,
    configured_loggers,
    describe_spec,
    make_eval_loader,
    make_loaders,
    model_spec,
    resolve_precision,
)
from .api import ModelInfo, load_checkpoint
from .complexity import measure
from .config.choices import OPTIMIZED_METRICS
from .config.recipe import describe_recipe, measured_on, short_run_warnings
from .config.resume import TASK_KEYS, describe_changes, trajectory_changes
from .config.validate import ConfigError, validate_evaluate_config, validate_train_config
from .dataset_registry import data_stem, normalize_data_config, stem_of
from .engine.attention_logging import AttentionImages, fixed_images, has_attention_maps
from .distributed_env import process_env
from .engine.checkpoint import load_training_checkpoint
from .engine.checkpointing import check_resumable, check_room_for_checkpoints, checkpoint_size_estimate
from .engine.distributed import Distributed, convert_sync_batchnorm, start_distributed
from .engine.finetune import FrozenNormsInEval, InitRecord
from .engine.objectives import Objective
from .engine.progress import ProgressReporter
from .engine.optim import build_optimizer, build_scheduler
from .engine.trainer import Trainer, TrainerSettings, device_name, evaluate_model, resolve_device
from .models.official import load_official
from .models.weights_file import is_safetensors
from .models.transfer import freeze_, load_pretrained
from .records import environment, record_results
from .runfiles import RunLock, ensure_run_folder, remove_stale_temp_files, write_json_atomic
from .attempts import end_attempt, new_attempt, previous_attempts
from .signals import (DEFAULT_STOP_SIGNALS, REQUEUE_EXIT_CODE, RunInterrupted, RunStopped, StopRequest,
                      sigint_as_stop_request, sigterm_as_error, signal_numbers, stop_on_signals)

log = logging.getLogger(__name__)

__all__ = ["ConfigError", "build_model", "evaluate", "optimized_value", "train"]


# ----------------------------------------------------------------------- train
def train(cfg: DictConfig, run_dir: str | os.PathLike, job: dict | None = None,
          group_choices: dict | None = None, conf_dir: Path | None = None) -> dict:
    """Run one training job in ``run_dir``; always leaves a results.json saying how it ended.

    The folder is locked for the whole run: a second process asked to train in it stops
    with an error instead of mixing its logs, checkpoints and results with this one's.
    ``job`` (Hydra's job number and command-line overrides) is recorded so that a table
    builder can tell which jobs of a sweep are missing.
    """
    run_dir = Path(run_dir)
    if not process_env().is_main:  # a data-parallel run: rank 0 owns the folder and writes its records
        stop = StopRequest()
        with _stop_signals(cfg, stop):
            validate_train_config(cfg, group_choices, conf_dir)
            return _train(OmegaConf.to_container(cfg, resolve=True), run_dir, stop)
    fresh = not any((run_dir / name).exists() for name in ("results.json", "checkpoints"))
    ensure_run_folder(run_dir)
    try:
        return _train_in_folder(cfg, run_dir, job, group_choices, conf_dir)
    except ValueError:
        # Refused before training for a bad input (config, data, checkpoint): a folder this run made holds
        # nothing worth keeping, and a sweep's jobs keep theirs as the record of which job failed.
        if fresh and (job or {}).get("num") is None:
            _remove_refused_run_folder(run_dir, str(cfg.get("name")))
        raise


def _remove_refused_run_folder(run_dir: Path, run_name: str) -> None:
    """Remove what the framework wrote in ``run_dir`` (Hydra's config copy, the log, the lock, results.json)
    and the folder itself when nothing else is left in it (and ``outputs/<run_name>/`` when that is empty
    then); anything else there stays."""
    import shutil

    if any((run_dir / "checkpoints").glob("*.pt")):
        return
    for name in (".hydra", "checkpoints"):
        shutil.rmtree(run_dir / name, ignore_errors=True)
    for name in ("train.log", "evaluate.log", ".lock", "results.json", "results.last_attempt.json"):
        (run_dir / name).unlink(missing_ok=True)
    for event_file in run_dir.glob("events.out.tfevents.*"):
        event_file.unlink(missing_ok=True)
    try:
        run_dir.rmdir()
    except OSError:
        return
    if run_dir.parent.name == run_name:  # the default layout's outputs/<name>/, when this was its only run
        try:
            run_dir.parent.rmdir()
        except OSError:
            pass
    log.info("Removed the run folder %s: the run was refused before training, so it held nothing to keep.", run_dir)


def _train_in_folder(cfg: DictConfig, run_dir: Path, job: dict | None, group_choices: dict | None,
                     conf_dir: Path | None) -> dict:
    # Ctrl-C stops at the next step boundary with a checkpoint; in a data-parallel run the ranks could
    # not agree on that step, so there it stops on the spot, keeping the last checkpoint written.
    stop = StopRequest()
    graceful = sigint_as_stop_request(stop) if not process_env().distributed else nullcontext()
    with RunLock(run_dir), _stop_signals(cfg, stop), graceful:
        for stale in remove_stale_temp_files(run_dir) + remove_stale_temp_files(run_dir / "checkpoints"):
            log.info("Removed %s, left by an interrupted write.", stale)
        started = time.time()
        attempts = previous_attempts(run_dir)
        attempt = {**new_attempt(attempts), "status": "running"}
        base = {"status": "running", "run_dir": str(run_dir), "job": job or {}, **environment(),
                "attempts": [*attempts, attempt]}
        try:
            base["config"] = OmegaConf.to_container(cfg, resolve=True)  # recorded even if validation fails
            validate_train_config(cfg, group_choices, conf_dir)
            config = base["config"]
            log.info("Run folder: %s", run_dir)
            if attempts:
                log.info("Attempt %d in this folder: %s.", attempt["attempt"], attempt["reason"])
            _say_when_nothing_to_resume(config["trainer"], run_dir)
            record_results(run_dir, {**base, "started": attempt["started"]})
            results = _train(config, run_dir, stop)
        except RunStopped as error:
            # A launcher (torchrun, submitit, Slurm) starts it again on the exit status; by hand, this command does.
            error.args = (f"{error} A launcher that requeues starts it again on its exit status "
                          f"({REQUEUE_EXIT_CODE}); by hand, the same command resumes it: "
                          f"{_resume_command(run_dir, job)}",)
            end_attempt(attempt, "stopped", signals=error.signals, stop_seconds=round(error.seconds, 3),
                        steps=list(error.steps))
            record_results(run_dir, {**base, "status": "stopped", "error": str(error), "requeue": True,
                                      "wall_seconds": time.time() - started})
            raise
        except (RunInterrupted, KeyboardInterrupt) as error:
            where = str(error) if isinstance(error, RunInterrupted) else "at once (a second Ctrl-C)"
            message = _interrupted_message(where, run_dir, job)
            end_attempt(attempt, "interrupted")
            record_results(run_dir, {**base, "status": "interrupted", "error": message,
                                      "wall_seconds": time.time() - started})
            raise RunInterrupted(message) from None
        except Exception as error:
            end_attempt(attempt, "failed")
            record_results(run_dir, {**base, "status": "failed", "error": f"{type(error).__name__}: {error}",
                                      "traceback": traceback.format_exc(), "wall_seconds": time.time() - started})
            raise
        end_attempt(attempt, "completed")
        results = {**base, **results, "status": "completed", "wall_seconds": time.time() - started}
        record_results(run_dir, results)
        log.info("%s", _finished_message(run_dir))
        return results


def _stop_signals(cfg: DictConfig, stop: StopRequest):
    """The context in which ``trainer.stop_signals`` request a stop (``signals.stop_on_signals``), and SIGTERM, when
    it is not one of them, stops the run at once (``sigterm_as_error``). Names that are not signals install
    nothing here: validation reports them."""
    from contextlib import ExitStack

    names = [str(name) for name in (cfg.get("trainer") or {}).get("stop_signals", DEFAULT_STOP_SIGNALS) or []]
    try:
        signal_numbers(names)
    except ValueError:
        names = []
    stack = ExitStack()
    stack.enter_context(stop_on_signals(stop, names))
    if "SIGTERM" not in names:
        stack.enter_context(sigterm_as_error())
    return stack


def _finished_message(run_dir: Path) -> str:
    """The run's last line: its folder again, and the checkpoint to use next (best.pt, else last.pt)."""
    best = run_dir / "checkpoints" / "best.pt"
    checkpoint = best if best.is_file() else run_dir / "checkpoints" / "last.pt"
    kept = "" if checkpoint == best else " (no best.pt was kept)"
    return (f"Run folder: {run_dir}; its checkpoint for evaluate, predict, export or model.init_from: "
            f"{checkpoint}{kept}")


def _resume_command(run_dir: Path, job: dict | None) -> str:
    """The command that continues the run in ``run_dir``: its own overrides and that folder."""
    overrides = [o for o in (job or {}).get("overrides", []) if not o.startswith("hydra.run.dir=")]
    return " ".join([_train_command(), *map(shlex.quote, overrides), shlex.quote(f"hydra.run.dir={run_dir}")])


def _interrupted_message(where: str, run_dir: Path, job: dict | None) -> str:
    """One paragraph for a run stopped with Ctrl-C: where it stopped, what is kept, the command that resumes it."""
    command = _resume_command(run_dir, job)
    last = run_dir / "checkpoints" / "last.pt"
    kept = (f"Its last checkpoint, {last}, is kept and the run continues from it, the same as if it had not "
            f"stopped" if last.is_file() else
            "No checkpoint was written before it stopped, so the same command starts it again from the beginning")
    return (f"Interrupted (Ctrl-C) {where}. Run folder: {run_dir}; results.json says \"interrupted\". {kept}: "
            f"{command}")


def _train_command() -> str:
    """How this run was started, for a command to repeat: ``attn-resnet train`` or ``python train.py``."""
    import sys

    started_as = (sys.argv[0] if sys.argv else "").split(" ")[0]
    return "attn-resnet train" if Path(started_as).name == "attn-resnet" else "python train.py"


def optimized_value(results: dict, metric: str = "val_acc1") -> float:
    """The number a sweeper optimises (``optimized_metric``), from a training run's results.

    "val" is the split that picks best.pt: the held-out part of the training set when
    ``data.val_split`` is set (never the test split), else the official val split.
    """
    last_val = results.get("final_val") or results["final"]
    if metric == "val_acc1":
        return float(last_val["acc1"])
    if metric == "best_val_acc1":
        return float(results["best"]["acc1"])
    if metric == "val_loss":
        return float(last_val["loss"])
    raise ConfigError(f"Invalid config value optimized_metric={metric!r}. Valid choices: "
                      f"{', '.join(OPTIMIZED_METRICS)}.")


def _resume_checkpoint(trainer_cfg: dict, run_dir: Path) -> tuple[Path | None, dict | None]:
    resume = str(trainer_cfg["resume"])
    path = None
    if resume == "auto" and (run_dir / "checkpoints" / "last.pt").is_file():
        path = run_dir / "checkpoints" / "last.pt"
    elif resume not in ("auto", "never"):
        path = Path(resume)
    # Read (and so vet) the checkpoint before the expensive part starts.
    checkpoint = load_training_checkpoint(path) if path else None
    if checkpoint is not None:
        check_resumable(checkpoint, str(path))
    return path, checkpoint


def _say_when_nothing_to_resume(trainer_cfg: dict, run_dir: Path) -> None:
    """A folder where an earlier run stopped before its first checkpoint: say that this run starts afresh."""
    import json

    if str(trainer_cfg.get("resume")) != "auto" or (run_dir / "checkpoints" / "last.pt").is_file():
        return
    try:
        status = json.loads((run_dir / "results.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return
    log.warning("No checkpoint to resume from in %s: the earlier run in this folder (results.json: %s) stopped "
                "before writing checkpoints/last.pt, so this run starts from the beginning.",
                run_dir / "checkpoints", status)


def _check_trajectory(checkpoint: dict, config: dict, source: Path, world_size: int = 1) -> dict:
    """Refuse a resume whose settings would change the run's trajectory, unless explicitly allowed.

    The number of processes counts: it sets the global batch and which images each rank's
    batches hold.
    """
    changes = trajectory_changes(checkpoint.get("config") or {}, config)
    saved_world_size = int(checkpoint.get("world_size", 1))  # checkpoints from before DDP: one process
    if saved_world_size != world_size:
        changes["world_size (processes)"] = (saved_world_size, world_size)
    if not changes:
        return {}
    task = {key: change for key, change in changes.items() if key in TASK_KEYS}
    if task:
        raise ConfigError(
            f"Cannot resume from {source}: it was trained on another task ({describe_changes(task)}), so its "
            f"epochs, schedule and best accuracy belong to that task and would be reported as this run's. This is "
            f"refused even with trainer.resume_allow_changes=true. To start from its weights on this task, begin a "
            f"new run, in a new run folder, with model.init_from={source} (a new schedule, and a new head where "
            f"the classes differ)."
        )
    if not config["trainer"].get("resume_allow_changes"):
        raise ConfigError(
            f"Cannot resume from {source}: these settings differ from the run that wrote it, and would change "
            f"its trajectory (the lr schedule would be re-stretched and the wrong samples skipped): "
            f"{describe_changes(changes)}. Resume with the original values, start a new run folder, or set "
            f"trainer.resume_allow_changes=true to continue anyway (the changes are then recorded in "
            f"results.json under resume_changes)."
        )
    log.warning("Resuming with changed settings (trainer.resume_allow_changes=true): %s. The result is no longer "
                "bit-exact: it differs from a run that kept the checkpoint's settings throughout.",
                describe_changes(changes))
    return {key: {"checkpoint": old, "now": new} for key, (old, new) in changes.items()}


def _train(config: dict, run_dir: Path, stop: StopRequest | None = None) -> dict:
    """One training run in ``run_dir``; one rank of it when launched as several processes."""
    trainer_cfg = config["trainer"]
    distributed, device = start_distributed(str(trainer_cfg["device"]), float(trainer_cfg.get("dist_timeout", 600)))
    try:
        return _train_process(config, run_dir, distributed, device or resolve_device(str(trainer_cfg["device"])),
                              stop)
    finally:
        distributed.close()


def _train_process(config: dict, run_dir: Path, distributed: Distributed, device: torch.device,
                   stop: StopRequest | None = None) -> dict:
    # data.stem resolved (from its older spelling data.network_type too): what checkpoints and results record.
    config["data"] = normalize_data_config(config["data"])
    data_cfg, trainer_cfg, optim_cfg = config["data"], config["trainer"], config["optim"]
    seed = int(config["seed"])
    configure_determinism(seed, bool(trainer_cfg["deterministic"]))  # the same on every rank: same initial weights
    precision = resolve_precision(trainer_cfg["precision"], device)
    world_size = distributed.world_size
    resume_path, checkpoint = _resume_checkpoint(trainer_cfg, run_dir)
    resume_changes = (_check_trajectory(checkpoint, config, resume_path, world_size)
                      if checkpoint is not None else {})

    sharding = Sharding(world_size, distributed.rank, distributed.local_world_size)
    loaders = make_loaders(data_cfg, seed, device, channels_last=bool(trainer_cfg["channels_last"]),
                           sharding=sharding, aug=config.get("aug"))
    info = loaders.info
    if len(loaders.train) == 0:
        share = f" shared by {world_size} processes" if world_size > 1 else ""
        raise ConfigError(
            f"data.batch_size={data_cfg['batch_size']} is larger than the training set of {info.name} "
            f"({info.train_size} images{share}), so an epoch would have no full batch. Lower data.batch_size."
        )
    spec = model_spec(config["model"], data_cfg["stem"], info.num_classes)
    model_cfg = config["model"]
    model = build_model(spec, fused=model_cfg.get("fused", "auto"))
    init_record = InitRecord()
    if model_cfg.get("init_from") and checkpoint is None:
        report = load_pretrained(model, model_cfg["init_from"], str(model_cfg.get("init_from_format", "auto")),
                                 new_head=model_cfg.get("new_head", "auto"), class_names=info.class_names)
        log.info("%s", report.describe())
        init_record.summary = report.summary()
    elif model_cfg.get("init_from"):
        log.info("model.init_from is not read again: the resumed weights come from %s.", resume_path)
    if trainer_cfg.get("sync_bn"):
        if world_size > 1:
            model = convert_sync_batchnorm(model, device)
        else:
            log.info("trainer.sync_bn=true has no effect in a run of one process.")
    frozen_norms = freeze_(model, str(model_cfg.get("freeze", "none")))
    if model_cfg.get("freeze", "none") != "none":
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log.info("model.freeze=%s: %.2fM of %.2fM parameters train%s.", model_cfg["freeze"], trainable / 1e6,
                 sum(p.numel() for p in model.parameters()) / 1e6,
                 "; the frozen BatchNorm layers keep their running statistics" if model_cfg.get("freeze_bn_stats", True)
                 else "; the frozen BatchNorm layers still update their running statistics")
    with torch.device("meta"):
        complexity = measure(build_model(spec), (3, *info.image_size))

    # data.batch_size is per process (per GPU); the lr scaling rule sees the global batch.
    per_process_batch = int(data_cfg["batch_size"]) * int(trainer_cfg["accumulate"])
    batch_size = per_process_batch * world_size
    lr = float(optim_cfg["lr"])
    if optim_cfg.get("reference_batch_size"):
        lr = lr * batch_size / float(optim_cfg["reference_batch_size"])
    optim_options = {k: v for k, v in optim_cfg.items() if k not in ("name", "lr", "reference_batch_size")}
    optimizer = build_optimizer(model, optim_cfg["name"], lr, device=device, **optim_options)
    if optim_cfg.get("layer_decay") is not None:
        scales = sorted({round(group["lr_scale"], 6) for group in optimizer.param_groups})
        log.info("optim.layer_decay=%s: %d layers, lr x %.3g (stem) .. x 1 (last block).",
                 optim_cfg["layer_decay"], len(scales), scales[0])
    if float(optim_cfg.get("head_lr_scale", 1.0)) != 1.0:
        log.info("optim.head_lr_scale=%s: the classifier trains at lr x %s.", optim_cfg["head_lr_scale"],
                 optim_cfg["head_lr_scale"])
    if distributed.is_main:  # rank 0 writes the checkpoints; refuse now rather than after an epoch
        check_room_for_checkpoints(run_dir / "checkpoints", checkpoint_size_estimate(
            model, optimizer, weight_copies=2 if trainer_cfg.get("ema_decay") else 1))
    settings_keys = {f.name for f in fields(TrainerSettings)}
    settings = TrainerSettings(**{k: v for k, v in trainer_cfg.items() if k in settings_keys})
    settings.precision = precision
    sched_options = {k: v for k, v in config["sched"].items() if k != "name"}
    schedule = partial(build_scheduler, optimizer, config["sched"]["name"], settings.epochs, **sched_options)

    hooks = [init_record]
    if frozen_norms and model_cfg.get("freeze_bn_stats", True):
        hooks.append(FrozenNormsInEval(frozen_norms))
    loggers = configured_loggers(config, spec, info.name) if distributed.is_main else None  # rank 0 logs
    every = int(trainer_cfg.get("attention_maps_every", 0) or 0)
    if every and loggers is not None and loggers.takes_images and has_attention_maps(model):
        hooks.append(AttentionImages(fixed_images(loaders.val, int(trainer_cfg.get("attention_maps_images", 8))),
                                     every))
    hooks += configured_callbacks(config.get("callbacks"))
    input_info = {"mean": list(info.mean), "std": list(info.std), "image_size": list(info.image_size),
                  "class_names": [str(name) for name in info.class_names]}
    objective = Objective(settings.loss, settings.label_smoothing, settings.bce_target_threshold,
                          batch_mix(config.get("aug") or {}, info.num_classes, seed))
    trainer = Trainer(model, optimizer, schedule, loaders.train, loaders.val, settings, run_dir, device,
                      objective=objective,
                      config=config, model_spec=spec, loggers=loggers,
                      test_loader=loaders.test, callbacks=hooks, input_info=input_info, distributed=distributed)
    if checkpoint is not None:
        trainer.load_state_dict(checkpoint, source=str(resume_path))
    if stop is not None:  # Ctrl-C (one process) and the stop signals (data-parallel runs too: the ranks agree)
        trainer.stop_request = stop
    held_out = f", {info.val_split_size} held out for validation" if loaders.test is not None else ""
    batch_note = (f"global batch {batch_size} = {world_size} processes x {per_process_batch}"
                  if world_size > 1 else f"batch {batch_size}")
    log.info("Model %s: %.2fM params, %.3f GFLOPs at %dx%d; data %s (%d train%s / %d %s, %d classes); device %s, "
             "precision %s; lr %.4g (%s)", describe_spec(spec), complexity.params_m, complexity.gflops,
             *info.image_size, info.name, info.train_size, held_out, info.val_size,
             "test" if loaders.test is not None else "val", info.num_classes, device_name(device), precision, lr,
             batch_note)
    if distributed.is_main:
        log.info("%s", describe_recipe(config))
        for warning in short_run_warnings(config):
            log.warning("%s", warning)
    summary = trainer.fit()
    final, best = summary["final"], summary["best"]
    acc5 = "n/a" if final["acc5"] is None else f"{final['acc5']:.2f}%"
    compiled = f", compile {summary['compile_seconds']:.0f} s" if summary["compile_seconds"] else ""
    log.info("Done: final %s top-1 %.2f%% (top-5 %s), best %s top-1 %.2f%% at epoch %d, measured on %s; "
             "%.0f img/s%s.", "test" if loaders.test is not None else "val", final["acc1"], acc5,
             "held-out val" if loaders.test is not None else "val", best["acc1"], best["epoch"], measured_on(config),
             summary["images_per_sec"], compiled)
    results = {
        "model": spec,
        "data": {"name": info.name, "num_classes": info.num_classes, "train_size": info.train_size,
                 "val_size": info.val_size, "val_split_size": info.val_split_size,
                 "image_size": list(info.image_size)},
        "final": _with_errors(final),
        "best": {**best, "err1": 100 - best["acc1"]},
        "params": complexity.params,
        "params_m": complexity.params_m,
        "gflops": complexity.gflops,
        "epochs": summary["epochs_completed"],
        "global_step": summary["global_step"],
        "train_seconds": summary["train_seconds"],
        "images_per_sec": summary["images_per_sec"],
        "compile_seconds": summary["compile_seconds"],
        "device": device_name(device),
        "precision": precision,
        "eval_precision": settings.eval_precision,
        "world_size": world_size,
        "batch_size_per_process": per_process_batch,
        "global_batch_size": batch_size,
        "lr": lr,
        "sync_bn": bool(trainer_cfg.get("sync_bn")) and world_size > 1,
        # How the reported metrics were computed: the weight average's, and with which TTA views.
        "ema_decay": settings.ema_decay,
        "tta": settings.tta,
        "loss": settings.loss,
        "history": summary["history"],
    }
    if summary.get("final_val") is not None:
        results["final_val"] = _with_errors(summary["final_val"])
    if init_record.summary is not None:
        results["init_from"] = init_record.summary
    if resume_changes:
        results["resume_changes"] = resume_changes
    return results


def _with_errors(metrics: dict) -> dict:
    acc5 = metrics.get("acc5")
    return {**metrics, "err1": 100 - metrics["acc1"], "err5": None if acc5 is None else 100 - acc5}


# -------------------------------------------------------------------- evaluate
def _evaluation_data(cfg: DictConfig, checkpoint: dict | None, exported: ModelInfo | None = None) -> dict:
    """The data settings: the checkpoint's, with every non-null ``data.*`` given here on top.

    Naming another data set (``data=cifar100``) replaces the checkpoint's settings instead. A stem given
    in either spelling (``data.stem``, or the older ``data.network_type``) replaces the checkpoint's.
    An exported weights file (``exported``) records the model's input, not the data: the data set is
    named here, and the file's normalisation, input size and stem fill what is not given.
    """
    given = {k: v for k, v in (OmegaConf.to_container(cfg.data, resolve=True) or {}).items() if v is not None} \
        if cfg.get("data") is not None else {}
    if "network_type" in given:
        given["stem"] = data_stem(given)
        del given["network_type"]
    if exported is not None:
        return _exported_data(given, exported, str(cfg.checkpoint))
    if checkpoint is None:
        return given
    saved = normalize_data_config(checkpoint["config"]["data"])
    if given.get("name") not in (None, saved.get("name")):
        return given
    return {**saved, **given}


def _exported_data(given: dict, exported: ModelInfo, source: str) -> dict:
    """The data settings for an exported weights file: those given, and the file's record of the model's input
    (normalisation, input size, stem) where they say nothing."""
    if not given.get("name"):
        raise ConfigError(f"{source} is an exported weights file: it holds the model and the normalisation of its "
                          f"input, not the data settings of its run. Name the data set to evaluate on, e.g. "
                          f"data=cifar10 data.root=/path/to/data (with data.classes=... if the run used some).")
    recorded = {"mean": list(exported.mean), "std": list(exported.std), "image_size": list(exported.image_size),
                "stem": stem_of(exported.model_spec.get("network_type"))}
    if given.get("image_size") is not None and tuple(exported.image_size) != _pair(given["image_size"]):
        log.warning("Evaluating at data.image_size=%s, while %s records %dx%d inputs (the size it was trained at): "
                    "add data.image_size=%d to evaluate it as trained.", given["image_size"], source,
                    *exported.image_size, exported.image_size[0])
    return {**{key: value for key, value in recorded.items() if value is not None}, **given}


def _pair(size) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[-1]))


def _checkpoint_weights(checkpoint: dict, weights: str, source: str) -> dict:
    """The state dict to evaluate: the trained weights, or (``weights=ema``) the run's weight average."""
    if weights == "model":
        return checkpoint["model"]
    average = (checkpoint.get("callbacks") or {}).get("ema")
    if average is None:
        raise ConfigError(f"weights=ema, but {source} holds no weight average: its run was trained without "
                          f"trainer.ema_decay. Evaluate its trained weights with weights=model, or train with "
                          f"trainer.ema_decay=0.999 (say) to keep an average.")
    return average["weights"]


def evaluate(cfg: DictConfig, run_dir: str | os.PathLike, job: dict | None = None,
             group_choices: dict | None = None, conf_dir: Path | None = None) -> dict:
    """Evaluate a checkpoint (ours or the authors') on the val split only; write eval.json."""
    validate_evaluate_config(cfg, group_choices, conf_dir)
    fmt = cfg.checkpoint_format
    device = resolve_device(str(cfg.device), purpose="evaluation")
    weights = str(cfg.get("weights", "model"))
    exported = None
    if fmt == "ours" and is_safetensors(str(cfg.checkpoint)):  # an export: the model as predict.py loads it
        if weights == "ema":
            raise ConfigError(f"weights=ema reads a training checkpoint's weight average; {cfg.checkpoint} is an "
                              f"exported file, which holds the one set of weights chosen at export (export.py "
                              f"--weights). Evaluate it with weights=model.")
        model, exported = load_checkpoint(str(cfg.checkpoint))
        spec = dict(exported.model_spec)
    checkpoint = load_training_checkpoint(cfg.checkpoint) if fmt == "ours" and exported is None else None
    if checkpoint is not None:  # the model first: a block whose package is missing stops before any data is read
        spec = dict(checkpoint["model_spec"])
        model = build_model(spec, fused=cfg.model.get("fused", "auto"))
        model.load_state_dict(_checkpoint_weights(checkpoint, weights, str(cfg.checkpoint)))
    data_cfg = _evaluation_data(cfg, checkpoint, exported)
    val_loader, info = make_eval_loader(data_cfg, int(cfg.get("seed", 0)), device,
                                        channels_last=bool(cfg.channels_last))
    if fmt == "official":
        spec = model_spec(OmegaConf.to_container(cfg.model, resolve=True), data_stem(data_cfg),
                          info.num_classes)
        model = load_official(build_model(spec, fused=cfg.model.get("fused", "auto")), cfg.checkpoint)
    if spec["num_classes"] != info.num_classes:
        raise ConfigError(f"The checkpoint's model has {spec['num_classes']} classes but data {info.name!r} has "
                          f"{info.num_classes}; evaluate it on the data set it was trained for.")
    precision = resolve_precision(cfg.precision, device)
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    started = time.time()
    tta = str(cfg.get("tta", "none"))
    metrics = evaluate_model(model, val_loader, device, precision, bool(cfg.channels_last),
                             progress=ProgressReporter(), tta=tta)
    with torch.device("meta"):
        complexity = measure(build_model(spec), (3, *info.image_size))
    acc5 = metrics["acc5"]
    result = {
        "checkpoint": str(cfg.checkpoint),
        "checkpoint_format": fmt,
        "model": spec,
        "data": {"name": info.name, "root": data_cfg.get("root"), "val_size": info.val_size,
                 "num_classes": info.num_classes},
        "acc1": metrics["acc1"], "acc5": acc5, "err1": 100 - metrics["acc1"],
        "err5": None if acc5 is None else 100 - acc5, "loss": metrics["loss"], "images": metrics["images"],
        "params": complexity.params, "gflops": complexity.gflops,
        "device": device_name(device), "precision": precision, "seconds": time.time() - started,
        "tta": tta, "weights": weights,
        **environment(),
    }
    if checkpoint is not None:
        result["trained_epochs"] = checkpoint["epoch"]
    write_json_atomic(Path(run_dir) / "eval.json", result)
    top5 = "n/a" if acc5 is None else f"{acc5:.2f}%"
    print(f"{info.name} val: top-1 {result['acc1']:.2f}% (err {result['err1']:.2f}), top-5 {top5} "
          f"on {metrics['images']} images ({weights} weights, tta {tta}) -> {Path(run_dir) / 'eval.json'}")
    return result
