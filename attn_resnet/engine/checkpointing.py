"""What a training checkpoint holds, and the checks around writing and reading one.

A checkpoint is never written from non-finite weights: before each write the trainer reads its
loss watch together with one fused finiteness reduction over all parameters and buffers, in a
single device-to-host copy, and ``Checkpointer.save`` refuses if either went bad.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .. import __version__
from ..dataset_registry import stem_of
from ..models.official import CheckpointError
from ..runfiles import check_room, megabytes
from .checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, rng_state, save_atomic, set_rng_state
from .metrics import MeterReading, TrainingMeters

if TYPE_CHECKING:
    from .trainer import Trainer

log = logging.getLogger(__name__)

# Loop counters saved and restored as they are.
COUNTERS = ("epoch", "batch_in_epoch", "global_step", "best_acc1", "best_epoch", "history")
# checkpoint["kind"]: "training" (last.pt: everything a resume needs) or "weights" (best.pt: the
# weights, the weight average and what describes them; no optimizer, schedule or RNG state).
TRAINING, WEIGHTS = "training", "weights"
WEIGHTS_ONLY_FILES = ("best.pt",)


class NonFiniteLossError(RuntimeError):
    """The loss or the weights became NaN or infinite; training stopped without overwriting good checkpoints."""


def nonfinite_loss_error(loss: float, epoch: int, batch: int, step: int, found_batch: int, found_step: int,
                         tolerated: int, last_good: str | None) -> NonFiniteLossError:
    """The error for a non-finite ``loss`` at ``batch`` (0-based, as ``epoch``; ``step`` optimizer steps done
    before it), found by the read after ``found_batch`` batches and ``found_step`` steps. ``tolerated``: the
    consecutive non-finite losses allowed (fp16), 0 otherwise.
    """
    what = (f"stayed NaN/inf for more than trainer.max_nonfinite_skips={tolerated} steps in a row (the grad "
            f"scaler skipped those) and was {loss}" if tolerated else f"became {loss}")
    batches = f"batches {batch + 1}-{found_batch}" if found_batch > batch + 1 else f"batch {batch + 1}"
    return NonFiniteLossError(
        f"The training loss {what} at epoch {epoch + 1}, batch {batch + 1} (optimizer step {step}). Losses are "
        f"checked on the device and read at log points and checkpoints; the read after batch {found_batch} "
        f"(step {found_step}) found it, so it happened between optimizer step {step} and {found_step} "
        f"(epoch {epoch + 1}, {batches}) and the weights of those steps are discarded: training stopped without "
        f"writing a checkpoint from them. The last good checkpoint is "
        f"{last_good or 'none (no checkpoint was written yet)'}. Try a lower optim.lr, gradient clipping "
        f"(trainer.grad_clip=1.0), a longer warmup (sched.warmup_epochs), or trainer.precision=bf16/32 instead "
        f"of fp16."
    )


def _checked_tensors(model: nn.Module) -> list[torch.Tensor]:
    """Parameters and floating-point buffers (BatchNorm running statistics go bad as well)."""
    tensors = [p.detach() for p in model.parameters()]
    return tensors + [b for b in model.buffers() if b.is_floating_point()]


def all_finite(model: nn.Module) -> torch.Tensor:
    """A 0-d bool tensor, on the model's device: True when every parameter and float buffer is finite.

    One multi-tensor norm over all of them, stacked and reduced into one value: no host sync here,
    and one element to read. An L2 norm can overflow for huge finite values; ``nonfinite_names``
    settles such a (rare) False exactly.
    """
    tensors = _checked_tensors(model)
    if not tensors:
        return torch.ones((), dtype=torch.bool)
    norms = torch._foreach_norm(tensors)
    return torch.stack([norm.float() for norm in norms]).isfinite().all()


def nonfinite_names(model: nn.Module) -> list[str]:
    """Names of the parameters and float buffers holding NaN/inf (one sync per tensor: call on failure only)."""
    named = list(model.named_parameters()) + [(n, b) for n, b in model.named_buffers() if b.is_floating_point()]
    return [name for name, tensor in named if not bool(torch.isfinite(tensor).all())]


def checkpoint_size_estimate(model: nn.Module, optimizer: torch.optim.Optimizer, weight_copies: int = 1) -> int:
    """About the bytes of one checkpoint, known before the first step.

    ``weight_copies`` of the model's state (2 with a weight average, which is saved beside the
    weights) plus the optimizer's per-parameter state: SGD's momentum, Adam's two moments (three
    with amsgrad), which the optimizer creates only at its first step. The rest (counters, RNG
    states, the config) is small and left out, so this is a lower bound.
    """
    model_bytes = weight_copies * sum(t.numel() * t.element_size() for t in model.state_dict().values())
    state_bytes = 0
    for group in optimizer.param_groups:
        if isinstance(optimizer, torch.optim.SGD):
            group_slots = 1 if group.get("momentum", 0) else 0
        elif isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
            group_slots = 3 if group.get("amsgrad") else 2
        else:  # LAMB keeps two moments, Lion one: counted as two, a bound from above for Lion
            group_slots = 2
        state_bytes += group_slots * sum(p.numel() * p.element_size() for p in group["params"] if p.requires_grad)
    return model_bytes + state_bytes


def check_resumable(checkpoint: dict, source: str) -> None:
    """Refuse to continue a run from a weights-only checkpoint (best.pt), pointing to what works."""
    if checkpoint.get("kind") == WEIGHTS:
        raise CheckpointError(
            f"Cannot resume from {source}: it holds the weights of the best epoch only (no optimizer, schedule "
            f"or random-number state), so a run cannot continue exactly from it. Resume from the run's "
            f"checkpoints/last.pt (trainer.resume=auto in its folder), or start a new run from these weights "
            f"with model.init_from={source}."
        )


def check_room_for_checkpoints(directory: str | Path, size: int) -> None:
    """Refuse before training when ``directory``'s disk cannot hold the run's checkpoints of ``size`` bytes.

    A run keeps last.pt and best.pt, and writes each through a temporary file that replaces it,
    so it needs three checkpoints' room at its peak, less what the checkpoints it will replace
    already take (a resumed run).
    """
    directory = Path(directory)
    existing = 0
    for name in ("last.pt", "best.pt"):
        try:
            existing += (directory / name).stat().st_size
        except OSError:
            pass
    check_room(directory, max(3 * size - existing, size),
               f"this run's checkpoints (last.pt and best.pt of about {megabytes(size)} each, and a temporary "
               f"copy while one is written)")


def _network_defaults(keys: set[str]) -> dict[str, Any]:
    """``ResidualNet``'s default for each of ``keys`` that is one of its keyword options."""
    import inspect

    from ..models import ResidualNet

    parameters = inspect.signature(ResidualNet).parameters
    return {key: parameters[key].default for key in keys
            if key in parameters and parameters[key].default is not inspect.Parameter.empty}


