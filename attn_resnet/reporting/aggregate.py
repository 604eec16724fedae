"""Runs -> rows: one row per architecture (data set, depth, attention), aggregated over seeds, and the
notes a table owes its reader (runs not completed, mixed experiments or recipes, evaluation, budget)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field

from .papers import load_papers, paper_table
from .runs import Run, _attention_identity, _attention_order, network_identity, run_recipe, run_setting
from .stats import PairedDifference, paired_difference, sample_mean_std


@dataclass
class Row:
    """One architecture (data set, depth, network shape, attention) and its runs, with the paper's row where it
    has one."""

    dataset: str | None
    depth: int | None
    att_type: str | None
    runs: list[Run] = field(default_factory=list)
    paper: dict | None = None
    baseline: Row | None = field(default=None, repr=False)  # the plain network (none) of the same data and depth
    network: str | None = None  # a widened or grouped network's label; None for the plain ResNet

    @property
    def network_name(self) -> str:
        return self.network or f"ResNet-{'?' if self.depth is None else self.depth}"

    @property
    def label(self) -> str:
        attention = "" if self.att_type in (None, "none") else f" + {self.att_type.replace('@', ' @ ')}"
        return f"{self.network_name}{attention}"

    @property
    def completed(self) -> list[Run]:
        return [run for run in self.runs if run.status == "completed"]

    def err(self, which: str) -> tuple[float | None, float | None]:
        """Mean and std of ``err1`` / ``err5`` over the completed runs that define it (None is skipped, never 0)."""
        return sample_mean_std([getattr(run, which) for run in self.completed if getattr(run, which) is not None])

    def undefined(self, which: str) -> bool:
        """Runs completed, yet none reports ``which`` (top-5 of a data set with fewer than 5 classes)."""
        return bool(self.completed) and all(getattr(run, which) is None for run in self.completed)

    def acc1_by_seed(self) -> dict[int, float]:
        """Top-1 accuracy (%) per seed of the completed runs; a seed run twice (a ledger may hold
        both: GPU runs are not bit-reproducible) counts once, as the mean of its runs."""
        by_seed: dict[int, list[float]] = {}
        for run in self.completed:
            if run.err1 is not None and run.seed is not None:
                by_seed.setdefault(run.seed, []).append(100.0 - run.err1)
        return {seed: statistics.fmean(values) for seed, values in by_seed.items()}

    @property
    def vs_plain(self) -> PairedDifference | None:
        """Top-1 accuracy minus the plain network's, paired by seed; None for the plain row itself
        and where the table has no plain row of this data set and depth."""
        if self.baseline is None or self.att_type in (None, "none"):
            return None
        return paired_difference(self.acc1_by_seed(), self.baseline.acc1_by_seed())

    @property
    def params_m(self) -> float | None:
        values = [run.params for run in self.completed if run.params]
        return values[0] / 1e6 if values else None

    @property
    def gflops(self) -> float | None:
        values = [run.gflops for run in self.completed if run.gflops]
        return values[0] if values else None


def published_key(paper: dict, published: dict) -> tuple:
    """The row key (data set, depth, network, attention) of a published row, matched to runs by its options:
    its network shape (``width``, ``cardinality``, ``width_per_group``), block, ``options`` and placement."""
    attention = _attention_identity(published["att_type"], published.get("att_placement"), published.get("options"))
    return (paper["dataset"], published["depth"], network_identity(published), attention)


def _row(key: tuple) -> Row:
    dataset, depth, network, att_type = key
    return Row(dataset, depth, att_type, network=network)


def build_rows(runs: list[Run], paper: dict | None = None) -> list[Row]:
    """One row per architecture (data set, depth, network, attention); the paper's rows appear even without runs."""
    rows: dict[tuple, Row] = {}
    for run in runs:
        rows.setdefault(run.key, _row(run.key)).runs.append(run)
    if paper is not None:
        for published in paper["rows"]:
            key = published_key(paper, published)
            rows.setdefault(key, _row(key)).paper = published
    for (dataset, depth, network, att_type), row in rows.items():
        if att_type not in (None, "none"):
            row.baseline = rows.get((dataset, depth, network, "none"))
    return sorted(rows.values(), key=lambda r: (str(r.dataset), r.depth or 0, r.network or "",
                                                _attention_order(r.att_type)))


def problems(rows: list[Row]) -> list[str]:
    """One line per run that did not complete, and per published row that has no run."""
    lines = []
    for row in rows:
        for run in row.runs:
            if run.status != "completed":
                state = {"running": "did not finish (still running, or killed)",
                         "stopped": "stopped on a signal, with a checkpoint to resume from (requeued, or "
                                    "to be resubmitted)"}.get(run.status, run.status)
                lines.append(f"{row.label} ({row.dataset}, seed {run.seed}): {state} — {run.path}"
                             + (f": {run.error.splitlines()[0]}" if run.error else ""))
        if not row.runs:
            lines.append(f"{row.label} ({row.dataset}): no runs")
    return lines


