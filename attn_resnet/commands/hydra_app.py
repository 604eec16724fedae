"""Shared behaviour of the Hydra entry points: clean one-paragraph errors, sweep-friendly failures.

Importing this module registers the config resolvers and imports nothing heavy: torch is
imported only once a run has passed the checks of ``config.preflight``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

from ..config import resolvers  # noqa: F401 - registers ${att_name:} and ${unique:}
from ..config.command_line import check_overrides
from ..config.preflight import group_choices
from ..config.validate import ConfigError, conf_dir_of, default_conf_dir, group_keys, option_names
from ..distributed_env import agree_run_stamp, export_submitit_env, process_env

log = logging.getLogger("attn_resnet")

# cuBLAS reads this once, when CUDA initialises: set it before any job of this process can
# initialise CUDA, so that trainer.deterministic=true is deterministic for every job of a
# sweep, not only the first. It costs a few MiB of workspace and nothing when unused.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def check_command_line(argv: list[str], config_name: str, conf_dir: Path | None = None) -> None:
    """Stop with the project's one-paragraph error (exit status 1) when ``argv`` names a key or a config-group
    option that the config files do not have, before Hydra composes and answers with its own message.

    Run on the command line as the user typed it, before ``block_option_overrides``: a block's
    options (``model.reduction=8``) are checked against the blocks the run may build.
    """
    try:
        check_overrides(argv, config_name, conf_dir or default_conf_dir())
    except ConfigError as error:
        print(f"Error: {error}", file=sys.stderr, flush=True)
        sys.exit(1)


def block_option_overrides(argv: list[str], conf_dir: Path | None = None) -> list[str]:
    """``argv`` with each ``model.<option>=value`` that the model's config file does not declare
    turned into ``++model.<option>=value``.

    A block declares its options itself (its constructor's keyword arguments), so they are not
    keys of ``conf/model/*.yaml``, and Hydra refuses to set an undeclared key without a '+'.
    ``++`` adds the key or sets it where an experiment already did; validation then checks
    it against the chosen block's options before anything runs. A configured callback's keys
    (``callbacks.NAME._target_=...``) are additions too, so they work with or without Hydra's '+'.
    """
    conf_dir = conf_dir or default_conf_dir()
    declared: set[str] = set()
    for option in option_names(conf_dir, "model"):
        declared |= group_keys(conf_dir, "model", option)
    rewritten = []
    for position, arg in enumerate(argv):
        key, equals, _ = arg.partition("=")
        block_option = (declared and key.startswith("model.") and key.count(".") == 1
                        and key.split(".", 1)[1] not in declared)
        if position > 0 and equals and (block_option or key.startswith("callbacks.")):
            arg = "++" + arg
        rewritten.append(arg)
    return rewritten


def distributed_launch_args(argv: list[str]) -> list[str]:
    """``argv`` for this rank of a multi-process launch (torchrun); unchanged for a single process.

    All ranks agree on one run stamp before Hydra composes (``${run_stamp:}``: one run folder),
    and ranks other than 0 leave writing ``.hydra/`` to rank 0. torchrun starts one training
    run; a ``--multirun`` sweep under it is refused: sweeps go through Hydra's launchers
    (``hydra/launcher=submitit_slurm``), whose jobs set up their own process groups.
    """
    env = process_env()
    if not env.distributed:
        return list(argv)
    if any(arg in ("-m", "--multirun") for arg in argv[1:]):
        print(f"Error: --multirun was given to a process of a {env.world_size}-process launch (torchrun). "
              "torchrun runs one training run across its processes; run sweeps with Hydra's launchers "
              "instead (e.g. hydra/launcher=submitit_slurm with hydra.launcher.tasks_per_node=<GPUs>), "
              "or call torchrun once per run.", file=sys.stderr, flush=True)
        sys.exit(1)
    agree_run_stamp()
    return list(argv) + ([] if env.is_main else ["hydra.output_subdir=null"])


def _quiet_follower_rank() -> None:
    """On ranks other than 0: no log file (rank 0 writes the run's one), warnings only on the console."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
            handler.close()
    logging.getLogger("attn_resnet").setLevel(logging.WARNING)


# The shell's status for a program stopped by SIGINT (128 + 2).
INTERRUPTED_EXIT_CODE = 130


def exit_quietly_on_ctrl_c(main: Callable[[], Any]) -> None:
    """Call an entry point's ``main``; a Ctrl-C that reaches here (already reported) exits with 130, no traceback."""
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED_EXIT_CODE)


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by input (config, data, checkpoints, run folders, diverging runs): no traceback needed."""
    from ..engine.distributed import PeerRankError
    from ..engine.trainer import NonFiniteLossError
    from ..runfiles import RunFolderError
    from ..signals import RunTerminated

    return (ValueError, FileNotFoundError, RunFolderError, NonFiniteLossError, RunTerminated, PeerRankError)


def run_entry_point(function: Callable[..., dict], cfg: Any, hydra_cfg: Any) -> dict | None:
    """Call ``function(cfg, run_dir, job=..., group_choices=..., conf_dir=...)`` for the current Hydra job.

    A user error is logged as one paragraph. A single run then exits with status 1 and no
    traceback; in a ``--multirun`` sweep the error is re-raised so Hydra records this job as
    failed, runs the remaining jobs, and exits non-zero at the end.
    """
    from hydra.types import RunMode

    export_submitit_env()  # a job of several tasks on Slurm: torch's env:// variables from Slurm's
    if not process_env().is_main:
        _quiet_follower_rank()
    job = {"num": hydra_cfg.job.num if hydra_cfg.mode == RunMode.MULTIRUN else None,
           "overrides": list(hydra_cfg.overrides.task)}
    from ..signals import RunInterrupted, RunStopped

    try:
        return function(cfg, hydra_cfg.runtime.output_dir, job=job, group_choices=group_choices(hydra_cfg),
                        conf_dir=conf_dir_of(hydra_cfg))
    except RunStopped as error:
        exit_for_requeue(error)
    except RunInterrupted as error:
        log.error("%s", error)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise KeyboardInterrupt from None  # Ctrl-C stops the sweep, not only this job
        sys.exit(INTERRUPTED_EXIT_CODE)
    except user_errors() as error:
        log.error("%s", error)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise
        sys.exit(1)


def exit_for_requeue(error: Any) -> None:
    """End a run stopped by a stop signal (``signals.RunStopped``, its checkpoint written) so its launcher starts it
    again: inside a submitit job, rank 0 hands over to submitit's own requeue handler (it resubmits the job and
    exits: ``scontrol requeue`` on Slurm, its requeue status on the local executor); elsewhere every rank exits
    with ``REQUEUE_EXIT_CODE``. The time from the signal to here is logged: the lead time to ask the scheduler
    for (``--signal=USR2@<seconds>``).
    """
    import signal
    import time

    from ..distributed_env import in_submitit_job
    from ..signals import REQUEUE_EXIT_CODE

    # From here the process only exits: a launcher's SIGTERM to the ranks still running (torchrun stops the others
    # when one exits) or a repeated stop signal must not kill one mid-exit, with a signal's status instead of ours.
    for name in {"SIGTERM", *error.signals}:
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    log.warning("%s", error)
    if error.signalled_at is not None:
        log.info("Signal to exit: %.1f s (signal to checkpoint written: %.1f s).",
                 time.monotonic() - error.signalled_at, error.seconds)
    if in_submitit_job():
        if not process_env().is_main:
            sys.exit(0)  # rank 0 requeues the job: another status here could requeue it twice, or not at all
        from submitit import JobEnvironment

        name = f"SIG{JobEnvironment.USR_SIG}"
        handler = error.launcher_handlers.get(name)
        if handler is not None:
            log.info("Handing over to submitit to requeue the job.")
            handler(getattr(signal, name), None)  # submitit's checkpoint_and_try_requeue: resubmits, then exits
    sys.exit(REQUEUE_EXIT_CODE)
