"""Does starting from pretrained weights beat training from scratch at the same small budget? A CIFAR-10 study.

    python scripts/transfer_study.py --data-root data --output docs/results/transfer_cifar10_cpu.md

1. Pretrain a ResNet on five CIFAR-10 classes (``data.classes``, airplane..deer by default).
2. On the other five (dog..truck), with a small training set (``--finetune-subset`` images), train
   the same network, for the same epochs and images, three ways: from scratch, fine-tuned from
   step 1's best.pt (``model.init_from``, new 5-class head at ``head_lr_scale`` x the lr), and
   fine-tuned with the stem and first stages frozen (``model.freeze``).
3. Each arm runs once per seed; the table gives each run's test top-1 on the five classes' full
   test split, their mean, and the paired difference from scratch.

Every run is an ordinary ``train.py`` run (its folder under ``--runs``, its results.json read
back), so the table can be checked run by run. The defaults fit a small CPU (ImageNet stem at
32x32, where a ResNet-18 trains at a few hundred images/s on two cores).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--data-root", required=True, help="folder holding cifar-10-batches-py/")
    parser.add_argument("--runs", type=Path, default=Path("outputs/transfer_study"), help="folder for the runs")
    parser.add_argument("--output", type=Path, help="write the Markdown table here (default: print it)")
    parser.add_argument("--depth", type=int, default=18)
    parser.add_argument("--stem", "--network-type", dest="stem", default="imagenet", type=str.lower,
                        choices=("imagenet", "cifar", "cifar10"), help="imagenet (cheap at 32x32) or cifar")
    parser.add_argument("--pretrain-classes", default="0,1,2,3,4", help="indices of the pretraining classes")
    parser.add_argument("--finetune-classes", default="5,6,7,8,9", help="indices of the target classes")
    parser.add_argument("--pretrain-epochs", type=int, default=10)
    parser.add_argument("--finetune-epochs", type=int, default=15)
    parser.add_argument("--finetune-subset", type=int, default=2500, help="training images of the target task")
    parser.add_argument("--freeze", default="stage2", help="the frozen arm's model.freeze")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--scratch-lr", type=float, default=0.1)
    parser.add_argument("--finetune-lr", type=float, default=0.01)
    parser.add_argument("--head-lr-scale", type=float, default=10.0)
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every run")
    return parser.parse_args(argv)


def run(name: str, overrides: list[str], runs: Path) -> dict:
    """One train.py run in ``runs/name`` (skipped when it already completed); its results.json."""
    folder = runs / name
    results = folder / "results.json"
    if results.is_file() and json.loads(results.read_text()).get("status") == "completed":
        print(f"{name}: done already", flush=True)
        return json.loads(results.read_text())
    command = [sys.executable, "train.py", *overrides, "trainer.progress=false", f"hydra.run.dir={folder}"]
    print(f"{name}: {' '.join(command[1:])}", flush=True)
    started = time.time()
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"{name} failed (exit {completed.returncode}):\n{completed.stdout[-3000:]}"
                         f"{completed.stderr[-3000:]}")
    print(f"{name}: {time.time() - started:.0f} s", flush=True)
    return json.loads(results.read_text())


def _classes(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _top1(results: dict) -> float:
    return float(results["final"]["acc1"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs = args.runs.resolve()
    source_classes, target_classes = _classes(args.pretrain_classes), _classes(args.finetune_classes)
    common = [f"data.root={args.data_root}", f"model.depth={args.depth}", f"data.stem={'imagenet' if args.stem == 'imagenet' else 'cifar'}",
              *args.extra]
    as_list = lambda indices: "[" + ",".join(map(str, indices)) + "]"  # noqa: E731
    pretrain = run("pretrain", [*common, f"data.classes={as_list(source_classes)}",
                                f"trainer.epochs={args.pretrain_epochs}"], runs)
    checkpoint = runs / "pretrain" / "checkpoints" / "best.pt"
    target = [*common, f"data.classes={as_list(target_classes)}", f"data.train_subset={args.finetune_subset}",
              f"trainer.epochs={args.finetune_epochs}"]
    finetune = [f"model.init_from={checkpoint}", f"optim.lr={args.finetune_lr}",
                f"optim.head_lr_scale={args.head_lr_scale}"]
    arms = {
        "scratch": [f"optim.lr={args.scratch_lr}"],
        "fine-tuned": finetune,
        f"fine-tuned, freeze={args.freeze}": [*finetune, f"model.freeze={args.freeze}"],
    }
    seeds = _classes(args.seeds)
    table: dict[str, dict[int, dict]] = {arm: {} for arm in arms}
    for seed in seeds:
        for arm, overrides in arms.items():
            slug = arm.replace(", ", "_").replace("=", "-").replace(" ", "_")
            table[arm][seed] = run(f"{slug}_seed{seed}", [*target, *overrides, f"seed={seed}"], runs)

    lines = render(args, pretrain, table, seeds, arms)
    text = "\n".join(lines) + "\n"
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        print(f"wrote {args.output}")
    else:
        print(text)
    return 0


def render(args, pretrain: dict, table: dict, seeds: list[int], arms: dict) -> list[str]:
    source = [CIFAR10[i] for i in _classes(args.pretrain_classes)]
    target = [CIFAR10[i] for i in _classes(args.finetune_classes)]
    first = next(iter(next(iter(table.values())).values()))
    lines = [
        "# Fine-tuning vs training from scratch on CIFAR-10 (CPU)",
        "",
        f"ResNet-{args.depth} ({'ImageNet' if args.stem == 'imagenet' else 'CIFAR'} stem, 32x32 inputs). Pretrained for {args.pretrain_epochs} epochs "
        f"on the {pretrain['data']['train_size']:,} training images of {', '.join(source)} "
        f"(test top-1 {_top1(pretrain):.2f}% on their {pretrain['data']['val_size']:,} test images). Then, on "
        f"{', '.join(target)}: {args.finetune_subset:,} training images (class-balanced), {args.finetune_epochs} "
        f"epochs for every arm, evaluated on the {first['data']['val_size']:,} test images of those classes.",
        "",
        f"- scratch: the default recipe (SGD, lr {args.scratch_lr}, cosine), the same initialisation as any run;",
        f"- fine-tuned: `model.init_from=` the pretrained best.pt, lr {args.finetune_lr}, new 5-class head at "
        f"{args.head_lr_scale:g}x that lr (`optim.head_lr_scale`);",
        f"- frozen: the same, with `model.freeze={args.freeze}` (stem and stages up to {args.freeze} kept as "
        f"pretrained, their BatchNorm statistics too).",
        "",
        "| arm | " + " | ".join(f"seed {seed}" for seed in seeds) + " | mean | vs scratch (paired) |",
        "|---|" + "---:|" * (len(seeds) + 2),
    ]
    scratch = [_top1(table["scratch"][seed]) for seed in seeds]
    for arm in arms:
        values = [_top1(table[arm][seed]) for seed in seeds]
        differences = [value - base for value, base in zip(values, scratch)]
        vs = "" if arm == "scratch" else f"{statistics.mean(differences):+.2f} points"
        lines.append(f"| {arm} | " + " | ".join(f"{value:.2f}" for value in values)
                     + f" | {statistics.mean(values):.2f} | {vs} |")
    wall = {arm: statistics.mean(float(table[arm][seed].get("wall_seconds") or 0) for seed in seeds) for arm in arms}
    lines += [
        "",
        "Test top-1 (%) after the last epoch. Mean wall time per run: "
        + ", ".join(f"{arm} {seconds:.0f} s" for arm, seconds in wall.items())
        + f"; pretraining {float(pretrain.get('wall_seconds') or 0):.0f} s.",
        "",
        f"Measured on {platform.machine()} CPU, {first.get('device', 'cpu')}, torch {first.get('torch_version', '?')}, "
        f"commit {first.get('git_commit', '?')}. Reproduce:",
        "",
        "```bash",
        "python scripts/transfer_study.py --data-root DATA --output docs/results/transfer_cifar10_cpu.md"
        + (f" --seeds {args.seeds}" if args.seeds != "0,1" else ""),
        "```",
    ]
    return lines


if __name__ == "__main__":
    sys.exit(main())
