#!/usr/bin/env python
"""Where CBAM's train-step overhead goes: each gate alone, and the max pools the block needs.

    python scripts/profile_cbam.py                                   # -> docs/cbam_cost.md and .json
    python scripts/profile_cbam.py --quick --output-md out/cbam.md --output-json out/cbam.json   # smoke test

Everything runs in this one process, warm-up first, the contenders taking turns (the order
rotates each repeat), with the statistics of scripts/benchmark.py (``attn_resnet.benchmarks``):

- steps: the train step (forward, cross-entropy, backward, SGD step) of our plain ResNet, of the
  same net with CBAM, with CBAM's channel gate only, with its spatial gate only, and with both gates
  taking means where CBAM takes maxima (not CBAM: the bound on what a faster maximum could save). Each ratio is
  the median of the per-repeat ratios over the plain step, with their first and third quartiles.
- max pools: the two maxima CBAM takes, over H x W (channel gate) and over channels (spatial gate),
  at the shape of each stage's output: with the index of the maximum, as the block computes them
  (so that the backward is a scatter, as in the authors' code), against the value alone
  (``amax``, whose backward spreads the gradient over a mask instead). Forward alone and forward
  plus backward, in microseconds per call.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from attn_resnet.benchmarks.contenders import make_optimizer, make_train_step  # noqa: E402
from attn_resnet.benchmarks.machine import load_average, machine_info, versions  # noqa: E402
from attn_resnet.benchmarks.render import command_line, load_average_text, spread_text  # noqa: E402
from attn_resnet.benchmarks.settings import NETWORK_TYPE, NUM_CLASSES  # noqa: E402
from attn_resnet.benchmarks.timing import median, paired_ratio, repeat_steps, timed_turns  # noqa: E402
from attn_resnet.config.choices import DEPTHS  # noqa: E402
from attn_resnet.models import ResidualNet  # noqa: E402
from attn_resnet.models.attention.cbam import CBAM, ChannelGate, SpatialGate, global_max_pool  # noqa: E402
from attn_resnet.models.attention.se import global_avg_pool, mean_by_sum  # noqa: E402

DTYPES = {"32": torch.float32, "bf16": torch.bfloat16}  # the max ops run in the dtype autocast gives the blocks
BOUND = "CBAM, maxima as means (a bound)"
VARIANTS = ("plain", "CBAM", "channel gate only", "spatial gate only", BOUND)
STAGES = (("layer1", 4), ("layer2", 8), ("layer3", 16), ("layer4", 32))  # ImageNet stem: stride of each stage
MAX_OPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "over HxW, with index (CBAM's)": global_max_pool,
    "over HxW, value only (amax)": lambda x: x.amax((2, 3)),
    "over channels, with index (CBAM's)": lambda x: x.max(dim=1, keepdim=True).values,
    "over channels, value only (amax)": lambda x: x.amax(1, keepdim=True),
}


class ChannelGateWithoutMax(ChannelGate):
    """CBAM's channel gate with its max-pooled descriptor replaced by the average one: not CBAM.

    Every other op of the gate stays (the stacked MLP call included), so the step with these gates
    bounds from below what any faster maximum could save.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, average = x.shape[0], global_avg_pool(x)
        logits = self.mlp(torch.cat([average, average]))
        return x * self.channel_map((logits[:batch] + logits[batch:]).sigmoid_())[:, :, None, None]


