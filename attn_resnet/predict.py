"""Top-k predictions of a trained model on image files, fed as the model was trained.

``predict(model, info, paths)`` reads each image (any mode Pillow opens: RGB, grayscale, RGBA,
palette), prepares it with the checkpoint's recorded input size and normalisation, and runs the
model in batches. An image that cannot be read gets its reason instead of predictions, and the
others are still predicted. The preparation is the evaluation transform of training: for a network
with the ImageNet stem, resize the shorter side to size / crop_pct (the run's data.crop_pct, 0.875 by
default) and crop the centre; for the CIFAR stem, resize to the input size.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torchvision import transforms

from .api import ModelInfo
from .config.choices import PREDICT_TTA_MODES
from .data.common import normalization_constants, normalize_uint8
from .data.imagefolder import val_transform
from .dataset_registry import DEFAULT_CROP_PCT, stem_of
from .runfiles import write_file_atomic

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
OUTPUT_SUFFIXES = (".csv", ".json")


class PredictError(ValueError):
    """Bad input to the prediction command: no images, an unusable output file."""


@dataclass
class Prediction:
    """One image's top-k ``(class index, class name, probability)``, or the reason it could not be read."""

    path: str
    top: list[tuple[int, str, float]] | None = None
    error: str | None = None


def find_images(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given, and the image files under each folder (recursively, sorted); PredictError if none."""
    found: list[Path] = []
    for entry in map(Path, inputs):
        if entry.is_dir():
            found += sorted(path for path in entry.rglob("*")
                            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)
        elif entry.is_file():
            found.append(entry)
        else:
            raise PredictError(f"{entry} does not exist: pass image files or folders of them.")
    if not found:
        raise PredictError(f"No image files ({', '.join(IMAGE_SUFFIXES)}) found in "
                           f"{', '.join(map(str, inputs))}.")
    return found


def check_output(path: Path | None, overwrite: bool) -> None:
    """Refuse an output file of another kind, or one that exists (unless ``overwrite``), before any work."""
    if path is None:
        return
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise PredictError(f"--output {path}: the file must end in .csv or .json, which say its format.")
    if path.exists() and not overwrite:
        raise PredictError(f"{path} exists already and is kept. Choose another --output, or pass --overwrite.")
    if not path.parent.is_dir():
        raise PredictError(f"The folder {path.parent} does not exist; create it or choose another --output.")


def input_transform(info: ModelInfo):
    """PIL image -> uint8 (3, H, W) at the model's input size, as its evaluation saw images."""
    size = tuple(info.image_size)
    if stem_of(info.model_spec.get("network_type")) == "imagenet":
        crop_pct = (info.config.get("data") or {}).get("crop_pct") or DEFAULT_CROP_PCT
        return val_transform(size, uint8=True, crop_pct=float(crop_pct))
    return transforms.Compose([transforms.Resize(size), transforms.PILToTensor()])


def read_image(path: Path) -> Image.Image:
    """Decode ``path`` fully as RGB (transparency dropped, grayscale and palette expanded)."""
    with Image.open(path) as image:
        image.load()
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            # Transparent pixels over white rather than over whatever colour they hide.
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return image.convert("RGB")


def predict(model: torch.nn.Module, info: ModelInfo, paths: Sequence[Path], topk: int = 5, batch_size: int = 64,
            device: torch.device | str = "cpu", tta: str = "none") -> list[Prediction]:
    """Predictions for ``paths`` in their order; ``tta="flip"`` averages the probabilities of each image
    and its mirror image."""
    if tta not in PREDICT_TTA_MODES:
        raise PredictError(f"Unknown --tta {tta!r}. Valid choices: {', '.join(PREDICT_TTA_MODES)}.")
    device = torch.device(device)
    model = model.to(device).eval()
    prepare = input_transform(info)
    shift, scale = normalization_constants(info.mean, info.std, device)
    k = min(topk, info.num_classes)
    results = [Prediction(str(path)) for path in paths]
    pending: list[tuple[int, torch.Tensor]] = []

    def flush() -> None:
        if not pending:
            return
        images = normalize_uint8(torch.stack([image for _, image in pending]).to(device), shift, scale)
        with torch.inference_mode():
            probabilities = model(images).float().softmax(1)
            if tta == "flip":
                probabilities = (probabilities + model(images.flip(-1)).float().softmax(1)) / 2
        values, indices = probabilities.topk(k, dim=1)
        for (position, _), row_values, row_indices in zip(pending, values.cpu().tolist(), indices.cpu().tolist()):
            results[position].top = [(index, info.class_names[index], value)
                                     for index, value in zip(row_indices, row_values)]
        pending.clear()

    for position, path in enumerate(paths):
        try:
            pending.append((position, prepare(read_image(path))))
        except Exception as error:  # noqa: BLE001 - Pillow reports unreadable files with many types
            results[position].error = f"{type(error).__name__}: {error}"
            continue
        if len(pending) == batch_size:
            flush()
    flush()
    return results


def render_table(predictions: Sequence[Prediction]) -> str:
    """One line per image: its classes with probabilities, best first; unreadable images listed after."""
    lines = [f"{p.path}: " + ", ".join(f"{name} {probability:.1%}" for _, name, probability in p.top)
             for p in predictions if p.top is not None]
    failed = [p for p in predictions if p.error is not None]
    if failed:
        lines.append(f"{len(failed)} image{'s' if len(failed) > 1 else ''} could not be read:")
        lines += [f"  {p.path}: {p.error}" for p in failed]
    return "\n".join(lines)


def serialise(predictions: Sequence[Prediction], suffix: str) -> str:
    """The predictions as CSV (one row per image and rank; unreadable images with their error) or JSON."""
    if suffix == ".json":
        return json.dumps([{"path": p.path, "error": p.error,
                            "predictions": [{"rank": rank, "class": name, "index": index, "probability": value}
                                            for rank, (index, name, value) in enumerate(p.top or [], 1)]}
                           for p in predictions], indent=2) + "\n"
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "rank", "class", "index", "probability", "error"])
    for p in predictions:
        if p.top is None:
            writer.writerow([p.path, "", "", "", "", p.error])
        for rank, (index, name, value) in enumerate(p.top or [], 1):
            writer.writerow([p.path, rank, name, index, f"{value:.6f}", ""])
    return buffer.getvalue()


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (``runfiles.write_file_atomic``)."""
    write_file_atomic(path, lambda stream: stream.write(text.encode("utf-8")), action="write the predictions")
