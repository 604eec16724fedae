import os
import shutil
from pathlib import Path

import pytest
import torch

# Without CUDA, Triton can only run kernels in its interpreter, and it chooses the interpreter once,
# when it is first imported (importing attn_resnet imports it, through torchvision): switch it on
# here, before any test module is collected, so that tests/test_fused_kernels.py can run the fused
# kernels on the CPU. With CUDA nothing changes: the kernels stay compiled for the GPU tests.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]
# State-dict key lists of the CBAM/BAM authors' ResidualNet (names and shapes only).
REFERENCE_KEYS = Path(__file__).resolve().parent / "data"


@pytest.fixture(autouse=True)
def _isolated_torch_settings():
    """Runs in a test may switch on deterministic kernels; never let that leak into the next test."""
    # One thread per process when pytest-xdist runs several: two workers with two threads each would
    # oversubscribe a two-core machine.
    torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)
    yield
    torch.use_deterministic_algorithms(False)


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory):
    """Make folders shared by one module's tests; they are removed once that module is done.

    A training run leaves checkpoints of about 90 MB each, so keeping every module's runs to the
    end of the session would hold several GB on the test machine's disk.
    """
    made = []

    def make(name: str) -> Path:
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


def read_reference_keys(name: str) -> dict[str, tuple[int, ...]]:
    """Parse one of the official key lists: ``key (shape)`` per line, '#' comments."""
    path = REFERENCE_KEYS / name
    keys = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape = line.split(" ", 1)
        keys[key] = tuple(int(v) for v in shape.strip("() ").split(",") if v.strip())
    return keys
