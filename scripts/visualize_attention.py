#!/usr/bin/env python
"""Attention maps of a trained model on your own images, beside Grad-CAM, as PNG figures.

The command lives in ``attn_resnet.commands.visualize`` (also ``attn-resnet visualize``); see its --help.
"""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # this checkout's package, also where another copy is installed
    sys.path.insert(0, str(REPO))

from attn_resnet.commands.visualize import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
