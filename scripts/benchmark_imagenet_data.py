"""Images/s of the ImageNet data path: DataLoader workers (float items vs uint8 items normalized on
the device) and NVIDIA DALI, on a generated folder of ImageNet-sized JPEGs.

    python scripts/benchmark_imagenet_data.py                     # this machine's CPU
    python scripts/benchmark_imagenet_data.py --device cuda       # on a GPU (DALI decodes with nvJPEG)

Batches are delivered on the device, normalized, as the training loop receives them. Each
contender makes full passes over the same files, in alternating turns after a warm-up pass
(page cache warm for everyone); the median pass gives images/s. The report is written into
docs/benchmarks.md between its "imagenet-data" markers and to docs/benchmarks_imagenet_data.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from attn_resnet.benchmarks.render import KEPT_SECTION  # noqa: E402
from attn_resnet.data import available_cores, build_prefetched_loader, build_splits  # noqa: E402
from attn_resnet.data.dali import DaliImageLoader  # noqa: E402
from attn_resnet.optional import dali_available  # noqa: E402
from attn_resnet.data.device import DevicePrefetcher  # noqa: E402
from attn_resnet.data.loader import build_loader  # noqa: E402

START, END = KEPT_SECTION  # scripts/benchmark.py keeps this section when it rewrites the file


def write_jpegs(root: Path, count: int, classes: int = 8, seed: int = 0) -> int:
    """``count`` JPEGs of ImageNet's typical size (500x375 or 375x500), smooth noise (about 60-120 KB each)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    total = 0
    for index in range(count):
        folder = root / "train" / f"n{index % classes:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        height, width = (375, 500) if index % 3 else (500, 375)
        coarse = rng.integers(0, 256, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
        noise = rng.integers(-12, 13, size=(height, width, 3))
        pixels = np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
        path = folder / f"{index:06d}.JPEG"
        Image.fromarray(pixels).save(path, quality=90)
        total += path.stat().st_size
    val = root / "val"
    for folder in (root / "train").iterdir():  # the val split is the same files (only train is timed)
        (val / folder.name).mkdir(parents=True, exist_ok=True)
        first = sorted(folder.iterdir())[0]
        (val / folder.name / first.name).write_bytes(first.read_bytes())
    return total


def contenders(train_set, batch_size: int, device: torch.device, workers: int, threads: int):
    def float_items():
        loader = build_loader(train_set, batch_size, True, 0, workers, device.type == "cuda", True)
        return DevicePrefetcher(loader, device)  # float32 items crossing from the workers: the old path

    def uint8_items():
        return build_prefetched_loader(train_set, batch_size, True, 0, device, num_workers=workers,
                                       pin_memory=device.type == "cuda", persistent_workers=True)

    made = {"workers_float32_items": float_items(), "workers_uint8_items": uint8_items()}
    if dali_available():
        made["dali"] = DaliImageLoader(train_set, batch_size, True, 0, device, num_threads=threads)
    return made


def one_pass(loader, epoch: int, device: torch.device) -> tuple[int, float]:
    loader.batch_sampler.set_epoch(epoch)
    started = time.perf_counter()
    count = 0
    for images, targets in loader:
        count += targets.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return count, time.perf_counter() - started


def markdown(report: dict) -> str:
    machine = report["machine"]
    lines = [START, "", "### ImageNet data path (train transform: RandomResizedCrop 224 + flip + normalize)", "",
             f"Measured {report['date']} with `{report['command']}` on {machine['device']} "
             f"({machine['cpu']}, {machine['cores']} cores; torch {report['torch']}, DALI "
             f"{report['dali'] or 'not installed'}); {report['images']} generated JPEGs of 500x375 "
             f"({report['megabytes']:.1f} MB), batch {report['batch_size']}, {report['workers']} loader workers / "
             f"{report['threads']} DALI threads, median of {report['repeats']} passes after a warm-up pass. "
             f"Ratios are against the uint8 workers path (the default).", "",
             "| data path | images/s | ratio |", "|---|---:|---:|"]
    base = report["results"]["workers_uint8_items"]["images_per_second"]
    names = {"workers_float32_items": "DataLoader workers, float32 items (torchvision ToTensor + Normalize)",
             "workers_uint8_items": "DataLoader workers, uint8 items, normalized on the device (default)",
             "dali": "DALI (`data.loader=dali`)"}
    for key, result in report["results"].items():
        lines.append(f"| {names[key]} | {result['images_per_second']:,.0f} | "
                     f"{result['images_per_second'] / base:.2f}x |")
    if report.get("note"):
        lines += ["", report["note"]]
    return "\n".join(lines + ["", END])


def write_report(report: dict, md: Path, js: Path) -> None:
    js.write_text(json.dumps(report, indent=2) + "\n")
    section = markdown(report)
    text = md.read_text() if md.is_file() else "# Benchmarks\n"
    if START in text and END in text:
        text = text[:text.index(START)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    md.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="default: the available cores (at most 8)")
    parser.add_argument("--output-md", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--output-json", type=Path, default=ROOT / "docs" / "benchmarks_imagenet_data.json")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cores = available_cores()
    workers = args.workers if args.workers is not None else min(cores, 8)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        size = write_jpegs(root, args.images)
        train_set = build_splits("imagefolder", root=str(root), image_size=224).train
        loaders = contenders(train_set, args.batch_size, device, workers, max(1, min(cores, 8)))
        for name, loader in loaders.items():  # warm-up: page cache, worker start, pipeline build
            print(f"warm-up {name}", flush=True)
            one_pass(loader, 0, device)
        seconds: dict[str, list[float]] = {name: [] for name in loaders}
        counts: dict[str, int] = {}
        for repeat in range(args.repeats):
            order = list(loaders) if repeat % 2 == 0 else list(reversed(loaders))
            for name in order:
                counts[name], elapsed = one_pass(loaders[name], repeat + 1, device)
                seconds[name].append(elapsed)
                print(f"{name}: {counts[name] / elapsed:,.0f} images/s", flush=True)
        del loaders
    results = {name: {"images": counts[name], "seconds": values,
                      "images_per_second": counts[name] / statistics.median(values)}
               for name, values in seconds.items()}
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine()) if Path("/proc/cpuinfo").is_file() else ""
    dali_version = None
    if dali_available():
        import nvidia.dali

        dali_version = nvidia.dali.__version__
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "command": "python scripts/benchmark_imagenet_data.py" + (" " + " ".join(argv or sys.argv[1:])).rstrip(),
        "machine": {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU only",
                    "cpu": cpu, "cores": cores, "load_average": list(os.getloadavg())},
        "torch": torch.__version__, "dali": dali_version, "images": args.images, "megabytes": size / 2**20,
        "batch_size": args.batch_size, "workers": workers, "threads": max(1, min(cores, 8)),
        "repeats": args.repeats, "results": results,
        "note": None if dali_version else "DALI is not installed here: `pip install -e \".[dali]\"` adds it.",
    }
    write_report(report, args.output_md, args.output_json)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
