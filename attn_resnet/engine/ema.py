"""An exponential moving average of the weights, evaluated and checkpointed beside the model.

After every optimizer step ``e <- d * e + (1 - d) * w`` for every parameter and every floating
point buffer (BatchNorm's running mean and variance are averaged like the weights, as
torchvision's reference recipe does with ``AveragedModel(use_buffers=True)``; integer buffers,
BatchNorm's batch counter, are copied). The average starts as a copy of the weights the run
starts (or resumes without an average) from. With ``warmup`` the decay of update ``t``
(0-based) is ``min(d, (1 + t) / (10 + t))``, TensorFlow's ``ExponentialMovingAverage``
``num_updates`` rule: early updates follow the fast-moving weights more closely, so that a short
run's average does not keep much of the random initialisation.

The averaged copy is a ``torch.optim.swa_utils.AveragedModel`` (its ``module`` holds it, and
``swa_utils.update_bn`` works on it). Its update is done here rather than by
``AveragedModel.update_parameters``, which compares its step counter on the host with one kept
beside the weights, a wait for the GPU after every step; here the counter and the decay live on
the host, and one fused ``_foreach_lerp_`` updates the weights.

During validation the averaged weights are swapped into the model (``on_eval_start``) and the
trained ones back (``on_eval_end``): the val/test metrics, and so ``best.pt``'s choice, are
those of the average. Checkpoints hold the trained weights under ``model`` and the average
under ``callbacks.ema.weights``; ``evaluate.py weights=ema`` evaluates the latter.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from .callbacks import Callback

if TYPE_CHECKING:
    from .trainer import Trainer

log = logging.getLogger(__name__)

__all__ = ["WeightAverage", "ema_decay_at"]


def ema_decay_at(decay: float, update: int, warmup: bool) -> float:
    """The decay of the 0-based ``update``: ``decay``, or with ``warmup`` ``min(decay, (1 + t) / (10 + t))``."""
    return min(decay, (1 + update) / (10 + update)) if warmup else decay


def _tensors(module: nn.Module) -> list[torch.Tensor]:
    return [*module.parameters(), *module.buffers()]


class WeightAverage(Callback):
    """``trainer.ema_decay`` / ``trainer.ema_warmup``: the EMA of the weights, swapped in for evaluation."""

    name = "ema"

    def __init__(self, decay: float, warmup: bool = False) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"trainer.ema_decay={decay!r} is not valid: it must be in (0, 1), or 0 for no average.")
        self.decay, self.warmup = float(decay), bool(warmup)
        self.average: AveragedModel | None = None
        self.updates = 0
        self._saved: list[torch.Tensor] | None = None
        self._model: nn.Module | None = None
        self._pairs_of_model: tuple | None = None  # the trained model's tensor pairs, listed once

    @property
    def module(self) -> nn.Module:
        """The averaged network (an ``nn.Module`` of the trained model's class)."""
        if self.average is None:
            raise RuntimeError("WeightAverage.setup(trainer) has not been called yet.")
        return self.average.module

    def setup(self, trainer: Trainer) -> None:
        # AveragedModel deep-copies the model as it is now: on its device, in its memory format.
        self.average = AveragedModel(trainer.model, use_buffers=True)
        self.average.requires_grad_(False)
        self.updates = 0
        self._model = trainer.model
        # The tensors stay the same objects for the run (loading a state copies into them), so the
        # per-step update need not walk both modules again.
        self._pairs_of_model = self._pairs(trainer.model)

    @torch.no_grad()
    def restart(self) -> None:
        """The average becomes a copy of the model's current weights, with no updates counted."""
        for target, source in zip(_tensors(self.module), _tensors(self._model), strict=True):
            target.copy_(source)
        self.updates = 0
        self.average.n_averaged.fill_(0)

    def _pairs(self, model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor], list[tuple]]:
        floats_average, floats_model, others = [], [], []
        for averaged, current in zip(_tensors(self.module), _tensors(model), strict=True):
            if averaged.is_floating_point():
                floats_average.append(averaged.detach())
                floats_model.append(current.detach())
            else:
                others.append((averaged, current))
        return floats_average, floats_model, others

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards ``model``'s weights; nothing is read back from the device."""
        decay = ema_decay_at(self.decay, self.updates, self.warmup)
        averaged, current, others = self._pairs_of_model if model is self._model else self._pairs(model)
        if averaged:
            torch._foreach_lerp_(averaged, current, 1.0 - decay)
        for target, source in others:
            target.copy_(source)
        self.updates += 1
        self.average.n_averaged.fill_(self.updates)  # a CPU tensor: kept for swa_utils' sake, no device sync

    def on_optimizer_step(self, trainer: Trainer) -> None:
        self.update(trainer.model)

    @torch.no_grad()
    def on_eval_start(self, trainer: Trainer) -> None:
        tensors = _tensors(trainer.model)
        self._saved = [tensor.detach().clone() for tensor in tensors]
        for tensor, averaged in zip(tensors, _tensors(self.module), strict=True):
            tensor.detach().copy_(averaged)

    @torch.no_grad()
    def on_eval_end(self, trainer: Trainer) -> None:
        if self._saved is None:
            return
        for tensor, saved in zip(_tensors(trainer.model), self._saved, strict=True):
            tensor.detach().copy_(saved)
        self._saved = None

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.module.state_dict(), "updates": self.updates, "decay": self.decay,
                "warmup": self.warmup}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if state is None:
            # A checkpoint written without an average: it starts from the weights being resumed.
            log.info("The checkpoint holds no weight average: the EMA starts from the resumed weights.")
            self.restart()
            return
        self.module.load_state_dict(state["weights"])
        self.updates = int(state["updates"])
        self.average.n_averaged.fill_(self.updates)

