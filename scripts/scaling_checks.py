"""The measured inputs of docs/scaling.md that this machine can give: the ImageNet data path per CPU core, a gloo
all-reduce of ResNet-50's gradients, a ResNet-50 training step in one process against DistributedDataParallel in
two (the scaling model's check), and the time to write a ResNet-50 training checkpoint.

    python scripts/scaling_checks.py                   # writes docs/scaling_checks.json and prints it

Each figure is timed over several repeats after a warm-up; the report keeps every repeat, their median and their
minimum (the least disturbed by other processes on a shared machine), and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from attn_resnet.engine.checkpoint import save_atomic  # noqa: E402
from attn_resnet.models import ResidualNet  # noqa: E402


def _resnet50() -> torch.nn.Module:
    return ResidualNet("ImageNet", 50, 1000, "none")


def _median_seconds(work, repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        work()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return times


def data_path(workers: int, images: int, repeats: int) -> dict:
    """images/s of the per-image ImageNet pipeline (JPEG decode, RandomResizedCrop 224, flip) with ``workers``
    loader processes, from scripts/benchmark_imagenet_data.py (its uint8-items contender: the default path)."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "data.json"
        subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark_imagenet_data.py"), "--images", str(images),
                        "--workers", str(workers), "--repeats", str(repeats), "--output-json", str(out),
                        "--output-md", str(Path(folder) / "data.md")], check=True, capture_output=True, text=True)
        report = json.loads(out.read_text())
    return {"workers": workers, "images": images,
            "images_per_second": {name: result["images_per_second"] for name, result in report["results"].items()}}


def _worker(rank: int, world_size: int, init_file: str, task: str, options: dict, queue) -> None:
    torch.set_num_threads(options["threads"])
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=600))
    try:
        if task == "allreduce":
            tensor = torch.ones(options["numel"])
            times = _median_seconds(lambda: dist.all_reduce(tensor), options["repeats"])
        else:
            torch.manual_seed(0)
            model = torch.nn.parallel.DistributedDataParallel(_resnet50())
            times = _step_times(model, options)
        queue.put((rank, times))
    finally:
        dist.destroy_process_group()


def _step_times(model: torch.nn.Module, options: dict) -> list[float]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(options["batch"], 3, options["size"], options["size"])
    targets = torch.randint(0, 1000, (options["batch"],))

    def step():
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), targets).backward()
        optimizer.step()

    return _median_seconds(step, options["repeats"])


def _in_processes(world_size: int, task: str, options: dict) -> list[float]:
    """Each repeat's time, the slowest rank's, over ``world_size`` gloo processes."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    with tempfile.TemporaryDirectory() as folder:
        processes = [context.Process(target=_worker, args=(rank, world_size, f"{folder}/init", task, options, queue))
                     for rank in range(world_size)]
        for process in processes:
            process.start()
        received = [queue.get(timeout=1800) for _ in processes]
        for process in processes:
            process.join(timeout=60)
    return [max(times) for times in zip(*(times for _, times in received))]


def checkpoint_write(repeats: int) -> dict:
    """Seconds to write a ResNet-50 training checkpoint (weights and SGD momentum) with the trainer's atomic write
    (temp file, fsync, rename), on the disk holding the system's temp folder."""
    model = _resnet50()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()  # creates the momentum buffers
    payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "last.pt"
        times = _median_seconds(lambda: save_atomic(payload, path), repeats)
        size = path.stat().st_size
    return {"bytes": size, "seconds": times, "median_seconds": statistics.median(times), "min_seconds": min(times),
            "megabytes_per_second": size / 1e6 / statistics.median(times)}


