"""data.loader=dali against the workers path on tiny JPEG class folders (DALI's CPU mode here, nvJPEG on GPUs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from attn_resnet.data import DataError, build_prefetched_loader, build_splits
from attn_resnet.data.imagefolder import IMAGENET_MEAN, IMAGENET_STD

from helpers import REPO, write_imagefolder

pytest.importorskip("nvidia.dali", reason="NVIDIA DALI (the dali extra) is not installed")

from attn_resnet.data.dali import DaliImageLoader  # noqa: E402

WIDTH, HEIGHT = 96, 64  # landscape originals: crops are not trivially square


def _coordinate_folder(root: Path, classes: int = 3, per_class: int = 8) -> Path:
    """JPEGs whose red channel is the x coordinate and green the y coordinate (blue: the class)."""
    from PIL import Image

    x = np.linspace(0, 255, WIDTH)[None, :].repeat(HEIGHT, 0)
    y = np.linspace(0, 255, HEIGHT)[:, None].repeat(WIDTH, 1)
    for split in ("train", "val"):
        for cls in range(classes):
            folder = root / split / f"class_{cls}"
            folder.mkdir(parents=True)
            for index in range(per_class):
                blue = np.full_like(x, 40 + 80 * cls + index)
                image = np.stack([x, y, blue], axis=-1).round().astype(np.uint8)
                Image.fromarray(image).save(folder / f"{index}.JPEG", quality=100, subsampling=0)
    return root


def _pixels(images: torch.Tensor) -> torch.Tensor:
    """Normalized (N, 3, H, W) back to 0-255 values."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
    return images.float() * std + mean


