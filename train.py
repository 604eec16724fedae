"""Train an attention ResNet: ``python train.py model.att_type=CBAM`` (see README.md)."""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from attn_resnet.cli import (block_option_overrides, check_command_line, distributed_launch_args,
                             exit_quietly_on_ctrl_c, run_entry_point)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from attn_resnet.app import optimized_value, train

    results = run_entry_point(train, cfg, HydraConfig.get())
    # The value a sweeper (Optuna) optimises; see optimized_metric in conf/train.yaml.
    return optimized_value(results, str(cfg.get("optimized_metric", "val_acc1"))) if results else None


if __name__ == "__main__":
    check_command_line(sys.argv, "train", Path(__file__).resolve().parent / "conf")  # keys and options Hydra would refuse
    sys.argv = block_option_overrides(sys.argv)  # model.<block option>=... without a "+"
    sys.argv = distributed_launch_args(sys.argv)  # torchrun: one run folder for all ranks
    exit_quietly_on_ctrl_c(main)