def _workers_of(launcher_pid: int) -> list[int]:
    """The pids of the training processes torchrun started (its children running train.py)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_text(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if parent == launcher_pid and "train.py" in command:
            found.append(int(entry.name))
    return found


def stop_time(size: int, wait_s: float = 5.0) -> dict:
    """Seconds from USR2 to a 2-process ResNet-50 run's exit (trainer.stop_signals, default log_every_steps): the
    lead time a scheduler's --signal must give. USR2 goes to both ranks ``wait_s`` into training, as Slurm sends it
    to every process of a job step; the run logs the time itself (train.log, results.json's attempts)."""
    import re
    import signal

    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder) / "run"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                   str(ROOT / "train.py"), "data=synthetic", "data.stem=imagenet", f"data.image_size={size}",
                   "data.train_size=4096", "data.val_size=16", "data.batch_size=8", "model.depth=50",
                   "trainer.device=cpu", "trainer.progress=false", "trainer.attention_maps_every=0",
                   f"hydra.run.dir={run}"]
        process = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log = run / "train.log"
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not (log.is_file() and "Recipe:" in log.read_text()):
            time.sleep(0.1)
        time.sleep(wait_s)
        for pid in _workers_of(process.pid):
            os.kill(pid, signal.SIGUSR2)
        sent = time.monotonic()
        process.wait(timeout=600)
        exited = time.monotonic() - sent
        logged = re.search(r"Signal to exit: ([\d.]+) s \(signal to checkpoint written: ([\d.]+) s\)", log.read_text())
        attempt = json.loads((run / "results.json").read_text())["attempts"][0]
        steps = re.search(r"Stop requested \(SIGUSR2\): checkpoints/last.pt written (.*) \(optimizer", log.read_text())
    return {"model": "ResidualNet('ImageNet', 50, 10), 2 processes (gloo), batch 8 each, "
                     f"{size}x{size}, trainer.log_every_steps=20", "stopped": steps.group(1) if steps else None,
            "signal_to_checkpoint_seconds": attempt.get("stop_seconds"),
            "signal_to_exit_seconds_logged": float(logged.group(1)) if logged else None,
            "signal_to_launcher_exit_seconds": exited}


# Published figures the model uses, with their sources (docs/scaling.md cites them again).
IMAGENET_TRAIN_IMAGES = 1_281_167  # ILSVRC-2012 training set (Russakovsky et al., IJCV 2015)
DGX_H200_CORES_PER_GPU = 112 / 8   # NVIDIA DGX H200 datasheet: 2x Xeon Platinum 8480C, 112 cores, 8 GPUs
NVLINK_GB_PER_S = 450              # NVIDIA H200 product page: NVLink 900 GB/s, both directions together
INFINIBAND_GB_PER_S = 400 / 8      # DGX H200 datasheet: one 400 Gb/s ConnectX-7 port per GPU
ETHERNET_GB_PER_S = 100 / 8 / 8    # a 100 Gb/s Ethernet port per node, shared by its 8 GPUs


