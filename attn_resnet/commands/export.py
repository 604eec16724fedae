"""Export a trained model to ONNX, TorchScript or safetensors, checked against PyTorch before it is kept.

    python scripts/export.py outputs/<run>/checkpoints/best.pt --format onnx --output model.onnx
    python scripts/export.py CHECKPOINT --format torchscript --output model.pt
    python scripts/export.py CHECKPOINT --format safetensors --output model.safetensors

The batch axis is dynamic. Each export is run on random inputs at batch sizes 1 and 3 (ONNX with
onnxruntime, TorchScript reloaded, safetensors rebuilt) and compared with the PyTorch model; the
largest logit difference is printed, and held to --tolerance relative to the largest |logit| (so a
network with large logits is judged by the same standard as one with small logits). Every file
carries the class names, the input normalisation and size, and the architecture (ONNX
metadata_props, the TorchScript extra file attn_resnet.json, the safetensors header; ONNX and
TorchScript also crop_pct, how an ImageNet-stem model's images are cropped); model.init_from and
attn_resnet.load_checkpoint read the safetensors file back. ONNX needs the export extra:
pip install -e ".[export]".

Exit status: 0 written and within tolerance; 1 the export differs from PyTorch past --tolerance
(nothing written); 2 bad arguments, an unreadable checkpoint or an exporter failure, which names
the block and the operation (nothing written). An existing --output is kept unless --overwrite.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path



def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from attn_resnet.config.choices import WEIGHT_CHOICES
    from attn_resnet.export import DEFAULT_OPSET, DEFAULT_TOLERANCE, FORMATS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("checkpoint", type=Path, help="a checkpoints/best.pt or last.pt, or a .safetensors weights file")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--output", required=True, type=Path, help="the file to write")
    parser.add_argument("--weights", default="auto", choices=WEIGHT_CHOICES,
                        help="of a training checkpoint: the weight average when kept (auto), or either")
    parser.add_argument("--opset", type=int, default=None, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help=f"largest logit difference accepted, relative to the largest |logit| (absolute when "
                             f"all logits are below 1; default {DEFAULT_TOLERANCE:g})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from attn_resnet.export import ExportError, export_model
    from attn_resnet.models.official import CheckpointError

    try:
        report = export_model(args.checkpoint, args.format, args.output, weights=args.weights, opset=args.opset,
                              tolerance=args.tolerance, overwrite=args.overwrite)
    except ExportError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1 if "differs from PyTorch" in str(error) else 2
    except (CheckpointError, ValueError) as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    print(report.describe())
    return 0

