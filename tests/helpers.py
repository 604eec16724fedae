"""Shared helpers for the training tests: config composition, tiny on-disk data sets, subprocesses."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir

import attn_resnet.config.resolvers  # noqa: F401 - the config files use ${att_name:} and ${unique:}

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

# Small, fast settings for runs in tests: synthetic 8x8 images, ResNet-18, 1 epoch.
FAST = [
    "data=synthetic",
    "data.image_size=8",
    "data.train_size=48",
    "data.val_size=16",
    "data.batch_size=8",
    "trainer.epochs=1",
    "trainer.progress=false",
    "trainer.deterministic=true",
]


def compose_train(overrides: list[str], config_name: str = "train", return_hydra_config: bool = False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides, return_hydra_config=return_hydra_config)


def build_datasets(name: str, **options):
    """``(train_set, official val/test set, info)`` of ``build_splits``, without the held-out split."""
    from attn_resnet.data import build_splits

    splits = build_splits(name, **options)
    return splits.train, splits.test, splits.info


def launch_env() -> dict:
    """This environment for a child launch: no inherited rank or run stamp, one thread per process."""
    inherited = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                 "ATTN_RESNET_RUN_STAMP")
    env = {key: value for key, value in os.environ.items() if key not in inherited}
    return {**env, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}


def kill_mid_epoch(process: subprocess.Popen, run_dir: Path, epoch: int, batch: int, timeout: float = 240) -> dict:
    """SIGKILL the training ``process`` once its ``checkpoints/last.pt`` is at (0-based) ``epoch`` and at least
    ``batch`` batches in; the checkpoint it was killed at. Fails the test when the run ends first."""
    import signal
    import time

    from attn_resnet.engine.checkpoint import load_training_checkpoint
    from attn_resnet.models.official import CheckpointError

    last = run_dir / "checkpoints" / "last.pt"
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if last.is_file():
            try:
                state = load_training_checkpoint(last)
            except CheckpointError:  # caught mid-write: read it again
                continue
            if state["epoch"] == epoch and state["batch_in_epoch"] >= batch:
                process.send_signal(signal.SIGKILL)
                process.wait()
                return state
        time.sleep(0.05)
    raise AssertionError("the run finished before it could be killed")


def descendants(pid: int) -> list[int]:
    """The process ids of ``pid``'s children, their children and so on (read from /proc)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if parent == pid:
                children.append(int(entry.name))
    return children + [grandchild for child in children for grandchild in descendants(child)]


def run_script(script: str, args: list[str], timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, script, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env, **kwargs)