def _by_stem(spec: dict) -> dict:
    """``spec`` as a resume compares it: its ``network_type`` as the stem it builds (CIFAR10 and CIFAR100, a spec's
    name for the CIFAR stem with 100 classes, are one network, whichever the checkpoint's run recorded), and without
    the record of where an outside block lives (``att_source``: its package's version may change between attempts;
    ``att_type`` names the block)."""
    return {**{key: value for key, value in spec.items() if key != "att_source"},
            "network_type": stem_of(spec.get("network_type")) or spec.get("network_type")}


class Checkpointer:
    """Writes a trainer's state to ``directory`` and reads it back; remembers the last good checkpoint.

    The trainer is passed in (as Lightning passes it to its callbacks) so that the loop keeps
    only the loop. In a data-parallel run the trainer calls ``save`` on rank 0 only; every rank
    loads the same file.
    """

    def __init__(self, directory: str | Path, config: dict | None = None, model_spec: dict | None = None,
                 input_info: dict | None = None) -> None:
        self.directory = Path(directory)
        self.config = config or {}
        self.model_spec = model_spec or {}
        self.input_info = input_info or {}  # what the model's input is: mean, std, image_size, class_names
        self.last_good: str | None = None

    def state(self, trainer: Trainer, meters: MeterReading) -> dict[str, Any]:
        """The whole training state: weights, optimizer, schedule, scaler, counters, meters, RNGs, and the
        state of every callback that keeps one (under ``callbacks``, by callback name)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "kind": TRAINING,
            "package_version": __version__,
            "torch_version": str(torch.__version__),
            "model": trainer.model.state_dict(),
            "model_spec": self.model_spec,
            "input": self.input_info,
            "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.scheduler.state_dict(),
            "scaler": trainer.scaler.state_dict() if trainer.scaler is not None else None,
            **{key: getattr(trainer, key) for key in COUNTERS},
            **trainer.throughput.state_dict(),
            "epoch_meters": TrainingMeters.state_from(meters),
            "rng": rng_state(),
            "world_size": trainer.distributed.world_size,
            "callbacks": trainer.callbacks.state_dict(),
            "config": self.config,
        }

    def weights_state(self, trainer: Trainer) -> dict[str, Any]:
        """The weights of the model and of every callback that keeps some (the weight average), with the
        model spec, input description, counters and config: what evaluation, prediction, export and
        fine-tuning read; about half a training checkpoint, as no optimizer state is kept."""
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "kind": WEIGHTS,
            "package_version": __version__,
            "torch_version": str(torch.__version__),
            "model": trainer.model.state_dict(),
            "model_spec": self.model_spec,
            "input": self.input_info,
            **{key: getattr(trainer, key) for key in COUNTERS},
            "world_size": trainer.distributed.world_size,
            "callbacks": trainer.callbacks.state_dict(),
            "config": self.config,
        }

    def save(self, trainer: Trainer, name: str, meters: MeterReading) -> Path:
        """Write ``name`` atomically; ``meters`` was read with ``all_finite(trainer.model)`` as its extra."""
        if not meters.extra[0]:
            bad = nonfinite_names(trainer.model)
            if bad:
                raise NonFiniteLossError(
                    f"Refusing to write {name}: {bad[0]!r} holds NaN/inf values (step {trainer.global_step}). "
                    f"The last good checkpoint ({self.last_good or 'none yet'}) is kept."
                )
        path = self.directory / name
        save_atomic(self.weights_state(trainer) if name in WEIGHTS_ONLY_FILES else self.state(trainer, meters), path)
        if name == "last.pt":
            self.last_good = f"{path} ({trainer.position()}; optimizer step {trainer.global_step})"
        return path

    def load(self, trainer: Trainer, checkpoint: dict, source: str = "checkpoint") -> None:
        """Restore ``trainer`` from ``checkpoint``; refuse one written for another model, or weights alone."""
        check_resumable(checkpoint, source)
        spec = checkpoint.get("model_spec", {})
        if spec:
            # A spec written before a ResidualNet option existed meant that option's default.
            spec = {**_network_defaults(set(self.model_spec) - set(spec)), **spec}
        if self.model_spec and spec and _by_stem(spec) != _by_stem(self.model_spec):
            differing = sorted(k for k in set(spec) | set(self.model_spec)
                               if _by_stem(spec).get(k) != _by_stem(self.model_spec).get(k))
            raise CheckpointError(
                f"Cannot resume from {source}: it holds a different model "
                f"({', '.join(f'{k}={spec.get(k)!r}' for k in differing)}) than this run's "
                f"({', '.join(f'{k}={self.model_spec.get(k)!r}' for k in differing)}). Resume with the "
                f"run's original overrides, point trainer.resume at the right file, or set "
                f"trainer.resume=never (with a new run folder) to start afresh."
            )
        trainer.model.load_state_dict(checkpoint["model"])
        trainer.optimizer.load_state_dict(checkpoint["optimizer"])
        trainer.scheduler.load_state_dict(checkpoint["scheduler"])
        if trainer.scaler is not None and checkpoint.get("scaler"):
            trainer.scaler.load_state_dict(checkpoint["scaler"])
        for key in COUNTERS:
            setattr(trainer, key, checkpoint[key])
        trainer.throughput.load_state_dict(checkpoint)
        # The saved epoch meters are the whole run's sums: rank 0 carries them on, the others start
        # from zero, so that the sums over the ranks stay right.
        if trainer.distributed.is_main:
            trainer.meters.load_state_dict(checkpoint["epoch_meters"])
        else:
            trainer.meters.reset()
        trainer.callbacks.load_state_dict(checkpoint.get("callbacks"))  # absent before callbacks existed
        set_rng_state(checkpoint["rng"])
        trainer.distributed.check_same(trainer.global_step, f"the optimizer step resumed from {source}")
        self.last_good = f"{source} ({trainer.position()}; optimizer step {trainer.global_step})"
        log.info("Resumed from %s: %s (optimizer step %d).", source, trainer.position(), trainer.global_step)
