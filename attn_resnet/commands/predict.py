"""Top-k class predictions of a trained model on image files and folders.

    python scripts/predict.py outputs/<run>/checkpoints/best.pt cat.jpg dog.png
    python scripts/predict.py CHECKPOINT photos/ --topk 3 --output predictions.csv
    python scripts/predict.py CHECKPOINT photos/ --tta flip --output predictions.json --device cuda

Images are prepared as the model was evaluated in training, from what its checkpoint records: the
input size, the normalisation and the class names (an ImageNet-stem model: shorter side resized to
size / 0.875, centre crop; a CIFAR-stem model: resized to its input size). Folders are searched
recursively for image files. Any mode Pillow opens works (RGB, grayscale, RGBA, palette). The model
runs in batches on --device (auto: a GPU when there is one). --tta flip averages each image's
probabilities with those of its mirror image.

Output: a line per image on the terminal, or --output FILE.csv (path, rank, class, index,
probability, error: one row per image and rank) or FILE.json (per image: path, predictions, error).
An existing output file is kept unless --overwrite; the file is written whole or not at all.

Exit status: 0 every image predicted; 1 some images could not be read (each listed with its reason;
the others are predicted and written); 2 bad arguments, no images, or an unreadable checkpoint.
Checkpoints are read with weights_only=True.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path



def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from attn_resnet.config.choices import PREDICT_TTA_MODES, WEIGHT_CHOICES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("checkpoint", type=Path, help="a checkpoints/best.pt or last.pt, or a .safetensors weights file")
    parser.add_argument("images", type=Path, nargs="+", help="image files or folders of them")
    parser.add_argument("--topk", type=int, default=5, help="classes per image (at most the class count)")
    parser.add_argument("--output", type=Path, help="write the predictions to FILE.csv or FILE.json")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.add_argument("--tta", default="none", choices=PREDICT_TTA_MODES, help="test-time augmentation")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--weights", default="auto", choices=WEIGHT_CHOICES,
                        help="of a training checkpoint: the weight average when kept (auto), or either")
    args = parser.parse_args(argv)
    if args.topk < 1 or args.batch_size < 1:
        parser.error("--topk and --batch-size must be positive integers")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from attn_resnet.api import load_checkpoint
    from attn_resnet.models.official import CheckpointError
    from attn_resnet.predict import PredictError, check_output, find_images, predict, render_table, serialise, \
        write_atomic

    try:
        check_output(args.output, args.overwrite)
        paths = find_images(args.images)
        device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
        model, info = load_checkpoint(args.checkpoint, weights=args.weights, map_location=device)
    except (PredictError, CheckpointError, ValueError, RuntimeError) as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    if args.topk > info.num_classes:
        print(f"Note: --topk {args.topk} is more than the model's {info.num_classes} classes; showing all of them.",
              file=sys.stderr)
    predictions = predict(model, info, paths, args.topk, args.batch_size, device, args.tta)
    print(render_table(predictions))
    if args.output is not None:
        write_atomic(args.output, serialise(predictions, args.output.suffix.lower()))
        print(f"Wrote {args.output} ({len(predictions)} images).")
    return 1 if any(p.error is not None for p in predictions) else 0

