"""Write a report of runs and sweeps: one HTML page that answers "which block, at what cost, how sure".

    python scripts/report.py multirun/2026-12-07_10-00-00 --out report.html
    attn-resnet report multirun/<time> outputs/cifar10_resnet18_CBAM --out report.html

The page holds, per data set: the table ``paper_table.py`` prints (mean ± std over seeds, the paired
difference from the plain network with its 95% interval, published rows beside; columns without a value
left out), top-1 accuracy against params, GFLOPs and training images/s, the learning curves with their
spread over seeds, the paired differences as intervals, the placement or recipe pivot when the runs vary
one, the attention maps the runs logged, and every run with its state (failed runs with their error, runs
still going with the epochs they have). Its header gives the budget, devices, commit, versions and the
recipe features that were on. It is one file: inline CSS, figures embedded, nothing fetched when opened.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import reporting
from .table import check_keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:4]))
    parser.add_argument("folders", nargs="+", type=Path, metavar="FOLDER",
                        help="run or sweep folders (searched at any depth for results.json)")
    parser.add_argument("--out", type=Path, default=Path("report.html"), help="the page to write (report.html)")
    parser.add_argument("--paper", choices=list(reporting.load_papers()),
                        help="published table beside the runs (by default the one the runs' experiment names)")
    parser.add_argument("--all-rows", action="store_true", help="with --paper: its rows also on another data set")
    parser.add_argument("--columns", type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
                        metavar="NAME,...", help="the table's columns: " + ", ".join(reporting.COLUMNS))
    parser.add_argument("--where", nargs="+", default=[], metavar="KEY=VALUE",
                        help="only runs whose config or command line has these values (as paper_table.py)")
    parser.add_argument("--title", help="the page's title (default: attn-resnet report)")
    parser.add_argument("--no-maps", action="store_true", help="leave out the attention maps (a smaller page)")
    args = parser.parse_args(argv)
    try:
        where = reporting.parse_where(args.where)
    except ValueError as error:
        parser.error(str(error))
    runs = []
    for folder in args.folders:
        try:
            runs += reporting.collect_runs(folder)
        except FileNotFoundError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    if not runs:
        print(f"error: no results.json under {', '.join(map(str, args.folders))}: give run or sweep folders "
              "(outputs/<name>/<time>, multirun/<time>).", file=sys.stderr)
        return 2
    if not check_keys(runs, where, ", ".join(map(str, args.folders))):
        return 2
    runs = [run for run in runs if reporting.run_matches(run, where)]
    if not runs:
        print(f"error: no run has {' '.join(args.where)}", file=sys.stderr)
        return 2
    if args.out.suffix.lower() not in (".html", ".htm"):
        parser.error(f"--out {args.out}: the report is an HTML page; give a file name ending in .html")
    from ..reporting.html import report_html

    try:
        page = report_html(runs, args.folders, args.paper, args.all_rows, args.columns, args.title,
                           with_maps=not args.no_maps)
    except ValueError as error:
        parser.error(str(error))
    except ImportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.out.with_name(f".{args.out.name}.tmp")
    temporary.write_text(page, encoding="utf-8")
    temporary.replace(args.out)
    completed = sum(run.status == "completed" for run in runs)
    print(f"Wrote {args.out} ({len(page) / 1e6:.2f} MB): {len(runs)} runs, {completed} completed. Open it in a "
          "browser; it needs no network.")
    return 0
