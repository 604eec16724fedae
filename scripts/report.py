#!/usr/bin/env python
"""Write a sweep's report: one self-contained HTML page with the table, the figures and every run's state.

The command lives in ``attn_resnet.commands.report`` (also ``attn-resnet report``); see its --help.
"""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # this checkout's package, also where another copy is installed
    sys.path.insert(0, str(REPO))

from attn_resnet.commands.report import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
