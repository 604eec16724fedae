"""Shared behaviour of the Hydra entry points: clean one-paragraph errors, sweep-friendly failures."""

from __future__ import annotations

import logging
import sys
from typing import Any, Callable

log = logging.getLogger("attn_resnet")


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by input (config, data, checkpoints, diverging runs): no traceback needed."""
    from .engine.trainer import NonFiniteLossError

    return (ValueError, FileNotFoundError, NonFiniteLossError)


def run_entry_point(function: Callable[..., dict], cfg: Any, hydra_cfg: Any) -> dict | None:
    """Call ``function(cfg, run_dir, job=...)`` with the Hydra job number and command-line overrides.

    A user error is logged as one paragraph. A single run then exits with status 1 and no
    traceback; in a ``--multirun`` sweep the error is re-raised so Hydra records this job as
    failed, runs the remaining jobs, and exits non-zero at the end.
    """
    from hydra.types import RunMode

    job = {"num": hydra_cfg.job.num if hydra_cfg.mode == RunMode.MULTIRUN else None,
           "overrides": list(hydra_cfg.overrides.task)}
    try:
        return function(cfg, hydra_cfg.runtime.output_dir, job=job)
    except user_errors() as error:
        log.error("%s", error)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise
        sys.exit(1)
