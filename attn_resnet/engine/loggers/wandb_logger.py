"""Weights & Biases: offline run files in the run folder by default (``wandb sync`` uploads them)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from .base import Logger, RunInfo

log = logging.getLogger(__name__)


class WandbLogger(Logger):
    """One W&B run per run folder, its id kept for a resume.

    ``mode``: offline (the default: nothing leaves the machine; ``wandb sync`` uploads later),
    online (needs ``wandb login``) or disabled. ``save_dir``: where W&B writes its ``wandb/``
    folder (null: the run folder). ``group``: null groups the runs by the run's name, so the
    seeds of one configuration sit together. ``log_checkpoint``: also log
    ``checkpoints/best.pt`` (else ``last.pt``) as a model artifact when the run completes.
    The run's tags: ``block=...``, ``depth=...``, ``dataset=...``, ``seed=...``.

    Every row carries ``epoch``, the x-axis of every chart (``define_metric``), so that a resumed
    run's rows need not follow W&B's own step counter. W&B writes its run file in the background
    (every 15 s by default), so a killed attempt may have lost its last epochs: a resumed run logs
    the epochs its checkpoint holds again (the same values; an epoch W&B had kept shows twice).
    """

    name = "wandb"
    requires = ("wandb", "wandb")
    takes_images = True

    def __init__(self, project: str = "attn-resnet", entity: str | None = None, mode: str = "offline",
                 save_dir: str | None = None, group: str | None = None, log_checkpoint: bool = False) -> None:
        if mode not in ("offline", "online", "disabled"):
            raise ValueError(f"logger.wandb.mode={mode!r} is not valid. Valid choices: offline, online, disabled.")
        self.project, self.entity, self.mode = project, entity, mode
        self.save_dir, self.group, self.log_checkpoint = save_dir, group, log_checkpoint
        self.run = None
        self.run_id: str | None = None
        self.run_dir: Path | None = None

    def start(self, run: RunInfo, state: dict | None) -> None:
        import wandb

        self.run_dir = run.run_dir
        folder = Path(self.save_dir) if self.save_dir else run.run_dir
        folder.mkdir(parents=True, exist_ok=True)
        # The run's own train.log keeps the console; W&B keeps its system metrics (GPU use...).
        settings = wandb.Settings(console="off", save_code=False, silent=True)
        self.run = wandb.init(project=self.project, entity=self.entity, mode=self.mode, dir=str(folder),
                              id=(state or {}).get("id"), resume="allow", name=run.label, group=self.group or run.name,
                              tags=[f"{key}={value}"[:64] for key, value in run.tags.items()], settings=settings)
        self.run_id = self.run.id
        self.run.define_metric("epoch")
        self.run.define_metric("*", step_metric="epoch")
        for step, scalars in run.history:
            self.log_metrics(scalars, step)
        log.info("W&B: run %s (%s) in %s.", self.run_id, self.mode, folder / "wandb")

    def state_dict(self) -> dict[str, Any] | None:
        return {"id": self.run_id} if self.run_id else None

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        self.run.config.update(dict(params), allow_val_change=True)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.run.log({**metrics, "epoch": int(step)})

    def log_images(self, tag: str, images, step: int) -> None:
        import wandb

        self.run.log({tag: [wandb.Image(image.clamp(0, 1).float().cpu()) for image in images], "epoch": int(step)})

    def log_histogram(self, tag: str, values, step: int) -> None:
        import torch
        import wandb

        values = torch.as_tensor(values).detach().float().flatten()
        finite = values[torch.isfinite(values)]
        if finite.numel():
            self.run.log({tag: wandb.Histogram(finite.cpu().numpy()), "epoch": int(step)})

    def log_summary(self, metrics: Mapping[str, float], step: int) -> None:
        import wandb

        self.run.summary.update(dict(metrics))
        if self.log_checkpoint:
            checkpoints = self.run_dir / "checkpoints"
            path = next((p for p in (checkpoints / "best.pt", checkpoints / "last.pt") if p.is_file()), None)
            if path is not None:
                artifact = wandb.Artifact(f"model-{self.run_id}", type="model")
                artifact.add_file(str(path))
                self.run.log_artifact(artifact)

    def finish(self, status: str) -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if status == "completed" else 1)
            self.run = None
