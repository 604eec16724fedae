"""Run records: what a run was (environment, code version) and the results policy for results.json."""

from __future__ import annotations

import json
import platform
import subprocess
from functools import lru_cache
from pathlib import Path

from . import __version__
from .runfiles import write_json_atomic


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the code as imported (cached: later jobs of a sweep run the same code)."""
    try:
        root = Path(__file__).resolve().parent
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict:
    import torch

    return {
        "torch_version": str(torch.__version__),
        "package_version": __version__,
        "python_version": platform.python_version(),
        "git_commit": git_commit(),
        "hostname": platform.node(),
    }


def record_results(run_dir: Path, payload: dict) -> Path:
    """Write results.json, except that a completed run's results are never replaced by an unfinished attempt.

    A later attempt in the same folder that fails (or is still running) writes
    ``results.last_attempt.json`` beside the completed results instead.
    """
    path = Path(run_dir) / "results.json"
    if payload.get("status") != "completed" and path.is_file():
        try:
            previous = json.loads(path.read_text()).get("status")
        except (OSError, json.JSONDecodeError):
            previous = None
        if previous == "completed":
            path = path.with_name("results.last_attempt.json")
    write_json_atomic(path, payload)
    return path


git_commit()  # record the commit when the code is loaded, before the working tree can move on
