"""Attention maps of a trained model on your own images, beside Grad-CAM, as PNG figures.

    python scripts/visualize_attention.py outputs/<run>/checkpoints/best.pt cat.jpg dog.png
    python scripts/visualize_attention.py CHECKPOINT IMAGE... --output figures/ --no-gradcam

For each image one PNG (``<output>/<image name>_attention.png``): the input as the model sees
it, the spatial attention map of the last block of each stage overlaid on it (CBAM's spatial
gate, BAM's spatial branch, any block with a spatial map; maps are min-max scaled per image),
and a Grad-CAM map of the predicted class on the last stage for comparison. Needs the optional
extra: pip install -e ".[viz]" (grad-cam, matplotlib). Checkpoints are read with
``weights_only=True``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("checkpoint", type=Path, help="a checkpoints/best.pt or last.pt written by train.py")
    parser.add_argument("images", type=Path, nargs="+", help="image files (anything Pillow opens)")
    parser.add_argument("--output", type=Path, default=Path("attention_maps"), help="folder for the PNGs")
    parser.add_argument("--no-gradcam", action="store_true", help="leave out the Grad-CAM column")
    parser.add_argument("--alpha", type=float, default=0.5, help="opacity of the heat maps (0-1)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    return parser.parse_args(argv)


def fail(message: str) -> None:
    print(f"Error: {message}", file=sys.stderr)
    raise SystemExit(2)


def load_model(path: Path, device):
    from attn_resnet.build import build_model
    from attn_resnet.engine.checkpoint import load_training_checkpoint
    from attn_resnet.models.official import CheckpointError

    try:
        checkpoint = load_training_checkpoint(path)
    except (CheckpointError, FileNotFoundError, ValueError) as error:
        fail(str(error))
    info = checkpoint.get("input") or {}
    if not info.get("mean") or not info.get("image_size"):
        fail(f"{path} does not record its input's normalisation and size (it was written before checkpoints "
             f"did); retrain, or evaluate it with evaluate.py instead.")
    model = build_model(dict(checkpoint["model_spec"]))
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval(), info


def load_images(paths: list[Path], info: dict):
    """Pillow images -> the model's input: resized (and centre-cropped like validation at 224+) and normalized."""
    import torch
    from PIL import Image, UnidentifiedImageError
    from torchvision import transforms

    height, width = info["image_size"]
    resize = ([transforms.Resize(round(min(height, width) * 256 / 224)), transforms.CenterCrop((height, width))]
              if min(height, width) >= 224 else [transforms.Resize((height, width))])
    to_input = transforms.Compose([*resize, transforms.ToTensor(), transforms.Normalize(info["mean"], info["std"])])
    batch = []
    for path in paths:
        try:
            with Image.open(path) as image:
                batch.append(to_input(image.convert("RGB")))
        except (OSError, UnidentifiedImageError) as error:
            fail(f"cannot read image {path}: {error}. Give image files Pillow can open (JPEG, PNG, ...).")
    return torch.stack(batch)


def grad_cam(model, images):
    """Grad-CAM of the predicted class on the last stage's output (the ``grad-cam`` package)."""
    try:
        from pytorch_grad_cam import GradCAM
    except ImportError:
        fail("Grad-CAM needs the optional extra: pip install -e \".[viz]\" (or pass --no-gradcam).")
    import torch

    with GradCAM(model=model, target_layers=[model.layer4[-1]]) as cam:
        return torch.from_numpy(cam(input_tensor=images, targets=None)).float()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        fail("the figures need matplotlib: pip install -e \".[viz]\".")
    import torch

    from attn_resnet.visualize import displayable, overlay, record_attention, stage_overlays

    device = torch.device(args.device)
    model, info = load_model(args.checkpoint, device)
    images = load_images(args.images, info).to(device)
    with torch.no_grad():
        probabilities = model(images).softmax(1).cpu()
    maps = record_attention(model, images)
    overlays = stage_overlays(images.cpu(), maps, args.alpha)
    columns = [("input", displayable(images))] + [(f"{model.att_type} {stage}", grid) for stage, grid in
                                                    overlays.items()]
    if not args.no_gradcam:
        columns.append(("Grad-CAM", overlay(displayable(images), grad_cam(model, images), args.alpha)))
    if not overlays:
        print(f"note: the model (att_type={model.att_type}) has no spatial attention map; only the input"
              f"{'' if args.no_gradcam else ' and Grad-CAM'} are drawn.", file=sys.stderr)
    args.output.mkdir(parents=True, exist_ok=True)
    names = info.get("class_names") or []
    for index, path in enumerate(args.images):
        figure, axes = plt.subplots(1, len(columns), figsize=(2.2 * len(columns), 2.6), squeeze=False)
        for axis, (title, grid) in zip(axes[0], columns):
            axis.imshow(grid[index].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            axis.set_title(title, fontsize=8)
            axis.axis("off")
        top = int(probabilities[index].argmax())
        label = names[top] if top < len(names) else str(top)
        figure.suptitle(f"{path.name}: {label} ({100 * float(probabilities[index, top]):.1f}%)", fontsize=9)
        figure.tight_layout()
        target = args.output / f"{path.stem}_attention.png"
        figure.savefig(target, dpi=100)
        plt.close(figure)
        print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
