"""Fine-tuning callbacks: frozen BatchNorm layers kept in eval mode, and the record of the start weights."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from .callbacks import Callback

if TYPE_CHECKING:
    from .trainer import Trainer


class FrozenNormsInEval(Callback):
    """Puts the given BatchNorm layers back in eval mode each time the model enters training mode.

    Their weights are frozen elsewhere (``requires_grad=False``); in eval mode they also normalise
    with the pretrained running statistics and leave them unchanged, so the frozen part computes
    exactly what it computed before fine-tuning.
    """

    name = "frozen_norms"

    def __init__(self, norms: list[nn.Module]) -> None:
        self.norms = list(norms)

    def on_train_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        for norm in self.norms:
            norm.eval()


class InitRecord(Callback):
    """Keeps the summary of the weights a run started from (``model.init_from``) across resumes.

    The summary is written once, when the run starts from the file; a resumed run reads its weights
    from its own checkpoint, and gets the summary back from it for its results.
    """

    name = "init_from"

    def __init__(self, summary: dict[str, Any] | None = None) -> None:
        self.summary = summary

    def state_dict(self) -> dict[str, Any] | None:
        return self.summary

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if state is not None:
            self.summary = state
