"""The command line of scripts/benchmark.py: its options, the suites it runs and the report it writes."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ..config.choices import AUG_POLICIES, DEPTHS
from .contenders import TIMM_MISSING, timm_module
from .machine import load_average, machine_info, versions
from .memory import probe_cpu_memory
from .ratios import derive
from .render import fmt, spread_text, write_report
from .settings import ATT_TYPES, NETWORK_TYPE, NUM_CLASSES, QUICK, REPO, SUITES, Settings
from .suite_data import benchmark_data
from .suite_fused import benchmark_fused
from .suite_models import benchmark_models
from .suite_trainer import benchmark_trainer

SCHEMA_VERSION = 1
USAGE = """Speed benchmark: our attention ResNets beside torchvision/timm peers, the data path and the trainer.

    python scripts/benchmark.py                   # CPU suite -> docs/benchmarks.md and docs/benchmarks.json
    python scripts/benchmark.py --suite gpu       # CUDA: 224x224, batch 256, bf16 autocast, channels_last, compiled
    python scripts/benchmark.py --suite gpu --sections fused   # SE and CBAM with model.fused off and on
    python scripts/benchmark.py --quick --output-md out/bench.md --output-json out/bench.json   # smoke test

Every comparison runs in this one process: warm-up first, then the contenders take turns
(the order rotates each repeat) and each reports the median of its repeats. A ratio of two
contenders is the median of their per-repeat ratios (each pair timed in the same turn), shown with
the first and third quartiles of those ratios. What is timed:

- models: a train step (forward, cross-entropy, backward, SGD step) of our ``ResidualNet``
  ("ImageNet" network type) and of its peer on the same input, dtype, batch and memory format:
  torchvision ``resnetD`` for no attention, timm ``seresnetD`` for SE, timm ``resnetD`` with
  ``block_args=dict(attn_layer="cbam")`` for CBAM; BAM has no peer. Peak memory of one step
  (CUDA: ``max_memory_allocated``; CPU: peak RSS growth, measured in a child process per model).
  Attention overhead: our step time with the block over our plain net's.
- data: images/s of the device-resident loader (``attn_resnet.data.DeviceImageLoader``) vs the
  torchvision per-image pipeline (DataLoader workers, PIL, RandomCrop + flip + ToTensor +
  Normalize) over the same in-memory uint8 CIFAR-sized images, batches on the device.
- trainer: ``Trainer.train_epoch`` vs a bare for-loop of the same steps (same loader, model
  and optimizer): the framework's overhead.
- fused (``--sections fused``, not run by default): eager train steps of our plain ResNet and
  of SE and CBAM with ``model.fused`` false (the eager formula) and true (the Triton kernels),
  at ``--fused-depth``: each block's overhead over the plain step both ways, and the fused
  kernels' speedup. Our models elsewhere run with the default ``model.fused=auto`` (the
  kernels on CUDA). On the CPU the kernels need ``TRITON_INTERPRET=1`` (``--quick`` only: the
  interpreter measures nothing); without it the section says why it was skipped.

