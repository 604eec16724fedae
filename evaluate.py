"""Evaluate a checkpoint: ``python evaluate.py checkpoint=outputs/.../checkpoints/best.pt``."""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from attn_resnet.cli import block_option_overrides, check_command_line, run_entry_point


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    from attn_resnet.app import evaluate

    results = run_entry_point(evaluate, cfg, HydraConfig.get())
    return results["acc1"] if results else None


if __name__ == "__main__":
    check_command_line(sys.argv, "evaluate", Path(__file__).resolve().parent / "conf")  # keys and options Hydra would refuse
    sys.argv = block_option_overrides(sys.argv)  # model.<block option>=... without a "+"
    main()