class SpatialGateWithoutMax(SpatialGate):
    """CBAM's spatial gate with the channel max replaced by the channel mean: not CBAM (see above)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = mean_by_sum(x, (1,), keepdim=True)
        return x * self.spatial_map(self.bn(self.conv(torch.cat([mean, mean], dim=1))).sigmoid_())


def build_variant(depth: int, variant: str) -> nn.Module:
    model = ResidualNet(NETWORK_TYPE, depth, NUM_CLASSES, "none" if variant == "plain" else "CBAM")
    for module in model.modules():
        if isinstance(module, CBAM):
            if variant == "channel gate only":
                module.spatial_gate = nn.Identity()
            elif variant == "spatial gate only":
                module.channel_gate = nn.Identity()
            elif variant == BOUND:
                module.channel_gate.__class__ = ChannelGateWithoutMax
                module.spatial_gate.__class__ = SpatialGateWithoutMax
    return model


def time_steps(args: argparse.Namespace, device: torch.device) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=generator).to(device)
    if args.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    targets = torch.randint(0, NUM_CLASSES, (args.batch_size,), generator=generator).to(device)
    steps = {}
    for variant in VARIANTS:
        torch.manual_seed(0)
        model = build_variant(args.depth, variant).to(device).train()
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        steps[variant] = make_train_step(model, model, make_optimizer(model), images, targets, device,
                                         args.precision)
        for _ in range(args.warmup):
            steps[variant]()

    seconds = timed_turns({name: repeat_steps(step, args.iters) for name, step in steps.items()},
                          args.repeats, device)
    return [{"variant": variant, "step_seconds": seconds[variant],
             "median_step_seconds": median(seconds[variant]),
             **paired_ratio(seconds[variant], seconds["plain"])} for variant in VARIANTS]


def time_max_ops(args: argparse.Namespace, device: torch.device) -> list[dict]:
    widths = (256, 512, 1024, 2048) if args.depth >= 50 else (64, 128, 256, 512)
    rows = []
    for (stage, stride), channels in zip(STAGES, widths):
        side = max(1, args.image_size // stride)
        shape = (args.batch_size, channels, side, side)
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device, DTYPES[args.precision])
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        leaf = x.clone().requires_grad_(True)
        outputs = {name: op(x) for name, op in MAX_OPS.items()}
        gradients = {name: torch.randn_like(out) for name, out in outputs.items()}

        def forward(op: Callable) -> Callable[[], int]:
            def run() -> int:
                with torch.no_grad():
                    for _ in range(args.op_iters):
                        op(x)
                return args.op_iters

            return run

        def forward_backward(name: str, op: Callable) -> Callable[[], int]:
            def run() -> int:
                for _ in range(args.op_iters):
                    torch.autograd.grad(op(leaf), leaf, gradients[name])
                return args.op_iters

            return run

        contenders = {f"forward/{name}": forward(op) for name, op in MAX_OPS.items()}
        contenders.update({f"both/{name}": forward_backward(name, op) for name, op in MAX_OPS.items()})
        for run in contenders.values():  # warm-up
            run()
        seconds = timed_turns(contenders, args.repeats, device)
        for name in MAX_OPS:
            rows.append({"stage": stage, "shape": list(shape), "op": name,
                         "forward_us": median(seconds[f"forward/{name}"]) * 1e6,
                         "forward_backward_us": median(seconds[f"both/{name}"]) * 1e6})
    return rows


def markdown(report: dict) -> str:
    s, m, v = report["settings"], report["machine"], report["versions"]
    lines = [
        "# Where CBAM's overhead goes",
        "",
        f"Written by `{command_line(report['arguments'], 'scripts/profile_cbam.py')}` on {report['date']}.",
        "",
        f"- machine: {m['platform']}; {m.get('gpu') or m['cpu']}; {m['cpu_cores']} CPU cores, {m['torch_threads']} torch "
        f"threads; 1-minute load average {load_average_text(m.get('load_average_start'))} at the start, "
        f"{load_average_text(m.get('load_average_end'))} at the end",
        f"- versions: torch {v['torch']}",
        f"- settings on {s['device']}: ResNet-{s['depth']} ({NETWORK_TYPE} stem), "
        f"{'bf16 autocast' if s['precision'] == 'bf16' else 'float32'}, "
        f"{'channels_last' if s['channels_last'] else 'contiguous'}, batch {s['batch_size']}, "
        f"{s['image_size']}x{s['image_size']} images, repeats {s['repeats']} (x {s['iters']} steps, after "
        f"{s['warmup']} warm-up steps){' (quick: tiny sizes, these numbers measure nothing)' if s['quick'] else ''}",
    ]
    lines += [f"- note: {note}" for note in report["notes"]]
    lines += ["", "## Train step, one gate at a time", "",
              "ratio = the step's time / the plain net's: the median of the per-repeat ratios, in brackets their "
              "first to third quartile. The last row is not CBAM: both gates take the mean where CBAM takes the "
              "maximum (every other op kept), so it bounds from below what any faster maximum could give.", "",
              "| variant | ratio | step ms |", "|---|---|---|"]
    for row in report["steps"]:
        lines.append(f"| {row['variant']} | {row['ratio']:.3f}{spread_text(row['spread'], 3)} | "
                     f"{row['median_step_seconds'] * 1e3:.1f} |")
    lines += ["", "## The two maxima, with and without the index", "",
              "Microseconds per call (median); forward + backward includes the gradient of the input.", "",
              "| stage | shape | max | forward us | forward + backward us |", "|---|---|---|---|---|"]
    for row in report["max_ops"]:
        lines.append(f"| {row['stage']} | {'x'.join(map(str, row['shape']))} | {row['op']} | "
                     f"{row['forward_us']:,.0f} | {row['forward_backward_us']:,.0f} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    parser.add_argument("--depth", type=int, default=50, choices=DEPTHS)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=2, help="train steps per timed repeat")
    parser.add_argument("--op-iters", type=int, default=10, help="calls per timed repeat of a max op")
    parser.add_argument("--precision", choices=tuple(DTYPES), default="32",
                        help="bf16: autocast for the steps, bfloat16 inputs for the max ops")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, not a measurement")
    parser.add_argument("--note", action="append", default=[], help="a line for the report")
    parser.add_argument("--output-md", type=Path, default=ROOT / "docs" / "cbam_cost.md")
    parser.add_argument("--output-json", type=Path, default=ROOT / "docs" / "cbam_cost.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.depth, args.image_size, args.batch_size = 18, 32, 2
        args.repeats, args.warmup, args.iters, args.op_iters = 2, 1, 1, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    report: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "arguments": list(sys.argv[1:] if argv is None else argv),
        "machine": machine_info(device), "versions": versions(), "notes": list(args.note),
        "settings": {"device": str(device), "precision": args.precision, "channels_last": args.channels_last,
                     "depth": args.depth, "image_size": args.image_size,
                     "batch_size": args.batch_size, "repeats": args.repeats, "warmup": args.warmup,
                     "iters": args.iters, "op_iters": args.op_iters, "quick": args.quick},
    }
    report["steps"] = time_steps(args, device)
    report["max_ops"] = time_max_ops(args, device)
    report["machine"]["load_average_end"] = load_average()
    for row in report["steps"]:
        print(f"{row['variant']}: {row['ratio']:.3f}x{spread_text(row['spread'], 3)} of the plain step")
    for path, content in ((args.output_json, json.dumps(report, indent=1) + "\n"), (args.output_md, markdown(report))):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    print(f"wrote {args.output_md} and {args.output_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
