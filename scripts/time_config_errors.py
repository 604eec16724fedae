#!/usr/bin/env python
"""Measure how fast train.py rejects bad or unknown config values, and that no run folder is left.

    python scripts/time_config_errors.py [--repeats 3] [--output docs/results/config_errors.md]

Each command runs in a fresh process (Python start and imports included), like a user's.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BAD = [
    "model.depth=42",
    "model.att_type=XYZ",
    "+model.att=CBAM",
    "trainer.precision=fp8",
    "optim.name=lion",
    "data.batch_size=0",
    "trainer.epochs=2.5",
    "+trainer.epoch=3",
    "data.num_workers=-1",
    "trainer.resume=/no/such/checkpoint.pt",
    # a block or callback of one's own whose module is not installed: found missing without importing anything
    "model.att_type=mygates.attention:MyGate",
    "+callbacks.log._target_=mygates.callbacks.StepLog",
    # refused by Hydra before composing; the command-line check answers first
    "trainer.mixup=0.2",
    "optim=adamm",
    "data=cifar",
]


def measure(override: str, repeats: int) -> tuple[float, int, bool, str]:
    times, code, left = [], 0, False
    last_line = ""
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = Path(tmp) / "run"
            started = time.perf_counter()
            result = subprocess.run([sys.executable, "train.py", override, f"hydra.run.dir={run_dir}"], cwd=REPO,
                                    capture_output=True, text=True)
            times.append(time.perf_counter() - started)
            code, left = result.returncode, left or run_dir.exists()
            last_line = (result.stderr.strip().splitlines() or [""])[-1]
    return statistics.median(times), code, left, last_line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    rows, ok = [], True
    for override in BAD:
        seconds, code, left, line = measure(override, args.repeats)
        ok &= code == 1 and not left and seconds < 2.0
        rows.append(f"| `{override}` | {seconds:.2f} | {code} | {'yes' if left else 'no'} | {line[:90]} |")
        print(rows[-1], flush=True)
    header = [
        "# How fast a bad config fails",
        "",
        f"`python scripts/time_config_errors.py --repeats {args.repeats}`: median wall time of "
        f"`python train.py <override> hydra.run.dir=<tmp>` over {args.repeats} fresh processes (Python start and "
        f"imports included); {platform.machine()} CPU, {os.cpu_count()} cores, Python {platform.python_version()}.",
        "",
        "| override | seconds (median) | exit status | run folder left | first words of the error |",
        "|---|---|---|---|---|",
    ]
    text = "\n".join(header + rows) + f"\n\nAll under 2 s, exit 1, no folder: {'yes' if ok else 'NO'}\n"
    if args.output:
        args.output.write_text(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
