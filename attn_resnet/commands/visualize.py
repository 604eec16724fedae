"""Attention maps of a trained model on your own images, beside Grad-CAM, as PNG figures.

    python scripts/visualize_attention.py outputs/<run>/checkpoints/best.pt cat.jpg dog.png
    python scripts/visualize_attention.py CHECKPOINT IMAGE... --output figures/ --no-gradcam

For each image one PNG (``<output>/<image name>_attention.png``, see ``figure_names`` for images
that share a name): the input as the model sees it, the spatial attention map of the last block of each stage overlaid on it (CBAM's spatial
gate, BAM's spatial branch, any block with a spatial map; maps are min-max scaled per image),
and a Grad-CAM map of the predicted class on the last stage for comparison. An existing figure is
never replaced unless ``--overwrite`` is given. Needs the optional extra: pip install -e ".[viz]"
(grad-cam, matplotlib). The model is loaded as predict.py loads it (``attn_resnet.load_checkpoint``:
a training checkpoint, read with ``weights_only=True``, or an exported .safetensors file), and a
model that cannot be built or loaded is one line, exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path



def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from attn_resnet.config.choices import WEIGHT_CHOICES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("checkpoint", type=Path,
                        help="a checkpoints/best.pt or last.pt, or a .safetensors weights file")
    parser.add_argument("images", type=Path, nargs="+", help="image files (anything Pillow opens)")
    parser.add_argument("--output", type=Path, default=Path("attention_maps"), help="folder for the PNGs")
    parser.add_argument("--no-gradcam", action="store_true", help="leave out the Grad-CAM column")
    parser.add_argument("--alpha", type=float, default=0.5, help="opacity of the heat maps (0-1)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--overwrite", action="store_true", help="replace figures that already exist in --output")
    parser.add_argument("--weights", default="auto", choices=WEIGHT_CHOICES,
                        help="of a training checkpoint: the weight average when kept (auto), or either")
    return parser.parse_args(argv)


SUFFIX = "_attention.png"


def figure_names(paths: list[Path]) -> list[str]:
    """The file name of each image's figure: ``<image name>_attention.png``, unique among ``paths``.

    An image's name is its file name without the extension (``cat.jpg`` -> ``cat``). Images
    that share a name get their nearest parent folders in front, as few as tell them apart
    (``cat/0000.jpg``, ``dog/0000.jpg`` -> ``cat_0000``, ``dog_0000``); images in one folder
    that differ only in their extension keep it (``a.png``, ``a.jpg`` -> ``a_png``, ``a_jpg``).
    The rule depends only on the paths given, so the same command names its figures the same
    way every time. Should two names still meet (``cat/0.png`` beside a ``cat_0.png``), the
    later ones get ``_2``, ``_3``.
    """
    # Parent folders nearest first; the path as given, made absolute (symlinks kept, no drive or root).
    parents = [Path(os.path.abspath(path)).parent.parts[1:][::-1] for path in paths]
    stems = [Path(path).stem for path in paths]
    names = list(stems)
    for stem in {stem for stem, count in Counter(stems).items() if count > 1}:
        group = [index for index, other in enumerate(stems) if other == stem]
        deepest = max(len(parents[index]) for index in group)
        tries = [(depth, False) for depth in range(1, deepest + 1)] + [(depth, True) for depth in range(deepest + 1)]
        for depth, extension in tries:
            candidates = ["_".join([*parents[index][:depth][::-1], stem]
                                   + ([Path(paths[index]).suffix.lstrip(".")] if extension else []))
                          for index in group]
            if len(set(candidates)) == len(candidates):
                for index, candidate in zip(group, candidates):
                    names[index] = candidate
                break
    seen: Counter = Counter()
    for index, name in enumerate(names):
        seen[name] += 1
        if seen[name] > 1:
            names[index] = f"{name}_{seen[name]}"
    return [name + SUFFIX for name in names]


def check_free(targets: list[Path], overwrite: bool) -> None:
    """Stop before any work when a figure would replace a file already there (unless ``overwrite``)."""
    existing = [target for target in targets if target.exists()]
    if existing and not overwrite:
        one = len(existing) == 1
        listed = ", ".join(map(str, existing[:3])) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        fail(f"{listed} already exist{'s' if one else ''}, and this command would replace {'it' if one else 'them'} "
             f"with new figures. Pass --overwrite to replace {'it' if one else 'them'}, or write the figures "
             f"elsewhere with --output DIR.")


def fail(message: str) -> None:
    print(f"Error: {message}", file=sys.stderr)
    raise SystemExit(2)


def load_model(path: Path, device, weights: str = "auto"):
    """``(model, ModelInfo)`` as predict.py loads them; any file it cannot build or load stops with one line."""
    from attn_resnet.api import load_checkpoint
    from attn_resnet.models.official import CheckpointError

    try:
        return load_checkpoint(path, weights=weights, map_location=device)
    except (CheckpointError, FileNotFoundError, ValueError) as error:  # also an unknown or uninstalled block
        fail(str(error))


def load_images(paths: list[Path], info):
    """Pillow images -> the model's input: resized (and centre-cropped like validation at 224+) and normalized."""
    import torch
    from PIL import Image, UnidentifiedImageError
    from torchvision import transforms

    height, width = info.image_size
    resize = ([transforms.Resize(round(min(height, width) * 256 / 224)), transforms.CenterCrop((height, width))]
              if min(height, width) >= 224 else [transforms.Resize((height, width))])
    to_input = transforms.Compose([*resize, transforms.ToTensor(), transforms.Normalize(info.mean, info.std)])
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
    # The same file given twice is drawn once.
    args.images = list({os.path.abspath(path): path for path in args.images}.values())
    targets = [args.output / name for name in figure_names(args.images)]
    check_free(targets, args.overwrite)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        fail("the figures need matplotlib: pip install -e \".[viz]\".")
    import torch

    from attn_resnet.visualize import displayable, overlay, record_attention, stage_overlays

    device = torch.device(args.device)
    model, info = load_model(args.checkpoint, device, args.weights)
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
        drawn = f"only the input{'' if args.no_gradcam else ' and Grad-CAM'} are drawn"
        if model.att_type == "none":
            why = "the model has no attention block"
        elif not maps:
            why = (f"its block {model.att_type} has no AttentionMap tap, so its attention cannot be seen (a block "
                   f"shows its weights by passing them through attn_resnet.AttentionMap; see docs/extending.md)")
        else:
            why = f"its block {model.att_type} has channel weights only, no spatial attention map"
        print(f"note: {why}; {drawn}.", file=sys.stderr)
    args.output.mkdir(parents=True, exist_ok=True)
    names = info.class_names
    for index, (path, target) in enumerate(zip(args.images, targets)):
        figure, axes = plt.subplots(1, len(columns), figsize=(2.2 * len(columns), 2.6), squeeze=False)
        for axis, (title, grid) in zip(axes[0], columns):
            axis.imshow(grid[index].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            axis.set_title(title, fontsize=8)
            axis.axis("off")
        top = int(probabilities[index].argmax())
        label = names[top] if top < len(names) else str(top)
        figure.suptitle(f"{path.name}: {label} ({100 * float(probabilities[index, top]):.1f}%)", fontsize=9)
        figure.tight_layout()
        figure.savefig(target, dpi=100)
        plt.close(figure)
        print(target)
    return 0

