"""The ``attn-resnet`` command: one entry point over every tool of the project.

    attn-resnet train [key=value ...]        the same as python train.py [key=value ...]
    attn-resnet evaluate checkpoint=PATH     the same as python evaluate.py checkpoint=PATH
    attn-resnet predict CHECKPOINT IMAGE...  top-k classes of image files (scripts/predict.py)
    attn-resnet export CHECKPOINT --format onnx --output model.onnx
    attn-resnet table SWEEP_FOLDER           a paper-style table of a sweep (scripts/paper_table.py)
    attn-resnet report FOLDER... --out report.html   one HTML page of runs and sweeps (scripts/report.py)
    attn-resnet visualize CHECKPOINT IMAGE.. attention maps beside Grad-CAM (scripts/visualize_attention.py)

It works from any folder: runs go to ``outputs/`` and sweeps to ``multirun/`` there, and the configs
come with the package (add your own with ``hydra.searchpath=[file:///path/to/your/conf]``).
``attn-resnet <command> --help`` explains each.
"""

from __future__ import annotations

import importlib
import sys

# command -> (module under attn_resnet.commands, what it does)
COMMANDS = {
    "train": ("train", "train an attention ResNet (Hydra: key=value overrides, --multirun sweeps)"),
    "evaluate": ("evaluate", "evaluate a checkpoint on the val split (Hydra: checkpoint=PATH)"),
    "predict": ("predict", "top-k class predictions of a checkpoint on image files and folders"),
    "export": ("export", "export a checkpoint to ONNX, TorchScript or safetensors, checked against PyTorch"),
    "table": ("table", "a paper-style table of a sweep's runs, beside the published numbers"),
    "report": ("report", "one HTML page of a sweep: the table, accuracy against cost, curves, intervals"),
    "visualize": ("visualize", "attention maps of a checkpoint on images, beside Grad-CAM"),
}


def usage() -> str:
    width = max(map(len, COMMANDS)) + 2
    lines = ["usage: attn-resnet <command> [arguments]", "", "commands:"]
    lines += [f"  {name:<{width}}{what}" for name, (_, what) in COMMANDS.items()]
    lines += ["", "attn-resnet <command> --help describes a command's arguments."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``attn-resnet <command> ARGS`` to the command, which sees ``ARGS`` as its own command line."""
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command = argv[1]
    if command not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(command, list(COMMANDS), n=1)
        hint = f" Did you mean attn-resnet {close[0]}?" if close else ""
        print(f"attn-resnet: unknown command {command!r}.{hint} Commands: {', '.join(COMMANDS)}.", file=sys.stderr)
        return 2
    module = importlib.import_module(f".{COMMANDS[command][0]}", __name__)
    if command in ("train", "evaluate"):  # Hydra reads sys.argv itself
        sys.argv = [f"{argv[0]} {command}", *argv[2:]]
        module.main()
        return 0
    sys.argv = [f"attn-resnet {command}", *argv[2:]]  # argparse's usage line names the command
    return int(module.main(argv[2:]) or 0)
