"""OmegaConf resolvers used by the config files; ``register()`` is called on import of the entry points.

- ``${att_name:${model.att_type},${model.att_placement}}``: the canonical spelling (``cbam`` ->
  ``CBAM``), so run names do not depend on how a user typed the block, with the placement
  when it is not the block's default (``CBAM-head``); a block given by import path is spelled
  with dots (``mypkg.gates.MyGate``).
- ``${att_blocks:}``: every block known by name (built-in, registered, installed packages' entry
  points), comma-separated, for sweeps over the whole zoo
  (``model.att_type: ${att_blocks:}`` in a sweeper's params), so a new block joins them.
- ``${att_placements:}``: every registered placement, comma-separated, for the zoo's sweep over
  ``model.att_placement``, so a new placement joins it.
- ``${unique:}``: four random hex digits, drawn once per composed config (OmegaConf's
  resolver cache; Hydra copies that cache into every job of a sweep, as it does for
  ``${now:}``). It keeps two runs started in the same second with the same overrides
  out of each other's folders.
- ``${config_help:train}``: the config groups of ``conf/train.yaml`` with their options and the
  attention blocks with theirs (``config.help``), for the ``--help`` templates of the entry points.
- ``${run_stamp:}``: ``<date>_<time>_<4 hex digits>``, drawn once per composed config like
  ``${unique:}``; under torchrun every rank reads the one stamp its launch agreed on
  (``distributed_env.agree_run_stamp``), so all ranks of a run share one folder, also after a
  torchrun restart (the launcher's store keeps the stamp).
- ``${run_folder:PARENT,${run_stamp:}}``: ``PARENT/<run stamp>``; inside a Slurm job ``PARENT/<run stamp>_slurm<job id>``,
  and when Slurm has requeued the job, the folder of that name its first attempt made, so that the
  requeued job resumes in it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from omegaconf import OmegaConf

from ..attention_registry import BLOCKS, display_name, placement_names
from ..distributed_env import STAMP_VARIABLE, new_run_stamp, requeued_by_slurm, slurm_job_tag


def _att_name(value, placement: str = "default") -> str:
    name = display_name(value)  # an unknown value as it is: validation reports it
    return name if placement in (None, "default") else f"{name}-{placement}"


def _att_blocks() -> str:
    return ",".join(BLOCKS.names())


def _att_placements() -> str:
    return ",".join(placement_names())


def _unique() -> str:
    return secrets.token_hex(2)


def _run_stamp() -> str:
    return os.environ.get(STAMP_VARIABLE) or new_run_stamp()


def _run_folder(parent: str, stamp: str) -> str:
    tag = slurm_job_tag()
    if tag is None:
        return f"{parent}/{stamp}"
    if requeued_by_slurm():
        earlier = sorted(path for path in Path(parent).glob(f"*_{tag}") if path.is_dir())
        if earlier:
            return str(earlier[-1])
    return f"{parent}/{stamp}_{tag}"


def _config_help(config_name: str) -> str:
    from .help import config_help
    from .validate import conf_dir_of, default_conf_dir

    try:
        from hydra.core.hydra_config import HydraConfig

        conf_dir = conf_dir_of(HydraConfig.get())  # set by Hydra before it renders the help
    except ValueError:
        conf_dir = default_conf_dir()
    # Hydra fills the template with string.Template: a '$' of the text (a comment's ${data.root}) must stay one.
    return config_help(config_name, conf_dir).replace("$", "$$")


def register() -> None:
    """Register the project's resolvers (idempotent)."""
    if not OmegaConf.has_resolver("att_name"):
        OmegaConf.register_new_resolver("att_name", _att_name)
    if not OmegaConf.has_resolver("att_blocks"):
        OmegaConf.register_new_resolver("att_blocks", _att_blocks)
    if not OmegaConf.has_resolver("att_placements"):
        OmegaConf.register_new_resolver("att_placements", _att_placements)
    if not OmegaConf.has_resolver("unique"):
        OmegaConf.register_new_resolver("unique", _unique, use_cache=True)
    if not OmegaConf.has_resolver("config_help"):
        OmegaConf.register_new_resolver("config_help", _config_help)
    if not OmegaConf.has_resolver("run_stamp"):
        OmegaConf.register_new_resolver("run_stamp", _run_stamp, use_cache=True)
    if not OmegaConf.has_resolver("run_folder"):
        OmegaConf.register_new_resolver("run_folder", _run_folder, use_cache=True)


register()