Ratios come first in the tables, absolute numbers beside them. The numbers say what this
machine did while the script ran: on a shared machine, run it when the machine is quiet.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=USAGE.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=USAGE)
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="default: cuda when available, else cpu")
    parser.add_argument("--suite", choices=tuple(SUITES), default=None, help="default: the device's suite")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per contender (median reported)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per model first")
    parser.add_argument("--iters", type=int, default=None, help="train steps per timed repeat")
    parser.add_argument("--depths", type=lambda text: tuple(int(v) for v in text.split(",")), default=None,
                        help="comma-separated, e.g. 18,50")
    parser.add_argument("--att-types", type=lambda text: tuple(text.split(",")), default=ATT_TYPES,
                        help="comma-separated blocks: " + ",".join(ATT_TYPES) + " (the default), any other "
                             "registered block, or one of your own by import path (package.module:Class), which "
                             "is timed beside them without a peer")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="also time torch.compile'd models (default: on in the gpu suite, off in the cpu suite)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--precision", choices=("32", "bf16", "fp16"), default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader workers of the per-image pipeline (default: the available cores, at most 8)")
    parser.add_argument("--cpu-memory", action=argparse.BooleanOptionalAction, default=None,
                        help="on the CPU, measure each model's peak RSS growth in a child process (default: on, "
                             "off with --quick)")
    parser.add_argument("--no-timm", action="store_true", help="leave out the timm peers even when timm is installed")
    parser.add_argument("--sections", default="models,data,trainer",
                        help="any of models,data,trainer,fused (fused: SE and CBAM with model.fused off and on)")
    parser.add_argument("--fused-depth", type=int, choices=DEPTHS, default=None,
                        help="depth of the fused section's ResNets (default: 50; 18 with --quick)")
    parser.add_argument("--aug-policy", choices=AUG_POLICIES, default="none",
                        help="data section: both contenders also apply this policy (ours: aug.policy on the "
                             "device loader; the per-image path: torchvision's RandAugment / TrivialAugmentWide)")
    parser.add_argument("--note", action="append", default=[], help="a line for the report (e.g. how busy the "
                                                                    "machine was)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, not a measurement")
    parser.add_argument("--profile-trainer", type=Path, metavar="DIR",
                        help="after timing, record one Trainer epoch and one bare-loop epoch under torch.profiler "
                             "and write their op tables (device and host time) to DIR")
    parser.add_argument("--output-md", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--output-json", type=Path, default=REPO / "docs" / "benchmarks.json")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="measure nothing: rewrite the Markdown of this JSON report (adding any --note lines "
                             "to both)")
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def resolve_settings(args: argparse.Namespace) -> Settings:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but CUDA is not available here; use --device cpu.")
    suite = args.suite or ("gpu" if device == "cuda" else "cpu")
    base = {**SUITES[suite], **(QUICK if args.quick else {})}
    if args.threads:
        torch.set_num_threads(args.threads)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = args.workers if args.workers is not None else (min(cores, 2) if args.quick else min(cores, 8))

    def pick(name: str):
        value = getattr(args, name)
        return base[name] if value is None else value

    return Settings(
        suite=suite, device=device, image_size=pick("image_size"), batch_size=pick("batch_size"),
        depths=tuple(pick("depths")), precision=pick("precision"), channels_last=pick("channels_last"),
        compile=pick("compile"), repeats=pick("repeats"), warmup=pick("warmup"), iters=pick("iters"),
        data=dict(base["data"]), trainer=dict(base["trainer"]), threads=torch.get_num_threads(), quick=args.quick,
        cpu_memory=(not args.quick) if args.cpu_memory is None else args.cpu_memory, timm=not args.no_timm,
        workers=workers, att_types=tuple(args.att_types), notes=list(args.note), profile_dir=args.profile_trainer,
        aug_policy=args.aug_policy, fused_depth=args.fused_depth or (18 if args.quick else 50))


def settings_record(settings: Settings) -> dict[str, Any]:
    """The settings as the report records them."""
    return {
        "suite": settings.suite, "device": settings.device, "quick": settings.quick, "dtype": settings.dtype_text,
        "precision": settings.precision, "batch_size": settings.batch_size, "image_size": settings.image_size,
        "memory_format": settings.memory_format, "depths": list(settings.depths), "att_types": list(settings.att_types),
        "network_type": NETWORK_TYPE, "num_classes": NUM_CLASSES, "compile": settings.compile,
        "repeats": settings.repeats, "warmup": settings.warmup, "iters": settings.iters,
        "threads": settings.threads, "optimizer": "SGD(lr=0.01, momentum=0.9, weight_decay=1e-4)",
        "data": settings.data, "trainer": settings.trainer, "workers": settings.workers,
        "fused_depth": settings.fused_depth,
    }


def new_report(settings: Settings, arguments: list[str], sections: set[str]) -> dict[str, Any]:
    """A report with nothing measured yet: what runs, where, with which versions; each section still to come."""
    report: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "arguments": arguments,
        "machine": machine_info(settings.torch_device),
        "versions": versions(),
        "notes": list(settings.notes),
    }
    not_yet = {"skipped": "not measured: the run stopped before this section"}
    report["data"], report["trainer"] = dict(not_yet), dict(not_yet)
    if "fused" in sections:  # a section of its own: a report without it has no "fused" entry
        report["fused"] = dict(not_yet)
    if not settings.timm or timm_module() is None:
        report["notes"].append("timm peers (SE, CBAM) left out: "
                               + ("--no-timm" if not settings.timm else TIMM_MISSING))
    if settings.quick:
        report["notes"].append("--quick: tiny sizes for a smoke test; these numbers measure nothing")
    report["settings"] = settings_record(settings)
    return report


def rerender(args: argparse.Namespace) -> None:
    """--render: the report's ratios derived again from its recorded per-repeat times, both files rewritten."""
    report = json.loads(args.render.read_text())
    report["notes"] += args.note
    derive(report)  # the spreads and ratios follow from the recorded per-repeat times
    write_report(report, args.output_md, args.output_json)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_probe:
        print(json.dumps(probe_cpu_memory(json.loads(args.memory_probe))))
        return 0
    if args.render:
        rerender(args)
        return 0
    from ..attention_registry import attention_names, canonical_attention

    unknown = [name for name in args.att_types if canonical_attention(name) is None]
    if unknown or "none" not in args.att_types:
        raise SystemExit(f"--att-types {','.join(args.att_types)}: choose from {','.join(attention_names())} or a "
                         "block of your own by import path (package.module:Class), and include none (the "
                         "attention overhead is measured against it).")
    args.att_types = tuple(canonical_attention(name) for name in args.att_types)
    settings = resolve_settings(args)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f} s] {message}", flush=True)

    if settings.torch_device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    sections = set(args.sections.split(","))
    report = new_report(settings, list(sys.argv[1:] if argv is None else argv), sections)
    log(f"suite {settings.suite} on {settings.device} ({report['machine'].get('gpu') or report['machine']['cpu']}), "
        f"torch {torch.__version__}, {settings.dtype_text}, batch {settings.batch_size}, "
        f"{settings.image_size}x{settings.image_size}, {settings.memory_format}")

    def save(records: list[dict], missing: list[dict]) -> None:
        """Write the report of everything measured so far (a timed-out run still leaves its numbers)."""
        report["models"] = records
        report["missing_peers"] = missing
        report["machine"]["load_average_end"] = load_average()
        derive(report)
        write_report(report, args.output_md, args.output_json)

    records, missing = benchmark_models(settings, log, save) if "models" in sections else ([], [])
    skipped = {"skipped": "not asked for (--sections)"}
    if "fused" in sections:
        report["fused"] = benchmark_fused(settings, log)
        save(records, missing)
    if "data" in sections:
        report["data"] = benchmark_data(settings, log)
        save(records, missing)
    else:
        report["data"] = skipped
    report["trainer"] = benchmark_trainer(settings, log) if "trainer" in sections else dict(skipped)
    save(records, missing)
    for row in report["headline"]:
        met = {True: "met", False: "NOT met", None: "not measured"}[row["met"]]
        log(f"{row['check']}: {fmt(row['value'])}x{spread_text(row.get('spread'))} "
            f"(target {row['comparison']} {row['target']:.2f}x, {met})")
    log(f"wrote {args.output_md} and {args.output_json}")
    return 0
