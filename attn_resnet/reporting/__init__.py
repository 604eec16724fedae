"""Runs -> tables: read every ``results.json`` of a sweep, aggregate over seeds, set published numbers beside.

Only ``results.json`` files (and Hydra's ``multirun.yaml``, to know which jobs a sweep
launched) are read: a job that failed, is still running, or left no results is listed as
such, never dropped silently. The same reading serves a ledger of committed runs
(``docs/results/runs/<card>/...``), where seeds accumulate over many sweeps: ``where``
conditions pick one recipe out of it, and ``count_seeds`` says how many seeds of a
configuration are already done.

One module per job, each importing only those above it:

- ``papers``: the published tables (``paper_results.json``)
- ``runs``: a run (``Run``), its identity and settings, ``where`` conditions
- ``sweeps``: the jobs a Hydra sweep launches, rebuilt from its ``multirun.yaml``
- ``results``: runs read from disk (``collect_runs``), seeds already done
- ``stats``: mean and std, t quantiles, paired differences
- ``aggregate``: rows per architecture and the notes under a table
- ``render``: the table in Markdown, CSV or LaTeX
- ``complexity_table``: params and GFLOPs beside the papers' (no runs)
- ``pivots``: blocks x placements and blocks x recipes
- ``report``: what the HTML report shows beyond the table (sections per data set, header, curves, cost points)
- ``figures``: the report's figures as SVG (matplotlib, imported only when a report is drawn)
- ``html``: the report as one self-contained HTML page

Everything a caller needs is importable from here: ``from attn_resnet.reporting import collect_runs``.
"""

from .aggregate import (Row, budget_notes, build_rows, choose_paper, evaluation_notes, mixed_experiments, mixed_recipes,
                        paper_left_out_note, paper_matches, problems)
from .complexity_table import (COMPLEXITY_HEADER, ComplexityRow, complexity_cells, complexity_notes, complexity_record,
                               complexity_rows)
from .papers import load_papers, paper_table
from .pivots import RECIPE_LEGEND, placement_pivot, recipe_pivot, recipe_rows
from .render import (COLUMNS, FORMATS, HEADER, PAIRED_LEGEND, SIGNIFICANT, column_indices, csv_record, render,
                     table_cells, table_notes, text_table)
from .results import collect_runs, completed_seeds, count_seeds, run_from_results
from .runs import (NO_RECIPE, Run, block_placement, distinct_seeds, parse_where,
                   run_matches, run_recipe, run_setting, unknown_keys)
from .stats import PairedDifference, paired_difference, sample_mean_std, t_quantile_975
from .sweeps import IDENTITY_KEYS, expected_jobs, identity_from_overrides, sweep_combinations, sweep_jobs

__all__ = [
    "COLUMNS", "COMPLEXITY_HEADER", "FORMATS", "HEADER", "IDENTITY_KEYS", "NO_RECIPE", "PAIRED_LEGEND",
    "RECIPE_LEGEND", "SIGNIFICANT", "ComplexityRow", "PairedDifference", "Row", "Run",
    "block_placement", "budget_notes", "choose_paper", "column_indices", "build_rows", "collect_runs", "completed_seeds", "complexity_cells",
    "complexity_notes", "complexity_record", "complexity_rows", "count_seeds", "csv_record", "distinct_seeds", "evaluation_notes",
    "expected_jobs", "identity_from_overrides", "load_papers", "mixed_experiments", "mixed_recipes",
    "paired_difference", "paper_left_out_note", "paper_matches", "paper_table", "parse_where", "placement_pivot",
    "problems", "recipe_pivot", "recipe_rows", "render", "run_from_results", "run_matches", "run_recipe",
    "run_setting", "sample_mean_std", "sweep_combinations", "sweep_jobs", "t_quantile_975", "table_cells", "table_notes", "text_table",
    "unknown_keys",
]
