"""A Hydra callback that checks a run before Hydra makes its folder: config, run folder, lock.

Registered in ``conf/train.yaml`` and ``conf/evaluate.yaml`` under ``hydra.callbacks``.
For a single run, a bad or unknown key, a run folder that cannot be made or written, or
a folder that another live process is training in stops the command with one paragraph
on stderr and exit status 1 -- before torch is imported and before any folder is made.
In a ``--multirun`` sweep each job is still checked by the task function, so a bad job
is recorded as failed in its own folder while the others run; the sweep's folder is printed
when it starts and again when it ends.
"""

from __future__ import annotations

import atexit
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ..distributed_env import process_env
from .validate import ConfigError, conf_dir_of, validate_evaluate_config, validate_train_config


def group_choices(hydra_cfg: Any) -> dict[str, str]:
    """Hydra's record of which option each config group took (``{"data": "cifar10", ...}``)."""
    try:
        return {str(k): v for k, v in OmegaConf.to_container(hydra_cfg.runtime.choices).items() if v is not None}
    except Exception:  # noqa: BLE001 - no runtime record (composed without Hydra's app)
        return {}


def validate(config: DictConfig, config_name: str, hydra_cfg: Any) -> None:
    """Validate the task part of ``config`` for the entry point ``config_name`` (train or evaluate)."""
    task = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"]) if "hydra" in config else config
    choices, conf_dir = group_choices(hydra_cfg), conf_dir_of(hydra_cfg)
    if config_name == "evaluate":
        validate_evaluate_config(task, choices, conf_dir)
    else:
        validate_train_config(task, choices, conf_dir)


def check_run_folder(folder: Path, *, locked_by_training: bool) -> None:
    """RunFolderError when ``folder`` could not be made or written, or another live run holds it.

    Creates nothing that does not exist yet: Hydra makes the folder once the checks pass.
    """
    import errno
    import os

    from ..runfiles import RunLock, describe_os_error

    folder = folder.absolute()
    for part in (*reversed(folder.parents), folder):
        if part.exists() and not part.is_dir():
            raise describe_os_error(OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(part)), folder,
                                    "create the run folder")
    nearest = next(p for p in (folder, *folder.parents) if p.is_dir())
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise describe_os_error(OSError(errno.EACCES, os.strerror(errno.EACCES), str(nearest)), folder,
                                "create the run folder")
    if locked_by_training and folder.is_dir():
        RunLock(folder).acquire().release()  # RunFolderBusyError, naming the holder, when a live run has it


def _sweep_summary(folder: Path) -> None:
    """The sweep folder again, with how its jobs ended (from their results.json) and how to tabulate them."""
    import json

    statuses: dict[str, int] = {}
    for path in sorted(folder.glob("*/results.json")):
        try:
            status = str(json.loads(path.read_text()).get("status", "unknown"))
        except (OSError, ValueError):
            status = "unreadable"
        statuses[status] = statuses.get(status, 0) + 1
    counted = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items())) or "no results.json yet"
    print(f"Sweep folder: {folder} ({counted}); its table: python scripts/paper_table.py {folder}",
          file=sys.stderr, flush=True)


def _stop(error: BaseException) -> None:
    print(f"Error: {error}", file=sys.stderr, flush=True)
    sys.exit(1)


class Preflight(Callback):
    """Fail fast, with the project's one-paragraph errors, before a run folder exists."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from ..runfiles import RunFolderError

        config_name = str(kwargs.get("config_name") or "train")
        try:
            validate(config, config_name, config.hydra)
            folder = Path(str(config.hydra.run.dir))
            # Under torchrun, rank 0 holds the run's lock: the other ranks share its folder.
            check_run_folder(folder, locked_by_training=config_name != "evaluate" and process_env().is_main)
        except (ConfigError, RunFolderError) as error:
            _stop(error)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from ..runfiles import RunFolderError

        folder = Path(str(config.hydra.sweep.dir))
        try:
            check_run_folder(folder, locked_by_training=False)
        except RunFolderError as error:
            _stop(error)
        # A sweep's folder is named by its start time: say which one it is, at the start and at the end.
        # Hydra calls on_multirun_end only when every job succeeded (a failed job's error ends the
        # sweep with an exception), so the closing line is written at exit, whatever the outcome.
        print(f"Sweep folder: {folder}", file=sys.stderr, flush=True)
        atexit.register(_sweep_summary, folder)
