"""Build a paper-style table from a sweep's results.json files, beside the published numbers.

    python scripts/paper_table.py multirun/2026-11-25_10-00-00 --paper cbam_table4 --format md
    python scripts/paper_table.py multirun/2026-11-25_11-00-00 --format csv   # a command-line sweep
    python scripts/paper_table.py multirun/2026-11-25_11-00-00 --columns top1,vs_plain,pairs

Any sweep folder works: one launched by an experiment's sweeper params or by values on the
command line (``model.att_type=none,SE``). Jobs that failed or left no results.json are
listed under the table; top-5 errors undefined for fewer than 5 classes print as n/a.
Each block's row also gives its top-1 accuracy minus the plain network's, paired by seed,
with a 95% t interval. A line under the table gives the runs' budget (epochs and training
images, from results.json). ``--paper`` adds the published rows only when the runs are on the
paper's data set (``--all-rows``: always); CSV values are rounded as the Markdown table prints them.
    python scripts/paper_table.py --complexity-only --paper cbam_table4
    python scripts/paper_table.py runs/zoo --by placement    # blocks x placements (attention_zoo_cifar10)
    python scripts/paper_table.py multirun/<time> --by recipe  # blocks x recipes (recipe_study_cifar10)

The folder is searched at any depth, so a ledger of committed runs (docs/results/runs/<card>/,
see its README) gives one table over every session's seeds; --where selects one recipe:
    python scripts/paper_table.py docs/results/runs/nvidia-h200 --where experiment=cifar10_fast
    python scripts/paper_table.py --count-seeds docs/results/runs/nvidia-h200 \\
        --where experiment=cifar10_fast model.att_type=CBAM      # prints the number of seeds done
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


from .. import reporting
from ..attention_registry import PLACEMENTS


def main(argv: list[str] | None = None) -> int:
    papers = list(reporting.load_papers())
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", nargs="?", type=Path, help="folder with the runs (searched recursively)")
    parser.add_argument("--paper", choices=papers,
                        help="published table to print beside the runs (its rows only where the runs are on its data "
                             "set, see --all-rows); by default the one the runs' experiment names (paper_table)")
    parser.add_argument("--all-rows", action="store_true",
                        help="with --paper: list every published row, also where the runs are on another data set")
    parser.add_argument("--format", choices=reporting.FORMATS,
                        help="text: aligned columns that fit the terminal, leaving out columns without a value "
                             "(the default on a terminal); md (the default otherwise), csv, latex")
    parser.add_argument("--columns", type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
                        metavar="NAME,...",
                        help="the columns to print, in this order (the model's name always comes first): "
                             + ", ".join(reporting.COLUMNS))
    parser.add_argument("--complexity-only", action="store_true",
                        help="build the paper's models and report params / GFLOPs, without any runs")
    parser.add_argument("--caption", help="a line printed under the table (the runs' epochs and training images are "
                                          "printed under it anyway, from their results.json)")
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    parser.add_argument("--by", choices=("placement", "recipe"),
                        help=f"Markdown: blocks as rows and, as columns, placements ({', '.join(PLACEMENTS)}), "
                             "or recipes (recipe=paper, modern: top-1 accuracy, then each block minus the "
                             "plain network of the same recipe, paired by seed)")
    parser.add_argument("--by-placement", action="store_const", const="placement", dest="by",
                        help="the same as --by placement")
    parser.add_argument("--where", nargs="+", default=[], metavar="KEY=VALUE",
                        help="only runs whose resolved config has these values (model.att_type=CBAM, "
                             "trainer.epochs=30) or whose command line chose them (experiment=cifar10_fast)")
    parser.add_argument("--count-seeds", type=Path, metavar="FOLDER",
                        help="print how many distinct seeds completed under FOLDER (with --where: of that "
                             "configuration), e.g. for a campaign that skips configurations already done")
    parser.add_argument("--missing-seeds", type=int, metavar="N",
                        help="with --count-seeds: print instead the seeds of 0..N-1 not yet completed, comma-"
                             "separated (an empty line when all are done), for a campaign that tops a ledger up")
    args = parser.parse_args(argv)
    if args.format is None:
        args.format = "text" if sys.stdout.isatty() else "md"
    try:
        where = reporting.parse_where(args.where)
    except ValueError as error:
        parser.error(str(error))

    if args.count_seeds is not None:
        if args.sweep_dir is not None or args.complexity_only:
            parser.error("--count-seeds takes its folder itself; give no other folder nor --complexity-only")
        return count_seeds(args.count_seeds, where, args.missing_seeds)
    if args.missing_seeds is not None:
        parser.error("--missing-seeds goes with --count-seeds FOLDER")

    paper = reporting.paper_table(args.paper) if args.paper else None
    if args.complexity_only:
        if paper is None:
            parser.error("--complexity-only needs --paper")
        rows = reporting.complexity_rows(paper)
        # Under the table: why each size that is not reproduced is not (the published rows' size_note).
        caption = "\n".join(filter(None, [args.caption, *reporting.complexity_notes(rows)]))
        try:
            text = reporting.render(rows, args.format, paper, caption, reporting.COMPLEXITY_HEADER,
                                    reporting.complexity_cells, reporting.complexity_record, columns=args.columns,
                                    width=shutil.get_terminal_size().columns)
        except ValueError as error:
            parser.error(str(error))
        # 1 when a size is neither reproduced (as printed, or as another table of the paper prints it) nor
        # explained by the published row.
        status = 0 if all(row.accounted_for for row in rows) else 1
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
        if not check_keys(runs, where, args.sweep_dir):
            return 2
        runs = [run for run in runs if reporting.run_matches(run, where)]
        if not runs:
            print(f"error: no run under {args.sweep_dir} has {' '.join(args.where)}", file=sys.stderr)
            return 2
        paper, args.paper, notes = reporting.choose_paper(runs, args.paper, args.all_rows)
        caption = "\n".join(filter(None, [args.caption, *notes]))
        rows = reporting.build_rows(runs, paper)
        if args.by == "placement":
            text = reporting.placement_pivot(rows, caption)
        elif args.by == "recipe":
            text = reporting.recipe_pivot(runs, caption)
        else:
            try:
                text = reporting.render(rows, args.format, paper, caption, columns=args.columns,
                                        width=shutil.get_terminal_size().columns)
            except ValueError as error:
                parser.error(str(error))
        status = 0
    print(text, end="")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    return status


def check_keys(runs: list[reporting.Run], where: dict[str, str], folder: Path | str) -> bool:
    """False, with a message, when a condition names a key no run has (a typo would select nothing)."""
    unknown = reporting.unknown_keys(runs, where)
    if unknown:
        print(f"error: no run under {folder} has {', '.join(unknown)} in its config or on its command line; "
              "check the spelling (keys are dotted config paths, e.g. model.att_type, or group names, e.g. "
              "experiment)", file=sys.stderr)
    return not unknown


def count_seeds(folder: Path, where: dict[str, str], wanted: int | None = None) -> int:
    """Print the number of distinct completed seeds (stdout, for scripts) and which they are (stderr); with
    ``wanted``, print the seeds of 0..wanted-1 still to run instead of the number."""
    if not folder.exists():
        print(f"{folder} does not exist yet: 0 seeds", file=sys.stderr)
        print(0 if wanted is None else ",".join(map(str, range(wanted))))
        return 0
    try:
        runs = reporting.collect_runs(folder)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if runs and not check_keys(runs, where, folder):
        return 2
    seeds = reporting.distinct_seeds(run for run in runs if reporting.run_matches(run, where))
    print(f"completed seeds under {folder}: {', '.join(map(str, seeds)) or 'none'}", file=sys.stderr)
    print(len(seeds) if wanted is None else ",".join(str(seed) for seed in range(wanted) if seed not in seeds))
    return 0