def scaling_model(report: dict, gpu_json: Path, epochs: int = 90, batch_per_gpu: int = 256) -> dict:
    """Wall-clock of ``epochs`` ImageNet epochs on 1, 8, 16 and 64 H200s for the recorded ResNet-50 rows.

    Per GPU, a step takes the longer of the GPU's step (the recorded images/s) and the data path's time for the
    batch (the per-core images/s measured here times the cores a DGX H200 has per GPU), plus the gradient
    all-reduce when none of it overlaps the backward (an upper bound; DDP overlaps most of it): a ring all-reduce
    moves 2 (n - 1) / n of the gradients through each GPU's slowest link. Two checkpoints a epoch are added.
    """
    gpu = json.loads(gpu_json.read_text())
    rates = {model["att_type"]: model["images_per_second"] for model in gpu["models"]
             if model["name"].startswith("ResidualNet") and model["mode"] == "eager"}
    # Per core: the run with as many loader workers as cores (the main process shares them), divided by the cores.
    busy = max(report["data_path"], key=lambda entry: entry["workers"])
    per_core = {path: busy["images_per_second"][key] / report["machine"]["cores"]
                for path, key in (("workers", "workers_uint8_items"), ("dali_cpu", "dali"))}
    data_rates = {path: rate * DGX_H200_CORES_PER_GPU for path, rate in per_core.items()}
    gradient_bytes = report["allreduce"]["bytes"]
    checkpoint_seconds = 2 * report["checkpoint_write"]["median_seconds"] * epochs
    setups = {1: None, 8: NVLINK_GB_PER_S, 16: INFINIBAND_GB_PER_S, 64: INFINIBAND_GB_PER_S}
    rows = []
    for att_type, rate in rates.items():
        for path, data_rate in data_rates.items():
            for gpus, bandwidth in setups.items():
                compute = batch_per_gpu / rate
                data = batch_per_gpu / data_rate
                allreduce = 0.0 if bandwidth is None else 2 * (gpus - 1) / gpus * gradient_bytes / (bandwidth * 1e9)
                step = max(compute, data) + allreduce
                images_per_second = gpus * batch_per_gpu / step
                hours = (epochs * IMAGENET_TRAIN_IMAGES / images_per_second + checkpoint_seconds) / 3600
                rows.append({"att_type": att_type, "data_path": path, "gpus": gpus, "gpu_step_ms": 1e3 * compute,
                             "data_ms": 1e3 * data, "allreduce_ms": 1e3 * allreduce,
                             "images_per_second": images_per_second, "hours": hours,
                             "bound": "data" if data > compute else "GPU"})
    return {"epochs": epochs, "batch_per_gpu": batch_per_gpu, "gpu_images_per_second": rates,
            "data_images_per_second_per_core": per_core, "data_images_per_second_per_gpu": data_rates,
            "checkpoint_seconds": checkpoint_seconds,
            "ethernet_allreduce_ms_16_gpus": 1e3 * 2 * (16 - 1) / 16 * gradient_bytes / (ETHERNET_GB_PER_S * 1e9),
            "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=256, help="JPEGs of the data path benchmark")
    parser.add_argument("--batch", type=int, default=16, help="global batch of the training step check")
    parser.add_argument("--size", type=int, default=64, help="image size of the training step check")
    parser.add_argument("--output-json", type=Path, default=ROOT / "docs" / "scaling_checks.json")
    parser.add_argument("--model-only", action="store_true",
                        help="measure nothing: recompute the model from the measurements in --output-json")
    parser.add_argument("--stop-only", action="store_true",
                        help="measure only the stop's lead time, into the measurements in --output-json")
    args = parser.parse_args(argv)
    if args.stop_only:
        report = json.loads(args.output_json.read_text())
        before = list(os.getloadavg())
        report["stop"] = {**stop_time(args.size), "date": time.strftime("%Y-%m-%d"), "load_average_before": before,
                          "load_average_after": list(os.getloadavg())}
        args.output_json.write_text(json.dumps(report, indent=1) + "\n")
        print(json.dumps(report["stop"], indent=1))
        return 0
    if args.model_only:
        report = json.loads(args.output_json.read_text())
        report["model"] = scaling_model(report, ROOT / "docs" / "benchmarks_gpu.json")
        args.output_json.write_text(json.dumps(report, indent=1) + "\n")
        print(json.dumps(report["model"], indent=1))
        return 0
    numel = sum(p.numel() for p in _resnet50().parameters())
    report: dict = {"date": time.strftime("%Y-%m-%d"), "command": "python scripts/scaling_checks.py "
                    + " ".join(argv if argv is not None else sys.argv[1:]),
                    "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                                "load_average_before": list(os.getloadavg())},
                    "torch": str(torch.__version__)}
    report["data_path"] = [data_path(workers, args.images, 3) for workers in (1, 2)]
    repeats = args.repeats
    allreduce = _in_processes(2, "allreduce", {"numel": numel, "repeats": repeats, "threads": 1})
    report["allreduce"] = {"processes": 2, "backend": "gloo", "elements": numel, "bytes": 4 * numel,
                           "seconds": allreduce, "median_seconds": statistics.median(allreduce),
                           "min_seconds": min(allreduce),
                           # a ring all-reduce moves 2 (n - 1) / n of the buffer through each process's link
                           "bus_gigabytes_per_second": 4 * numel / 1e9 / statistics.median(allreduce)}
    step = {"model": "ResidualNet('ImageNet', 50, 1000, 'none'), SGD momentum, fp32", "image_size": args.size,
            "global_batch": args.batch}
    torch.manual_seed(0)
    for name, threads, batch in (("one_process_two_threads", 2, args.batch),
                                 ("one_process_one_thread_half_batch", 1, args.batch // 2)):
        torch.set_num_threads(threads)
        times = _step_times(_resnet50(), {"batch": batch, "size": args.size, "repeats": repeats})
        step[name] = {"threads": threads, "batch": batch, "seconds": times, "median_seconds": statistics.median(times),
                      "min_seconds": min(times)}
    times = _in_processes(2, "ddp", {"batch": args.batch // 2, "size": args.size, "repeats": repeats, "threads": 1})
    step["ddp_two_processes_one_thread_each"] = {"batch_per_process": args.batch // 2, "seconds": times,
                                                 "median_seconds": statistics.median(times), "min_seconds": min(times)}
    # The scaling model's prediction for two processes: each rank's compute on its half batch, plus the whole
    # all-reduce when nothing of it overlaps the backward (an upper bound), or none of it (a lower bound).
    for statistic in ("median_seconds", "min_seconds"):
        compute = step["one_process_one_thread_half_batch"][statistic]
        step[f"predicted_ddp_{statistic}"] = {"no_overlap": compute + report["allreduce"][statistic],
                                              "full_overlap": compute}
    report["train_step"] = step
    report["checkpoint_write"] = checkpoint_write(repeats)
    report["stop"] = stop_time(args.size)
    report["machine"]["load_average_after"] = list(os.getloadavg())
    report["model"] = scaling_model(report, ROOT / "docs" / "benchmarks_gpu.json")
    args.output_json.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
