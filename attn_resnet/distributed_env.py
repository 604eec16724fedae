"""Which process of a data-parallel run this one is, read from its launcher's environment.

torchrun (``torch.distributed.run``) exports ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and
``MASTER_ADDR``/``MASTER_PORT`` to every worker; a job started by submitit (Hydra's
submitit launcher) gets the same variables from Slurm's through
``submitit.helpers.TorchDistributedEnvironment``. Torch-free (torch is imported only by
``agree_run_stamp``, and only under a multi-process launch), so the config checks that run
before torch can ask which rank they are on.

Under torchrun every rank composes the Hydra config itself, and a ``${now:}`` in the run
folder would give each its own folder (a known Hydra pitfall). ``agree_run_stamp`` settles
one time stamp for all ranks through the launcher's key-value store before Hydra composes
anything; ``${run_stamp:}`` in ``conf/train.yaml`` reads it.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from typing import Mapping

STAMP_VARIABLE = "ATTN_RESNET_RUN_STAMP"
_STAMP_KEY = "attn_resnet/run_stamp"
_RENDEZVOUS: dict = {}  # "store": the launcher's store, reused by init_process_group in the same process


@dataclass(frozen=True)
class ProcessEnv:
    """This process's place in a data-parallel run (a run of one by default)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    launcher: str = "single"   # single | torchrun (or any launcher exporting RANK/WORLD_SIZE) | submitit

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Started by a launcher of data-parallel runs (torchrun, submitit), even as a group of one."""
        return self.launcher != "single"


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(environ.get(name, default))
    except ValueError:
        return default


def in_submitit_job(environ: Mapping[str, str] | None = None) -> bool:
    """True inside a job that submitit started (Slurm, or its local executor)."""
    return bool((os.environ if environ is None else environ).get("SUBMITIT_EXECUTOR"))


def export_submitit_env() -> None:
    """Inside a submitit job of several tasks, export torch's env:// variables from Slurm's (once).

    Uses submitit's own ``TorchDistributedEnvironment``: ``MASTER_ADDR`` is the job's first
    node and ``MASTER_PORT`` a port drawn from the job id, the same on every task.
    """
    if "RANK" in os.environ or not in_submitit_job():
        return
    from submitit import JobEnvironment
    from submitit.helpers import TorchDistributedEnvironment

    if JobEnvironment().num_tasks > 1:
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def process_env(environ: Mapping[str, str] | None = None) -> ProcessEnv:
    """The ``ProcessEnv`` of this process (call ``export_submitit_env`` first inside submitit jobs)."""
    environ = os.environ if environ is None else environ
    if "RANK" not in environ or "WORLD_SIZE" not in environ:
        return ProcessEnv()
    world_size = _int(environ, "WORLD_SIZE", 1)
    launcher = "submitit" if in_submitit_job(environ) else "torchrun"
    return ProcessEnv(rank=_int(environ, "RANK", 0), local_rank=_int(environ, "LOCAL_RANK", 0),
                      world_size=world_size, local_world_size=_int(environ, "LOCAL_WORLD_SIZE", world_size),
                      launcher=launcher)


def slurm_job_tag(environ: Mapping[str, str] | None = None) -> str | None:
    """``slurm<job id>`` (``slurm<array job id>_<task id>`` in an array) inside a Slurm job, else None.

    What stays the same when Slurm requeues the job, unlike the time and the launcher's store."""
    environ = os.environ if environ is None else environ
    if environ.get("SLURM_ARRAY_JOB_ID") and environ.get("SLURM_ARRAY_TASK_ID"):
        return f"slurm{environ['SLURM_ARRAY_JOB_ID']}_{environ['SLURM_ARRAY_TASK_ID']}"
    return f"slurm{environ['SLURM_JOB_ID']}" if environ.get("SLURM_JOB_ID") else None


def requeued_by_slurm(environ: Mapping[str, str] | None = None) -> bool:
    """Whether Slurm started this job again (a requeue after a time limit, preemption or node failure)."""
    count = (os.environ if environ is None else environ).get("SLURM_RESTART_COUNT", "0")
    return count.isdigit() and int(count) > 0


def new_run_stamp() -> str:
    """``YYYY-mm-dd_HH-MM-SS_xxxx``: the time and four random hex digits (two runs in one second differ)."""
    return f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{secrets.token_hex(2)}"


def launcher_store(timeout_s: float = 600.0):
    """The key-value store of a torchrun launch (``env://`` rendezvous), made once per process.

    Under torchrun the elastic agent hosts it and every rank is a client; a launch that only
    exports the variables gets one hosted by rank 0. ``init_process_group`` is later given
    this same store, so the rendezvous happens once.
    """
    if "store" not in _RENDEZVOUS:
        from datetime import timedelta

        from torch.distributed import rendezvous

        _RENDEZVOUS["store"] = next(rendezvous("env://", timeout=timedelta(seconds=timeout_s)))[0]
    return _RENDEZVOUS["store"]


def rendezvous_store():
    """The store ``launcher_store`` made in this process, or None."""
    return _RENDEZVOUS.get("store")


def agree_run_stamp(timeout_s: float = 600.0) -> str:
    """One run stamp for every rank of this launch, agreed through the launcher's store.

    Each rank offers a fresh stamp with ``compare_set``; the first offer wins and every rank
    reads the winner. A torchrun restart (``--max-restarts``) finds the stamp already there,
    so the restarted ranks come back to the same folder and resume from its last checkpoint.
    Exported as ``ATTN_RESNET_RUN_STAMP`` for ``${run_stamp:}``; a stamp already in the
    environment (given by the user) is kept.
    """
    if os.environ.get(STAMP_VARIABLE):
        return os.environ[STAMP_VARIABLE]
    store = launcher_store(timeout_s)
    stamp = store.compare_set(_STAMP_KEY, "", new_run_stamp())
    stamp = stamp.decode("utf-8") if isinstance(stamp, bytes) else str(stamp)
    os.environ[STAMP_VARIABLE] = stamp
    return stamp