def _crop_statistics(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Area fraction, pixel aspect ratio (w/h) and mirrored flag of each crop of a coordinate image."""
    pixels = _pixels(images)
    red, green = pixels[:, 0], pixels[:, 1]
    left, right = red[:, :, 0].mean(1), red[:, :, -1].mean(1)
    top, bottom = green[:, 0, :].mean(1), green[:, -1, :].mean(1)
    width = (right - left).abs() / 255 * (WIDTH - 1) + 1
    height = (bottom - top).abs() / 255 * (HEIGHT - 1) + 1
    area = (width * height / (WIDTH * HEIGHT)).numpy()
    return area, (width / height).numpy(), (right < left).numpy()


def _batches(loader, epochs: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for epoch in range(epochs):
        loader.batch_sampler.set_epoch(epoch)
        for batch_images, batch_labels in loader:
            images.append(batch_images)
            labels.append(batch_labels)
    return torch.cat(images), torch.cat(labels)


@pytest.fixture(scope="module")
def splits(module_tmp):
    root = _coordinate_folder(module_tmp("coords"))
    return build_splits("imagefolder", root=str(root), image_size=32)


def test_dali_val_batches_match_the_workers_path(splits):
    cpu = torch.device("cpu")
    dali_images, dali_labels = _batches(DaliImageLoader(splits.test, batch_size=5, train=False, device=cpu))
    worker_images, worker_labels = _batches(build_prefetched_loader(splits.test, batch_size=5, train=False,
                                                                    device=cpu, num_workers=0))
    assert dali_images.shape == worker_images.shape == (len(splits.test), 3, 32, 32)
    assert dali_images.dtype == torch.float32
    assert torch.equal(dali_labels, worker_labels)  # the same order: both follow the batch sampler
    # Resize 37 + center crop 32 in both. The resamplers and the crop's rounding differ by up to
    # half a pixel: on these gradients (about 5 levels per pixel) that is a few levels.
    difference = (_pixels(dali_images) - _pixels(worker_images)).abs()
    assert difference.mean() < 5.0 and difference.max() < 16, (difference.mean(), difference.max())
    assert _pixels(dali_images).min() > -1 and _pixels(dali_images).max() < 256


def test_dali_train_crops_follow_random_resized_crop_statistics(splits):
    cpu = torch.device("cpu")
    dali_images, _ = _batches(DaliImageLoader(splits.train, batch_size=8, train=True, device=cpu, seed=3), 8)
    worker_images, _ = _batches(build_prefetched_loader(splits.train, batch_size=8, train=True, device=cpu,
                                                        num_workers=0, seed=3), 8)
    assert dali_images.shape == worker_images.shape == (192, 3, 32, 32)
    dali_area, dali_aspect, dali_flip = _crop_statistics(dali_images)
    worker_area, worker_aspect, worker_flip = _crop_statistics(worker_images)
    assert dali_area.min() > 0.06 and dali_area.max() < 1.04  # RandomResizedCrop's scale (0.08, 1)
    inside = (dali_aspect > 0.7) & (dali_aspect < 1.4)  # ratio (3/4, 4/3); a fallback crop may fall outside
    assert inside.mean() > 0.9
    assert abs(dali_area.mean() - worker_area.mean()) < 0.1, (dali_area.mean(), worker_area.mean())
    assert 0.3 < dali_flip.mean() < 0.7 and 0.3 < worker_flip.mean() < 0.7
    assert len(np.unique(dali_area.round(3))) > 50  # crops vary from image to image and epoch to epoch
    # Repeatable: the same seed and epoch give the same crops.
    again, _ = _batches(DaliImageLoader(splits.train, batch_size=8, train=True, device=cpu, seed=3), 1)
    assert torch.equal(again, dali_images[:24])


def test_dali_shards_cover_the_val_split_once_and_channels_last_holds_the_same_values(splits):
    cpu = torch.device("cpu")
    whole, labels = _batches(DaliImageLoader(splits.test, batch_size=4, train=False, device=cpu))
    shards = [DaliImageLoader(splits.test, batch_size=4, train=False, device=cpu, num_replicas=2, rank=rank)
              for rank in range(2)]
    parts = [_batches(shard) for shard in shards]
    assert sum(len(part[1]) for part in parts) == len(splits.test) == 24  # no padding duplicates
    assert sorted(torch.cat([part[1] for part in parts]).tolist()) == sorted(labels.tolist())
    last, _ = _batches(DaliImageLoader(splits.test, batch_size=4, train=False, device=cpu, channels_last=True,
                                       dtype=torch.bfloat16))
    assert last.is_contiguous(memory_format=torch.channels_last) and last.dtype == torch.bfloat16
    torch.testing.assert_close(last.float(), whole, atol=0.02, rtol=0.01)


def test_workers_path_sends_uint8_that_normalizes_to_the_float_items(splits):
    train = splits.train
    float_image, label = train[(5, 1234)]
    uint8_image, uint8_label = train.uint8_items()[(5, 1234)]
    assert uint8_image.dtype == torch.uint8 and label == uint8_label
    from attn_resnet.data.common import normalization_constants, normalize_uint8

    normalized = normalize_uint8(uint8_image, *normalization_constants(IMAGENET_MEAN, IMAGENET_STD))
    torch.testing.assert_close(normalized, float_image, atol=1e-5, rtol=1e-5)
    loader = build_prefetched_loader(train, batch_size=4, device="cpu", num_workers=0)
    assert loader.loader.dataset.uint8  # what crosses from the workers is uint8
    images, _ = next(iter(loader))
    assert images.dtype == torch.float32


def test_dali_reports_unreadable_files_and_wrong_data_sets(tmp_path, splits):
    root = _coordinate_folder(tmp_path / "bad", classes=2, per_class=2)
    broken = root / "val" / "class_0" / "0.JPEG"
    broken.write_bytes(b"not a jpeg at all")
    dataset = build_splits("imagefolder", root=str(root), image_size=32).test
    with pytest.raises(DataError, match="DALI could not decode"):
        _batches(DaliImageLoader(dataset, batch_size=2, train=False, device="cpu"))
    from helpers import tiny_dataset

    with pytest.raises(DataError, match="class folders"):
        DaliImageLoader(tiny_dataset(8), batch_size=2)


def test_config_refuses_dali_for_in_memory_data():
    from attn_resnet.config.validate import ConfigError, validate_train_config
    from helpers import compose_train

    with pytest.raises(ConfigError, match="data.loader=dali"):
        validate_train_config(compose_train(["data=cifar10", "data.loader=dali"]))


def test_training_with_the_dali_loader(tmp_path):
    root = write_imagefolder(tmp_path / "folders", classes=3, per_class=6, size=40)  # PNG files: DALI decodes them too
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "data=imagefolder", f"data.root={root}", "data.image_size=32",
         "data.batch_size=6", "data.loader=dali", "model.depth=18", "trainer.epochs=1", "trainer.device=cpu",
         "trainer.progress=false", "trainer.attention_maps_every=0", f"hydra.run.dir={run}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "completed"
    assert results["history"][-1]["val_images"] == 9
    assert "data.loader=dali" in (run / "train.log").read_text()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_dali_gpu_decoding_matches_its_cpu_mode(splits):
    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    on_gpu, gpu_labels = _batches(DaliImageLoader(splits.test, batch_size=5, train=False, device=gpu,
                                                  channels_last=True))
    on_cpu, cpu_labels = _batches(DaliImageLoader(splits.test, batch_size=5, train=False, device=cpu))
    assert on_gpu.is_cuda and gpu_labels.is_cuda and on_gpu.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(gpu_labels.cpu(), cpu_labels)
    # nvJPEG and libjpeg-turbo may round a few values differently.
    assert (_pixels(on_gpu.cpu()) - _pixels(on_cpu)).abs().mean() < 2.0
    train_images, _ = _batches(DaliImageLoader(splits.train, batch_size=8, train=True, device=gpu), 2)
    area, _, flips = _crop_statistics(train_images.cpu())
    assert area.min() > 0.06 and 0.2 < flips.mean() < 0.8
