"""``train.py`` / ``attn-resnet train``: train an attention ResNet (Hydra's command line, the configs in ``conf/``)."""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from .hydra_app import (block_option_overrides, check_command_line, distributed_launch_args, exit_quietly_on_ctrl_c,
                   run_entry_point)
from ..config.validate import default_conf_dir

# Hydra names the job after this module ("train": train.log in the run folder), as it did after train.py.
CONF_DIR = default_conf_dir()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def task(cfg: DictConfig) -> float | None:
    from ..app import optimized_value, train

    results = run_entry_point(train, cfg, HydraConfig.get())
    # The value a sweeper (Optuna) optimises; see optimized_metric in conf/train.yaml.
    return optimized_value(results, str(cfg.get("optimized_metric", "val_acc1"))) if results else None


def main() -> None:
    """Run ``sys.argv`` as a training command line: the project's checks first, then Hydra."""
    check_command_line(sys.argv, "train", CONF_DIR)  # keys and options Hydra would refuse
    sys.argv = block_option_overrides(sys.argv, CONF_DIR)  # model.<block option>=... without a "+"
    sys.argv = distributed_launch_args(sys.argv)  # torchrun: one run folder for all ranks
    exit_quietly_on_ctrl_c(task)
