#!/usr/bin/env python
"""Export a trained model to ONNX, TorchScript or safetensors, checked against PyTorch before it is kept.

The command lives in ``attn_resnet.commands.export`` (also ``attn-resnet export``); see its --help.
"""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # this checkout's package, also where another copy is installed
    sys.path.insert(0, str(REPO))

from attn_resnet.commands.export import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
