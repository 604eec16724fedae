#!/usr/bin/env python
"""Top-k class predictions of a trained model on image files and folders.

The command lives in ``attn_resnet.commands.predict`` (also ``attn-resnet predict``); see its --help.
"""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # this checkout's package, also where another copy is installed
    sys.path.insert(0, str(REPO))

from attn_resnet.commands.predict import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
