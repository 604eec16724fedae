"""A callback for tests of time limits: the first attempt of a run (one that starts at step 0) waits after each
optimizer step, so that it cannot finish before its launcher's signal; a resumed attempt runs at full speed."""

from __future__ import annotations

import time

from attn_resnet import Callback


class SlowFirstAttempt(Callback):
    name = "slow_first_attempt"

    def __init__(self, seconds_per_step: float = 0.4) -> None:
        self.seconds_per_step = float(seconds_per_step)
        self.slow = False

    def on_train_start(self, trainer) -> None:
        self.slow = trainer.global_step == 0

    def on_optimizer_step(self, trainer) -> None:
        if self.slow:
            time.sleep(self.seconds_per_step)