def mixed_experiments(rows: list[Row]) -> list[str]:
    """One line per row whose completed runs come from different experiments.

    A ledger gathers runs of several recipes; grouped by architecture alone, a row would
    average them as if they were seeds of one configuration.
    """
    lines = []
    for row in rows:
        experiments = {run_setting(row_run, "experiment") for row_run in row.completed}
        if len(experiments) > 1:
            names = ", ".join(sorted(str(name) if name is not None else "(no experiment)" for name in experiments))
            lines.append(f"{row.label} ({row.dataset}) mixes runs of several experiments ({names}): "
                         "select one with --where experiment=<name>.")
    return lines


def mixed_recipes(rows: list[Row]) -> list[str]:
    """One line per row whose completed runs trained with different recipes (``recipe=paper|modern``):
    averaged together they would be neither."""
    lines = []
    for row in rows:
        recipes = {run_recipe(row_run) for row_run in row.completed}
        if len(recipes) > 1:
            lines.append(f"{row.label} ({row.dataset}) mixes runs of several recipes ({', '.join(sorted(recipes))}): "
                         "select one with --where recipe_name=<name>, or compare them with --by recipe.")
    return lines


def evaluation_notes(rows: list[Row]) -> list[str]:
    """One line saying how the reported accuracies were evaluated, when any run used TTA or a weight average.

    Both change the number a run reports (``trainer.tta``, ``trainer.ema_decay``): a table must say
    so, and say when its runs differ in it.
    """
    settings: dict[tuple[str, float], int] = {}
    for row in rows:
        for run in getattr(row, "completed", ()):  # a complexity-only row has no runs
            trainer = (run.config or {}).get("trainer", {})
            key = (str(trainer.get("tta", "none")), float(trainer.get("ema_decay", 0.0) or 0.0))
            settings[key] = settings.get(key, 0) + 1
    if all(key == ("none", 0.0) for key in settings):
        return []
    parts = []
    for (tta, ema), count in sorted(settings.items()):
        how = ", ".join(filter(None, [f"TTA {tta}" if tta != "none" else "no TTA",
                                      f"the weight average (EMA {ema:g})" if ema else "the trained weights"]))
        parts.append(f"{count} run{'s' if count != 1 else ''} with {how}")
    return [f"Evaluated with: {'; '.join(parts)}."]


def _budget_text(epochs: int, train_size: int, limit: int | None) -> str:
    text = f"{epochs} epoch{'s' if epochs != 1 else ''} on {train_size:,} training images"
    return text + (f", at most {limit} batches per epoch" if limit else "")


def budget_notes(runs: Iterable[Run]) -> list[str]:
    """One line saying what the completed runs trained for (epochs, training images), from their results.json.

    A table of short runs is easily read as one of the full recipe: it says its budget itself,
    and says when its runs differ in it. Runs whose results.json does not record it are not counted.
    """
    budgets: dict[tuple, int] = {}
    for run in runs:
        if run.status == "completed" and run.epochs is not None and run.train_size is not None:
            key = (run.epochs, run.train_size, run.limit_train_batches)
            budgets[key] = budgets.get(key, 0) + 1
    if not budgets:
        return []
    if len(budgets) == 1:
        return [f"Runs of {_budget_text(*next(iter(budgets)))}."]
    listed = sorted(budgets.items(), key=lambda item: (-item[1], item[0][0], item[0][1]))
    parts = [f"{_budget_text(*key)} ({count} run{'s' if count != 1 else ''})" for key, count in listed]
    return [f"The runs differ in budget: {'; '.join(parts)}."]


def paper_matches(paper: dict, runs: Iterable[Run]) -> bool:
    """Whether some run is on the paper's data set (runs that do not record theirs never rule a paper out)."""
    datasets = {run.dataset for run in runs}
    return paper["dataset"] in datasets or datasets <= {None}


def paper_left_out_note(name: str, paper: dict, runs: Iterable[Run]) -> str:
    """Why the published rows of ``paper`` are not in a table of ``runs`` (another data set)."""
    datasets = ", ".join(sorted({str(run.dataset) for run in runs if run.dataset is not None}))
    return (f"--paper {name}: its {len(paper['rows'])} published rows are on {paper['dataset']}, the runs here on "
            f"{datasets}; they are left out (--all-rows lists them).")


def choose_paper(runs: list[Run], name: str | None = None, all_rows: bool = False,
                 ) -> tuple[dict | None, str | None, list[str]]:
    """The published table beside ``runs``: ``name``, else the one the runs' experiment names (``paper_table`` in
    their config, when they all name the same one); left out, with a note saying why, when the runs are on another
    data set (``all_rows``: kept). Returns the table, its name and the notes for under the table."""
    notes = []
    if name is None:
        named = {run_setting(run, "paper_table") for run in runs}
        if len(named) == 1 and next(iter(named)) in load_papers():
            name = next(iter(named))
            notes.append(f"Published rows: --paper {name}, the table the runs' experiment names (paper_table).")
    paper = paper_table(name) if name else None
    if paper is not None and not all_rows and not paper_matches(paper, runs):
        # A paper of another data set would only add rows of runs that were never meant to exist.
        notes.append(paper_left_out_note(name, paper, runs))
        paper, name = None, None
    return paper, name, notes
