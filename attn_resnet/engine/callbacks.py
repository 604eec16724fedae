"""Callbacks: the points where a feature hooks into the training loop without the loop knowing it.

The shape follows Lightning's ``Callback``: each hook receives the trainer, and a callback that
keeps state across a resume returns it from ``state_dict`` (the checkpointer stores it under the
callback's ``name`` and hands it back through ``load_state_dict``). The hooks are called in this
order, all on every rank of a data-parallel run:

- ``setup(trainer)``: once, when the trainer is built (model on its device, before a resume
  loads any state);
- ``on_train_start(trainer)``: at the start of ``fit``, after a resume;
- ``on_train_epoch_start(trainer, epoch)``: after the model is put in training mode for the
  (0-based) ``epoch``, also when a resume continues that epoch part-way;
- ``on_after_backward(trainer)``: after the backward that ends an accumulation group, before
  gradient clipping and the optimizer step (the gradients are the group's, still scaled under
  fp16);
- ``on_optimizer_step(trainer)``: after each optimizer step and the schedule's step
  (``trainer.global_step`` already counts it);
- ``on_eval_start(trainer)`` / ``on_eval_end(trainer)``: around each validation phase (the val
  and test passes of one epoch), e.g. to swap other weights in and back out;
- ``on_epoch_end(trainer, epoch, record)``: after the (1-based) ``epoch`` is recorded, before its
  checkpoints are written; ``record`` is the epoch's history row, which a callback may extend.

A step-level hook must not read device values on the host: the loop never waits for the GPU
between log points, and a hook that did would make every step wait.

Writing one's own is one file::

    class PrintLr(Callback):
        name = "print_lr"

        def on_epoch_end(self, trainer, epoch, record):
            print(epoch, trainer.current_lr())

and ``Trainer(..., callbacks=[PrintLr()])``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["Callback", "CallbackList"]


class Callback:
    """Base class: every hook does nothing; override the ones a feature needs.

    ``name`` keys the callback's state in a checkpoint; two callbacks of one trainer must not
    share it.
    """

    name: str = "callback"

    def setup(self, trainer: Trainer) -> None:
        pass

    def on_train_start(self, trainer: Trainer) -> None:
        pass

    def on_train_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        pass

    def on_after_backward(self, trainer: Trainer) -> None:
        pass

    def on_optimizer_step(self, trainer: Trainer) -> None:
        pass

    def on_eval_start(self, trainer: Trainer) -> None:
        pass

    def on_eval_end(self, trainer: Trainer) -> None:
        pass

    def on_epoch_end(self, trainer: Trainer, epoch: int, record: dict) -> None:
        pass

    def state_dict(self) -> dict[str, Any] | None:
        """What a resume needs to continue exactly; None for a callback without state."""
        return None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore from ``state_dict``'s result, or from None: a checkpoint written without this callback."""


class CallbackList:
    """The trainer's callbacks, called in order; collects and restores their states by name."""

    def __init__(self, callbacks: Iterable[Callback] = ()) -> None:
        self.callbacks: list[Callback] = list(callbacks)
        names = [callback.name for callback in self.callbacks]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"Two callbacks share the name {repeated[0]!r}; each needs its own (it keys its "
                             f"state in checkpoints).")

    def __iter__(self):
        return iter(self.callbacks)

    def __len__(self) -> int:
        return len(self.callbacks)

    def call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(*args)

    def state_dict(self) -> dict[str, dict[str, Any]]:
        states = {}
        for callback in self.callbacks:
            state = callback.state_dict()
            if state is not None:
                states[callback.name] = state
        return states

    def load_state_dict(self, states: dict[str, Any] | None) -> None:
        states = states or {}
        for callback in self.callbacks:
            callback.load_state_dict(states.get(callback.name))

    def names(self) -> Sequence[str]:
        return [callback.name for callback in self.callbacks]