def pattern_images(labels: np.ndarray, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """Images whose mean colour depends on the class, plus noise: learnable in one epoch or two."""
    palette = rng.integers(0, 256, size=(10, 3))
    base = palette[labels % 10][:, :, None, None]
    noise = rng.integers(-40, 41, size=(len(labels), 3, size, size))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def write_cifar10(root: Path, per_batch: int = 20, test: int = 40, seed: int = 0) -> Path:
    """The official cifar-10-batches-py layout with tiny batches."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
    for name in names:
        count = test if name == "test_batch" else per_batch
        labels = np.arange(count) % 10
        data = pattern_images(labels, np.random.default_rng(0)).reshape(count, 3072)
        data = np.clip(data.astype(int) + rng.integers(-5, 6, size=data.shape), 0, 255).astype(np.uint8)
        with open(folder / name, "wb") as handle:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels.tolist(), b"data": data,
                         b"filenames": [f"{i}.png".encode() for i in range(count)]}, handle)
    meta = {b"label_names": [c.encode() for c in ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                                  "horse", "ship", "truck"]], b"num_cases_per_batch": per_batch,
            b"num_vis": 3072}
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump(meta, handle)
    return root


def write_imagefolder(root: Path, classes: int = 3, per_class: int = 6, size: int = 40) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", max(2, per_class // 2))):
        for cls in range(classes):
            folder = root / split / f"class_{cls}"
            folder.mkdir(parents=True)
            labels = np.full(count, cls)
            for index, image in enumerate(pattern_images(labels, np.random.default_rng(1), size)):
                image = np.clip(image.astype(int) + rng.integers(-5, 6, size=image.shape), 0, 255).astype(np.uint8)
                Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{index}.png")
    return root


def tiny_dataset(size: int, classes: int = 4, seed: int = 0, train: bool = True):
    """Random 8x8 uint8 images in memory (labels cycle through the classes)."""
    import torch

    from attn_resnet.data.common import TensorImageDataset

    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (size, 3, 8, 8), dtype=torch.uint8, generator=generator)
    labels = torch.arange(size) % classes
    return TensorImageDataset(images, labels, [f"class_{k}" for k in range(classes)], (0.5,) * 3, (0.25,) * 3,
                              train)


def disk_with_free(monkeypatch, free: int) -> list[str]:
    """Make the run-folder code see ``free`` bytes free on every disk; returns the folders it asked about."""
    import shutil

    import attn_resnet.runfiles as runfiles

    asked = []

    def usage(path):
        asked.append(os.fspath(path))
        return shutil._ntuple_diskusage(10**12, 10**12 - free, free)

    monkeypatch.setattr(runfiles.shutil, "disk_usage", usage)
    return asked


def write_run_results(folder: Path, config: dict, overrides: list[str], status: str = "completed",
                      err1: float = 10.0, error: str = "RunTerminated: killed", **extra) -> None:
    """A results.json in ``folder`` as a training job leaves it: its config and command line, and how it ended
    (``extra``: more top-level fields, e.g. ``epochs=2, data={"train_size": 1000}``)."""
    import json

    folder.mkdir(parents=True)
    results = {"status": status, "job": {"num": None, "overrides": overrides}, "config": config}
    if status == "completed":
        results |= {"final": {"acc1": 100 - err1, "acc5": 99.0, "err1": err1, "err5": 1.0},
                    "params": 11_000_000, "gflops": 0.56}
    else:
        results["error"] = error
    (folder / "results.json").write_text(json.dumps(results | extra))


# Our parameter names -> the authors' (the inverse of attn_resnet.models.official's table), to write
# test checkpoints in the layout of their released files.
_OURS_TO_OFFICIAL = [
    (r"\.attn\.channel_gate\.mlp\.0\.", ".cbam.ChannelGate.mlp.1."),
    (r"\.attn\.channel_gate\.mlp\.2\.", ".cbam.ChannelGate.mlp.3."),
    (r"\.attn\.spatial_gate\.(conv|bn)\.", r".cbam.SpatialGate.spatial.\1."),
    (r"^stage_attn\.([012])\.", lambda m: f"bam{int(m.group(1)) + 1}."),
    (r"\.channel_gate\.fc1\.", ".channel_att.gate_c.gate_c_fc_0."),
    (r"\.channel_gate\.bn\.", ".channel_att.gate_c.gate_c_bn_1."),
    (r"\.channel_gate\.fc2\.", ".channel_att.gate_c.gate_c_fc_final."),
    (r"\.spatial_gate\.conv_reduce\.", ".spatial_att.gate_s.gate_s_conv_reduce0."),
    (r"\.spatial_gate\.bn_reduce\.", ".spatial_att.gate_s.gate_s_bn_reduce0."),
    (r"\.spatial_gate\.conv_dilated\.(\d+)\.", r".spatial_att.gate_s.gate_s_conv_di_\1."),
    (r"\.spatial_gate\.bn_dilated\.(\d+)\.", r".spatial_att.gate_s.gate_s_bn_di_\1."),
    (r"\.spatial_gate\.conv_final\.", ".spatial_att.gate_s.gate_s_conv_final."),
]


def ours_to_official(key: str) -> str:
    """The authors' name for one of our parameter keys."""
    for pattern, replacement in _OURS_TO_OFFICIAL:
        key = re.sub(pattern, replacement, key)
    return key
