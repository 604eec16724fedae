#!/usr/bin/env python
"""Build a paper-style table from a sweep's results.json files, beside the published numbers.

    python scripts/paper_table.py multirun/2026-11-25_10-00-00 --paper cbam_table4 --format md
    python scripts/paper_table.py multirun/2026-11-25_11-00-00 --format csv   # a command-line sweep

Any sweep folder works: one launched by an experiment's sweeper params or by values on the
command line (``model.att_type=none,SE``). Jobs that failed or left no results.json are
listed under the table; top-5 errors undefined for fewer than 5 classes print as n/a.
    python scripts/paper_table.py --complexity-only --paper cbam_table4
    python scripts/paper_table.py runs/zoo --by-placement    # blocks x placements (attention_zoo_cifar10)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from attn_resnet import reporting


def main(argv: list[str] | None = None) -> int:
    papers = list(reporting.load_papers())
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", nargs="?", type=Path, help="folder with the runs (searched recursively)")
    parser.add_argument("--paper", choices=papers, help="published table to print beside the runs")
    parser.add_argument("--format", choices=reporting.FORMATS, default="md")
    parser.add_argument("--complexity-only", action="store_true",
                        help="build the paper's models and report params / GFLOPs, without any runs")
    parser.add_argument("--caption", help="a line printed under the table (e.g. the budget of the runs)")
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    parser.add_argument("--by-placement", action="store_true",
                        help="Markdown: blocks as rows, placements (residual, post_add, stage, head) as columns")
    args = parser.parse_args(argv)

    paper = reporting.paper_table(args.paper) if args.paper else None
    if args.complexity_only:
        if paper is None:
            parser.error("--complexity-only needs --paper")
        rows = reporting.complexity_rows(paper)
        text = reporting.render(rows, args.format, paper, args.caption, reporting.COMPLEXITY_HEADER,
                                reporting.complexity_cells, reporting.complexity_record)
        status = 0 if all(row.matches for row in rows) else 1
    else:
        if args.sweep_dir is None:
            parser.error("give the sweep folder (or --complexity-only)")
        try:
            runs = reporting.collect_runs(args.sweep_dir)
        except FileNotFoundError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        if not runs:
            print(f"error: no results.json under {args.sweep_dir}", file=sys.stderr)
            return 2
        rows = reporting.build_rows(runs, paper)
        if args.by_placement:
            text = reporting.placement_pivot(rows, args.caption)
        else:
            text = reporting.render(rows, args.format, paper, args.caption)
        status = 0
    print(text, end="")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    return status


if __name__ == "__main__":
    sys.exit(main())
