#!/usr/bin/env python
"""Speed benchmark: our attention ResNets beside torchvision/timm peers, the data path and the trainer.

    python scripts/benchmark.py                   # CPU suite -> docs/benchmarks.md and docs/benchmarks.json
    python scripts/benchmark.py --help            # what each suite times, every option

The suites, statistics and reports live in ``attn_resnet.benchmarks`` (its ``cli`` is this command line).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere, without installing the package
    sys.path.insert(0, str(REPO))

from attn_resnet.benchmarks.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
