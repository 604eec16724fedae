"""The attempts of a run: every start in the same run folder (first start, torchrun restart, Slurm requeue,
resubmit) and how it ended, recorded in results.json under ``attempts``.

Torch-free. The launcher says what it can (torchrun's and Slurm's restart counts); the previous attempt's
record says how it ended (a stop signal, a failure, or nothing at all for a process that was killed).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Mapping


def previous_attempts(run_dir: Path) -> list[dict]:
    """The attempts recorded in ``run_dir``'s results.json (and results.last_attempt.json, newer when present)."""
    attempts: list[dict] = []
    for name in ("results.json", "results.last_attempt.json"):
        try:
            recorded = json.loads((Path(run_dir) / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(recorded, dict):
            found = recorded.get("attempts")
            if isinstance(found, list) and len(found) >= len(attempts):
                attempts = [dict(attempt) for attempt in found if isinstance(attempt, dict)]
            elif not found and not attempts:  # a results.json from before attempts were recorded
                attempts = [{"attempt": 1, "started": recorded.get("started"), "reason": "start",
                             "status": recorded.get("status")}]
    return attempts


def _launcher_restart(environ: Mapping[str, str]) -> str | None:
    """What the launcher says about this start: a torchrun restart or a Slurm requeue, or None."""
    torchrun = environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    if torchrun.isdigit() and int(torchrun) > 0:
        return (f"torchrun restart {torchrun} of at most {environ.get('TORCHELASTIC_MAX_RESTARTS', '?')} "
                f"(run id {environ.get('TORCHELASTIC_RUN_ID', '?')})")
    slurm = environ.get("SLURM_RESTART_COUNT", "0")
    if slurm.isdigit() and int(slurm) > 0:
        return f"Slurm requeue {slurm} of job {environ.get('SLURM_JOB_ID', '?')}"
    return None


def _how_it_ended(attempt: dict) -> str:
    status = attempt.get("status")
    if status == "stopped":
        return f"stopped on {' then '.join(attempt.get('signals') or ['a signal'])}"
    if status in (None, "running"):
        return "ended without a record (the process was killed)"
    return str(status)


def new_attempt(previous: list[dict], environ: Mapping[str, str] | None = None) -> dict:
    """The record of the attempt starting now, after ``previous``: its number, start time and reason."""
    environ = os.environ if environ is None else environ
    attempt = {"attempt": len(previous) + 1, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    launcher = _launcher_restart(environ)
    if not previous:
        attempt["reason"] = launcher or "start"
    else:
        after = f"after attempt {len(previous)} {_how_it_ended(previous[-1])}"
        attempt["reason"] = f"{launcher}, {after}" if launcher else f"started again in the same folder, {after}"
    for key, variable in (("slurm_job_id", "SLURM_JOB_ID"), ("torchrun_run_id", "TORCHELASTIC_RUN_ID")):
        if environ.get(variable):
            attempt[key] = environ[variable]
    return attempt


def end_attempt(attempt: dict, status: str, **details: Any) -> None:
    """Record in ``attempt`` how it ended (``status``, the time, and ``details`` such as the stop's signals)."""
    attempt.update(status=status, ended=time.strftime("%Y-%m-%dT%H:%M:%S"), **details)
