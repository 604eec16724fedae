"""``evaluate.py`` / ``attn-resnet evaluate``: evaluate a checkpoint on its data set's val split."""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from .hydra_app import block_option_overrides, check_command_line, run_entry_point
from ..config.validate import default_conf_dir

CONF_DIR = default_conf_dir()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="evaluate")
def task(cfg: DictConfig) -> float | None:
    from ..app import evaluate

    results = run_entry_point(evaluate, cfg, HydraConfig.get())
    return results["acc1"] if results else None


def main() -> None:
    """Run ``sys.argv`` as an evaluation command line: the project's checks first, then Hydra."""
    check_command_line(sys.argv, "evaluate", CONF_DIR)  # keys and options Hydra would refuse
    sys.argv = block_option_overrides(sys.argv, CONF_DIR)  # model.<block option>=... without a "+"
    task()
