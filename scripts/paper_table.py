#!/usr/bin/env python
"""Build a paper-style table from a sweep's results.json files, beside the published numbers.

The command lives in ``attn_resnet.commands.table`` (also ``attn-resnet table``); see its --help.
"""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # this checkout's package, also where another copy is installed
    sys.path.insert(0, str(REPO))

from attn_resnet.commands.table import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
