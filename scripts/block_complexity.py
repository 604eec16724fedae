"""The attention zoo's cost: what each registered block adds to ResNet-50 (or another depth) at each placement.

    python scripts/block_complexity.py                      # -> docs/results/attention_zoo_complexity.md
    python scripts/block_complexity.py --depth 18 --network CIFAR10 --size 32 --output -

Parameters and multiply-accumulates (GFLOPs, as the CBAM paper counts them) of one image, counted
on the meta device (nothing is computed), with each block's default options.
"""

from __future__ import annotations

import argparse
import inspect
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def citation(block: type) -> str:
    """The paragraph of the block's module docstring that names its paper (authors, title, venue, year)."""
    doc = inspect.getmodule(block).__doc__ or ""
    for paragraph in doc.split("\n\n"):
        if any(str(year) in paragraph for year in range(2015, 2030)):
            return " ".join(paragraph.split())
    return ""


def render(depth: int, network: str, size: int, extra_blocks: tuple[str, ...] = ()) -> str:
    import torch

    from attn_resnet.attention_registry import placement_names
    from attn_resnet.complexity import block_overheads
    from attn_resnet.models.attention import block_class, block_options

    rows = block_overheads(depth, network, (3, size, size), extra_blocks=extra_blocks)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    lines = [f"# Attention zoo: what each block adds to ResNet-{depth} ({network} stem, {size}x{size})", "",
             f"Command: `python scripts/block_complexity.py --depth {depth} --network {network} --size {size}` "
             f"(commit {commit}, torch {torch.__version__}; counted on the meta device, so nothing ran). "
             "GFLOPs are multiply-accumulates of one image, as the CBAM paper counts them (convolutions and "
             "matrix products; element-wise gates and pooling are not counted).", "",
             "## At each block's own placement", "",
             "| Block | Paper | Options (defaults) | Placement | + Params (M) | + GFLOPs |", "|---|---|---|---|---|---|"]
    for row in rows:
        if row["default"]:
            block = block_class(row["att_type"])
            options = ", ".join(f"`{k}={v!r}`" for k, v in block_options(row["att_type"]).items()) or "—"
            lines.append(f"| {row['att_type']} | {citation(block)} | {options} | {row['placement']} | "
                         f"{row['added_params'] / 1e6:.3f} | {row['added_gflops']:.4f} |")
    placements = placement_names()
    lines += ["", "## At every placement", "",
              "| Block | " + " | ".join(placements) + " |", "|---" * (len(placements) + 1) + "|"]
    by_block: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_block.setdefault(row["att_type"], {})[row["placement"]] = row
    for name, cells in by_block.items():
        text = [f"+{cells[p]['added_params'] / 1e6:.3f} M / +{cells[p]['added_gflops']:.4f}"
                + (" (own)" if cells[p]["default"] else "") if p in cells else "—"
                for p in placements]
        lines.append(f"| {name} | " + " | ".join(text) + " |")
    lines += ["", "Cells: parameters added (millions) / GFLOPs added. SK and PSA are convolutions in their "
              "papers (they replace the bottleneck's 3x3 convolution, at its narrow width); as plug-in blocks "
              "on the residual branch they act on the block's full output width, which costs far more at "
              "ResNet-50 than in their papers.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from attn_resnet.config.choices import DEPTHS
    from attn_resnet.dataset_registry import NETWORK_TYPES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=50, choices=DEPTHS)
    parser.add_argument("--network", default="ImageNet", choices=tuple(NETWORK_TYPES.values()))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--block", action="append", default=[], metavar="PACKAGE.MODULE:CLASS",
                        help="also count a block of your own by its import path (repeatable); blocks that installed "
                             "packages declare (entry points) or that are registered are counted anyway")
    parser.add_argument("--output", default=str(REPO / "docs" / "results" / "attention_zoo_complexity.md"),
                        help="a Markdown file, or - for standard output")
    args = parser.parse_args(argv)
    text = render(args.depth, args.network, args.size, tuple(args.block))
    if args.output == "-":
        print(text)
    else:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
