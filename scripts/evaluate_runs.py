#!/usr/bin/env python
"""Evaluate finished runs' checkpoints under several test-time settings, each checkpoint read once.

    python scripts/evaluate_runs.py outputs/cifar10_resnet18_none/* --tta none,flip,flip_translate \\
        --weights model,ema --output evals.json

For every run folder (or checkpoint file) given, the checkpoint (``checkpoints/last.pt`` unless
``--checkpoint best.pt``) is evaluated on its run's val/test split for each combination of
``--weights`` (``model``: the trained weights; ``ema``: the weight average, when the run kept
one; other runs skip it) and ``--tta`` (``none``, ``flip``, ``flip_translate``): what
``evaluate.py weights=... tta=...`` reports, without starting one process per combination. In
fp32 unless ``--precision`` says otherwise. Writes a JSON list (one record per run and setting)
and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from attn_resnet.app import _checkpoint_weights
from attn_resnet.build import build_model, make_eval_loader
from attn_resnet.engine.checkpoint import load_training_checkpoint
from attn_resnet.engine.trainer import evaluate_model, resolve_device
from attn_resnet.config.choices import EVAL_WEIGHTS, TTA_MODES


def _choices(text: str, valid: tuple[str, ...], option: str) -> list[str]:
    chosen = [value.strip() for value in text.split(",") if value.strip()]
    bad = [value for value in chosen if value not in valid]
    if bad or not chosen:
        raise SystemExit(f"{option}: {', '.join(bad) or '(empty)'} not valid; choose from {', '.join(valid)}.")
    return chosen


def checkpoint_path(target: Path, name: str) -> Path:
    return target if target.is_file() else target / "checkpoints" / name


def evaluate_run(path: Path, weights: list[str], ttas: list[str], device: torch.device, precision: str,
                 data_root: str | None = None) -> list[dict]:
    """One record per (weights, tta) for the checkpoint at ``path``; ``ema`` is skipped without an average."""
    checkpoint = load_training_checkpoint(path)
    config = checkpoint["config"]
    data = dict(config["data"])
    if data_root:
        data["root"] = data_root
    loader, info = make_eval_loader(data, int(config.get("seed", 0)), device)
    model = build_model(dict(checkpoint["model_spec"])).to(device)
    records = []
    for which in weights:
        if which == "ema" and "ema" not in (checkpoint.get("callbacks") or {}):
            continue
        model.load_state_dict(_checkpoint_weights(checkpoint, which, str(path)))
        for tta in ttas:
            metrics = evaluate_model(model, loader, device, precision, tta=tta)
            records.append({
                "run": str(path.parent.parent if path.parent.name == "checkpoints" else path),
                "checkpoint": str(path), "epoch": checkpoint["epoch"], "seed": config.get("seed"),
                "att_type": checkpoint["model_spec"].get("att_type"), "data": info.name,
                "weights": which, "tta": tta, "precision": precision, **metrics,
            })
    return records


def markdown(records: list[dict]) -> str:
    lines = ["| run | seed | weights | tta | top-1 (%) | loss |", "|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {Path(r['run']).name} | {r['seed']} | {r['weights']} | {r['tta']} | {r['acc1']:.2f} "
                     f"| {r['loss']:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders or checkpoint files")
    parser.add_argument("--checkpoint", default="last.pt", help="checkpoint name in a run's checkpoints/")
    parser.add_argument("--weights", default="model,ema", help="comma-separated: model, ema")
    parser.add_argument("--tta", default="none", help=f"comma-separated: {', '.join(TTA_MODES)}")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="32", choices=("32", "bf16", "fp16"))
    parser.add_argument("--data-root", help="where the data is now, if not where the run read it")
    parser.add_argument("--output", type=Path, help="write the records as JSON here")
    args = parser.parse_args(argv)
    weights = _choices(args.weights, EVAL_WEIGHTS, "--weights")
    ttas = _choices(args.tta, TTA_MODES, "--tta")
    device = resolve_device(args.device, purpose="evaluation")
    records, missing = [], []
    for target in args.runs:
        path = checkpoint_path(target, args.checkpoint)
        if not path.is_file():
            missing.append(str(path))
            continue
        records.extend(evaluate_run(path, weights, ttas, device, args.precision, args.data_root))
    print(markdown(records))
    if missing:
        print(f"\nNo checkpoint (skipped): {', '.join(missing)}", file=sys.stderr)
    if args.output:
        args.output.write_text(json.dumps(records, indent=1))
    return 1 if missing and not records else 0


if __name__ == "__main__":
    sys.exit(main())
