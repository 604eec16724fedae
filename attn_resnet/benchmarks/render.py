"""The report in Markdown (and beside it the JSON), written so that a section another script keeps stays."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from .suite_fused import fused_key

# The markers of the section that scripts/benchmark_imagenet_data.py writes into the same Markdown file.
KEPT_SECTION = ("<!-- imagenet-data:start -->", "<!-- imagenet-data:end -->")
PEER_NOTES = [
    "Our models are `ResidualNet(\"ImageNet\", depth, 1000, att_type)`: 7x7/2 stem + max-pool, stride on the "
    "3x3 conv of the Bottleneck, adaptive average pool + fc, the same trunk as torchvision's `resnetD` and "
    "timm's `resnetD`.",
    "timm's SE module is 1x1 convs with the hidden width rounded up to a multiple of 8 (e.g. 8 instead of our "
    "4 for 64 channels); ours is Linear(C, C//16) + bias as in the SE paper and the CBAM authors' code, so "
    "the parameter counts differ slightly (see the params columns).",
    "timm's CBAM has no biases in its channel MLP and runs the MLP once per descriptor; its spatial gate pools "
    "[mean, max] (ours [max, mean], as the authors' code) and uses BatchNorm momentum 0.1 (ours 0.01). "
    "The compute is otherwise the same.",
    "BAM has no torchvision or timm implementation: its peer cells read \"—\".",
    "Our SE and CBAM models run with model.fused=auto: their fused Triton kernels on CUDA, the eager "
    "formula on the CPU and under torch.compile.",
]
TARGETS_DATA_NOTE = ("loader target (>= 10x) in the table above is that of the plain crop + flip pipeline and does "
                     "not apply to a run with a policy.")


def spread_text(spread: list[float] | None, digits: int = 2) -> str:
    """" (0.97-1.04)": the middle half of the per-repeat ratios, or nothing when unknown."""
    return "" if not spread else f" ({spread[0]:.{digits}f}–{spread[1]:.{digits}f})"


def fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "—" if value is None else f"{value:.{digits}f}{suffix}"


def ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1e3:.1f}"


def thousands(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def command_line(arguments: list[str], script: str = "scripts/benchmark.py") -> str:
    """The command that measured, with each --note text shortened to "..." (the notes are listed below it)."""
    shown = ["python", script]
    for index, argument in enumerate(arguments):
        shown.append("..." if index and arguments[index - 1] == "--note" else argument)
    return shlex.join(shown).replace("'...'", "...")


def load_average_text(average: list[float] | None) -> str:
    """The 1-minute load average, or "n/a"."""
    return "n/a" if not average else f"{average[0]:.2f}"


def markdown(report: dict) -> str:
    s, m, v = report["settings"], report["machine"], report["versions"]
    device_text = m.get("gpu") or m["cpu"]
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{command_line(report['arguments'])}` on {report['date']}.",
        "Every comparison ran in one process, warm-up first, the contenders taking turns; each number is "
        "the median of the repeats. Ratios first, absolute numbers beside them. A ratio is the median of the "
        "per-repeat ratios, each of two contenders timed in the same turn, seconds apart; in brackets beside it, "
        "their middle half (first to third quartile): how far the ratio can be trusted on this machine.",
        "",
        f"- machine: {m['platform']}; {device_text}"
        + (f" ({m['gpu_memory_gb']} GiB)" if m.get("gpu") else "")
        + f"; {m['cpu_cores']} CPU cores, {m['torch_threads']} torch threads; 1-minute load average "
        f"{load_average_text(m.get('load_average_start'))} at the start, {load_average_text(m.get('load_average_end'))} at the end",
        f"- versions: torch {v['torch']}, torchvision {v['torchvision']}, timm {v['timm'] or 'not installed'}"
        + (f", CUDA {v['cuda']}, cuDNN {v['cudnn']}" if s["device"].startswith("cuda") else ""),
        f"- suite {s['suite']}{' (quick)' if s['quick'] else ''} on {s['device']}: {s['dtype']}, batch {s['batch_size']}, "
        f"{s['image_size']}x{s['image_size']} images, {s['memory_format']}, repeats {s['repeats']} "
        f"(x {s['iters']} steps each, after {s['warmup']} warm-up steps), torch.compile "
        f"{'on' if s['compile'] else 'off'}",
    ]
    for note in report["notes"]:
        lines.append(f"- note: {note}")
    lines += ["", "## Targets", "", "| check | measured | target | met |", "|---|---|---|---|"]
    for row in report["headline"]:
        met = {True: "yes", False: "**no**", None: "not measured"}[row["met"]]
        digits = 3 if row["value"] is None or row["value"] < 10 else 1  # 1.001x is not "1.00x"
        lines.append(f"| {row['check']} | {fmt(row['value'], digits)}x{spread_text(row.get('spread'), digits)} | "
                     f"{row['comparison']} {row['target']:.2f}x | {met} |")

    records = report["models"]
    by_key = {(r["depth"], r["att_type"], r["impl"], r["mode"]): r for r in records}
    lines += ["", "## Our models vs their peers (train step)", "",
              "ratio = our step time / the peer's (below 1: ours is faster).", "",
              "| depth | attention | mode | ratio | ours ms | peer ms | ours img/s | peer img/s | ours params | "
              "peer params | ours peak MiB | peer peak MiB | peer |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    missing = {(gap["depth"], gap["att_type"]): gap for gap in report["missing_peers"]}
    versus = {(r["depth"], r["att_type"], r["mode"]): r for r in report["ratios"]["ours_vs_peer"]}
    for ours in (r for r in records if r["impl"] == "ours"):
        peer = by_key.get((ours["depth"], ours["att_type"], "peer", ours["mode"]))
        if peer is None:
            gap = missing.get((ours["depth"], ours["att_type"]), {"reason": "no peer"})
            peer = {"median_step_seconds": None, "images_per_second": None, "params": None, "peak_memory_mb": None,
                    "name": gap["reason"]}
        paired = versus.get((ours["depth"], ours["att_type"], ours["mode"]), {"ratio": None, "spread": None})
        lines.append(
            f"| {ours['depth']} | {ours['att_type']} | {ours['mode']} | {fmt(paired['ratio'], 3)}"
            f"{spread_text(paired['spread'], 3)} | "
            f"{ms(ours['median_step_seconds'])} | {ms(peer['median_step_seconds'])} | "
            f"{fmt(ours['images_per_second'], 1)} | {fmt(peer['images_per_second'], 1)} | {thousands(ours['params'])} | "
            f"{thousands(peer['params'])} | {fmt(ours['peak_memory_mb'], 0)} | {fmt(peer['peak_memory_mb'], 0)} | "
            f"{peer['name']} |")
    memory_methods = sorted({r["memory_method"] for r in records})
    lines += ["", "Peak memory: " + "; ".join(memory_methods) + "."]

    lines += ["", "## Attention overhead (our models)", "",
              "ratio = our step time with the block / our plain ResNet of the same depth.", "",
              "| depth | attention | mode | ratio | with ms | plain ms |", "|---|---|---|---|---|---|"]
    for row in report["ratios"]["attention_overhead"]:
        lines.append(f"| {row['depth']} | {row['att_type']} | {row['mode']} | {row['ratio']:.3f}"
                     f"{spread_text(row.get('spread'), 3)} | "
                     f"{row['with_seconds'] * 1e3:.1f} | {row['plain_seconds'] * 1e3:.1f} |")

    data = report["data"]
    lines += ["", "## Data path", ""]
    if "skipped" in data:
        lines.append(f"Skipped: {data['skipped']}.")
    else:
        lines += [
            f"Batches of {data['batch_size']} CIFAR-sized uint8 images ({data['images_per_pass']} per pass, random crop "
            f"with padding 4 + flip{' + ' + data['aug_policy'] + ' (2 ops, magnitude 9)' if data.get('aug_policy') else ''}"
            f" + normalize), delivered on {s['device']}; per-image pipeline with "
            f"{data['workers']} DataLoader workers"
            f"{': torchvision ' + data['per_image']['name'].split('/')[2] + ' per image' if data.get('aug_policy') else ''}.",
            *([f"The policy makes both paths do more per image; the {TARGETS_DATA_NOTE}"] if data.get("aug_policy")
              else []), "",
            "| ratio | device loader img/s | per-image pipeline img/s |", "|---|---|---|",
            f"| {data['ratio']:.1f}x{spread_text(data.get('spread'), 1)} | "
            f"{data['device_loader']['images_per_second']:,.0f} | "
            f"{data['per_image']['images_per_second']:,.0f} |"]

    lines += fused_markdown(report)
    trainer = report["trainer"]
    lines += ["", "## Trainer vs bare loop", ""]
    if "skipped" in trainer:
        lines.append(f"Skipped: {trainer['skipped']}.")
    else:
        lines += [
            f"{trainer['model']} on {trainer['image_size']}x{trainer['image_size']} images, batch "
            f"{trainer['batch_size']}, {trainer['batches_per_epoch']} batches per epoch from {trainer['loader']}, eager. "
            "ratio = Trainer images/s / bare loop images/s (1.00: no framework overhead).", "",
            "| ratio | Trainer img/s | bare loop img/s |", "|---|---|---|",
            f"| {trainer['ratio']:.3f}{spread_text(trainer.get('spread'), 3)} | "
            f"{trainer['trainer']['images_per_second']:,.1f} | "
            f"{trainer['bare_loop']['images_per_second']:,.1f} |"]
        if trainer.get("profiles"):
            lines += ["", "One epoch of each under torch.profiler (op tables, device and host time): "
                      + ", ".join(f"`{name}`" for name in trainer["profiles"]) + " in the --profile-trainer folder."]

    lines += ["", "## How the peers differ", ""] + [f"- {note}" for note in PEER_NOTES]
    for gap in report["missing_peers"]:
        if gap["att_type"] != "BAM":
            lines.append(f"- ResNet-{gap['depth']} {gap['att_type']}: no peer, {gap['reason']}.")
    lines += ["", "## How to run", "", "```bash", "pip install -e '.[bench]'   # timm, for the SE and CBAM peers",
              "python scripts/benchmark.py                 # CPU suite: rewrites docs/benchmarks.md and .json",
              "python scripts/benchmark.py --suite gpu --output-md docs/benchmarks_gpu.md \\",
              "    --output-json docs/benchmarks_gpu.json    # CUDA: 224x224, batch 256, bf16, channels_last, compiled",
              "python scripts/benchmark.py --suite gpu --sections fused --output-md docs/benchmarks_fused.md \\",
              "    --output-json docs/benchmarks_fused.json  # SE and CBAM ResNet-50 with model.fused false and true",
              "python scripts/benchmark.py --help           # sizes, depths, repeats, --no-compile, --sections", "```"]
    return "\n".join(lines) + "\n"


def fused_markdown(report: dict) -> list[str]:
    """The fused section's table, or why it was not measured (nothing for a report from before the section)."""
    fused = report.get("fused")
    if fused is None:
        return []
    lines = ["", "## Fused kernels (model.fused)", ""]
    if "skipped" in fused:
        return lines + [f"Skipped: {fused['skipped']}."]
    lines += [f"Our ResNet-{fused['depth']} train step ({fused['mode']}), same input and settings as above; "
              "overhead = step time with the block / without; speedup = the block's eager step time / its fused "
              "step time.", "",
              *(["The kernels ran in Triton's interpreter (TRITON_INTERPRET=1): their times measure nothing.", ""]
                if fused.get("interpreted") else []),
              "| attention | model.fused | overhead | speedup | step ms | img/s |", "|---|---|---|---|---|---|"]
    plain = fused["contenders"]["none"]
    lines.append(f"| none | — | 1.000 | — | {ms(plain['median_step_seconds'])} | "
                 f"{fmt(plain['images_per_second'], 1)} |")
    for row in report["ratios"]["fused"]:
        record = fused["contenders"][fused_key(row["att_type"], row["fused"])]
        speedup = (f"{fmt(row['speedup'], 3)}x{spread_text(row.get('speedup_spread'), 3)}" if row["fused"] else "—")
        lines.append(f"| {row['att_type']} | {str(row['fused']).lower()} | {fmt(row['ratio'], 3)}"
                     f"{spread_text(row.get('spread'), 3)} | {speedup} | {ms(record['median_step_seconds'])} | "
                     f"{fmt(record['images_per_second'], 1)} |")
    return lines


def write_report(report: dict, output_md: Path, output_json: Path) -> None:
    """Write both reports; a section that another script keeps in the Markdown file stays, before "## Trainer"."""
    text = markdown(report)
    start, end = KEPT_SECTION
    old = output_md.read_text() if output_md.is_file() else ""
    if start in old and end in old:
        kept = old[old.index(start):old.index(end) + len(end)]
        anchor = text.find("## Trainer vs bare loop")
        text = text[:anchor] + kept + "\n\n" + text[anchor:] if anchor >= 0 else text.rstrip("\n") + "\n\n" + kept + "\n"
    for path, content in ((output_json, json.dumps(report, indent=1) + "\n"), (output_md, text)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
