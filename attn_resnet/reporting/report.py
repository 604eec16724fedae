"""Runs -> what a report shows: one section per data set (the table's rows, its notes, the runs not completed),
the header (budget, devices, code, recipe features), learning curves over seeds, cost points and attention maps.

The table's numbers come from the same rows as ``paper_table.py``'s (``build_rows``, ``table_cells``,
``table_notes``); this module adds only what a table has no room for. Everything is read from the run
folders: ``results.json`` (a completed or failed run's history), and for a run still going, or stopped
before it wrote its history, the TensorBoard events or ``metrics.csv`` it has written so far.
"""

from __future__ import annotations

import csv
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..config.recipe import recipe_features
from ..engine.loggers.base import EPOCH_SCALARS
from ..engine.loggers.csv_logger import read_metrics_csv
from ..runfiles import run_folder_in_use
from .aggregate import Row, build_rows, choose_paper, problems
from .render import column_indices, table_cells, table_notes, HEADER, COLUMNS
from .pivots import row_placement
from .runs import Run, run_recipe

# The history keys a report draws, and the scalars the loggers receive them as (``train/loss``, ``val/acc1``).
CURVE_TAGS = {key: tag for tag, key in EPOCH_SCALARS.items() if key in ("val_acc1", "train_loss")}


@dataclass
class Curve:
    """One row's metric per epoch over its runs: the mean and the min-max band (``runs``: how many at each epoch)."""

    label: str
    epochs: list[int]
    mean: list[float]
    low: list[float]
    high: list[float]
    runs: list[int]


@dataclass
class CostPoint:
    """One row's top-1 accuracy (mean, std over seeds) against its size, compute and training speed."""

    label: str
    acc1: float
    acc1_std: float | None
    params_m: float | None
    gflops: float | None
    images_per_sec: float | None
    images_per_sec_std: float | None
    published: bool = False  # the paper's numbers for the row

    @property
    def legend(self) -> str:
        return f"{self.label} (published)" if self.published else self.label


@dataclass
class Section:
    """The runs of one data set, with their table."""

    dataset: str
    runs: list[Run]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    not_completed: list[str] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    cells: list[list[str]] = field(default_factory=list)
    pivot: str | None = None  # "placement" or "recipe" when the runs vary it
    # Each run's epochs (``run_history``), by folder: read once, for the curves and the runs' states.
    histories: dict[str, list[dict]] = field(default_factory=dict)


def sections(runs: list[Run], paper_name: str | None = None, all_rows: bool = False,
             columns: list[str] | None = None) -> list[Section]:
    """One section per data set, in name order; a run that does not record its data set gets its own section."""
    by_dataset: dict[str, list[Run]] = {}
    for run in runs:
        by_dataset.setdefault(str(run.dataset) if run.dataset is not None else "(data set not recorded)",
                              []).append(run)
    return [section(name, by_dataset[name], paper_name, all_rows, columns) for name in sorted(by_dataset)]


def section(dataset: str, runs: list[Run], paper_name: str | None = None, all_rows: bool = False,
            columns: list[str] | None = None) -> Section:
    """The table of ``runs`` (one data set) as ``paper_table.py`` builds it, with its columns chosen once."""
    paper, _, notes = choose_paper(runs, paper_name, all_rows)
    rows = build_rows(runs, paper)
    all_cells = [table_cells(row) for row in rows]
    keep = column_indices(HEADER, all_cells, columns, COLUMNS)
    if not columns:  # a section is one data set: its heading names it
        keep = [index for index in keep if HEADER[index] != COLUMNS["data"]]
    recipes = {run_recipe(run) for run in runs}
    placements = {str(row.att_type).partition("@")[2] for row in rows if "@" in str(row.att_type)}
    pivot = "placement" if placements else "recipe" if len(recipes) > 1 else None
    histories = {run.path: run_history(run) for run in runs}
    return Section(dataset, runs, rows, [*notes, *table_notes(rows, paper)], problems(rows), [HEADER[i] for i in keep], [[cells[i] for i in keep] for cells in all_cells], pivot,
                   histories)


# ------------------------------------------------------------------ the header
def _counted(values) -> list[str]:
    """``["NVIDIA H200 (3 runs)", ...]`` of the values that are not None, most frequent first."""
    counts = Counter(str(value) for value in values if value not in (None, ""))
    return [f"{value} ({count} run{'s' if count != 1 else ''})" for value, count in counts.most_common()]


def header_facts(runs: list[Run]) -> list[tuple[str, str]]:
    """(what, value) pairs for the page's header: runs by status, devices, code versions, precision, recipes."""
    records = [run.record for run in runs]
    statuses = Counter(run.status for run in runs)
    facts = [("Runs", ", ".join(f"{count} {status}" for status, count in statuses.most_common()))]
    facts.append(("Device", "; ".join(_counted(r.get("device") for r in records)) or "not recorded"))
    world = _counted(r.get("world_size") for r in records if (r.get("world_size") or 1) > 1)
    if world:
        facts.append(("Processes", "; ".join(world)))
    facts.append(("Precision", "; ".join(_counted({"32": "fp32"}.get(str(r.get("precision")), r.get("precision"))
                                                   for r in records)) or "not recorded"))
    facts.append(("Commit", "; ".join(_counted(r.get("git_commit") for r in records)) or "not recorded"))
    facts.append(("Versions", "; ".join(_counted(
        f"torch {r['torch_version']}" + (f", attn-resnet {r['package_version']}" if r.get("package_version") else "")
        for r in records if r.get("torch_version"))) or "not recorded"))
    recipes = []
    for run in runs:
        if run.config and run.config.get("trainer"):
            features = recipe_features(run.config)
            name = run.config.get("recipe_name")
            recipes.append(f"{name}: " * bool(name) + (", ".join(features) if features else "plain (no recipe "
                                                                                           "feature on)"))
    facts.append(("Recipe", "; ".join(_counted(recipes)) or "not recorded"))
    return facts


# ------------------------------------------------------------ runs still going
def run_state(run: Run, history: list[dict] | None = None) -> str:
    """What became of the run, in words: completed, failed, running now, stopped by a signal, or stopped without
    a record; with the number of attempts when it took several (restarts, requeues, resubmissions). ``history``:
    its ``run_history``, when read already."""
    attempts = run.record.get("attempts") or []
    return _state(run, history) + (f" ({len(attempts)} attempts)" if len(attempts) > 1 else "")


def _state(run: Run, history: list[dict] | None) -> str:
    if run.status == "stopped":
        return "stopped on a signal, to resume" + (" (requeued)" if run.record.get("requeue") else "")
    if run.status == "running":
        epochs = len(run_history(run) if history is None else history)
        total = ((run.config or {}).get("trainer") or {}).get("epochs")
        done = f", {epochs} of {total} epochs logged" if total else f", {epochs} epochs logged"
        if run_folder_in_use(run.path):
            return "running" + done
        return "stopped without a final record (killed, or its machine went down)" + done
    return run.status


def run_history(run: Run) -> list[dict]:
    """The run's epochs: results.json's history, else (a run still going or killed) its metrics.csv or its
    TensorBoard scalars so far."""
    history = run.record.get("history")
    if history:
        return list(history)
    folder = Path(run.path)
    metrics_csv = folder / "metrics.csv"
    if metrics_csv.is_file():
        return _history_from_csv(metrics_csv)
    if any(folder.glob("events.out.tfevents.*")):
        return _history_from_events(folder)
    return []


def _history_from_csv(path: Path) -> list[dict]:
    try:
        rows = read_metrics_csv(path)
    except (OSError, ValueError, KeyError, csv.Error):  # a file being replaced, or not the logger's
        return []
    return [{"epoch": step, **{key: row[tag] for key, tag in CURVE_TAGS.items() if tag in row}}
            for step, row in sorted(rows.items())]


def _history_from_events(folder: Path) -> list[dict]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    try:
        events.Reload()
    except Exception:  # a file cut short by a kill: what could be read is kept by the accumulator
        pass
    tags = set(events.Tags().get("scalars", []))
    by_epoch: dict[int, dict] = {}
    for key, tag in CURVE_TAGS.items():
        if tag in tags:
            for event in events.Scalars(tag):
                by_epoch.setdefault(event.step, {"epoch": event.step})[key] = float(event.value)
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


# ----------------------------------------------------------------- the figures' data
def curves(rows: list[Row], key: str, histories: dict[str, list[dict]] | None = None) -> list[Curve]:
    """Per row, ``key`` (``val_acc1``, ``train_loss``) per epoch: the mean over its runs and the min-max band.
    Runs still going count with the epochs they have; failed runs are left out. ``histories``: the runs'
    ``run_history`` by folder, when read already."""
    result = []
    for row in rows:
        per_epoch: dict[int, list[float]] = {}
        for run in row.runs:
            if run.status not in ("completed", "running"):
                continue
            for record in (histories[run.path] if histories is not None else run_history(run)):
                if record.get(key) is not None:
                    per_epoch.setdefault(int(record["epoch"]), []).append(float(record[key]))
        if per_epoch:
            epochs = sorted(per_epoch)
            result.append(Curve(row.label, epochs, [statistics.fmean(per_epoch[e]) for e in epochs],
                                [min(per_epoch[e]) for e in epochs], [max(per_epoch[e]) for e in epochs],
                                [len(per_epoch[e]) for e in epochs]))
    return result


def cost_points(rows: list[Row]) -> list[CostPoint]:
    """Each row with completed runs as a point (top-1 accuracy against params, GFLOPs, training images/s), and the
    published rows beside them where the paper gives both a top-1 error and a size."""
    points = []
    for row in rows:
        err, std = row.err("err1")
        if err is not None:
            speeds = [run.record["images_per_sec"] for run in row.completed if run.record.get("images_per_sec")]
            points.append(CostPoint(row.label, 100.0 - err, std, row.params_m, row.gflops,
                                    statistics.fmean(speeds) if speeds else None,
                                    statistics.stdev(speeds) if len(speeds) > 1 else None))
        published = row.paper or {}
        if published.get("err1") is not None and (published.get("params_m") or published.get("gflops")):
            points.append(CostPoint(row.label, 100.0 - float(published["err1"]), None,
                                    _number(published.get("params_m")), _number(published.get("gflops")), None, None,
                                    published=True))
    return points


def _number(value) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def speed_devices(rows: list[Row]) -> list[str]:
    """The devices the completed runs' training images/s were measured on."""
    return sorted({str(run.record.get("device")) for row in rows for run in row.completed
                   if run.record.get("images_per_sec") and run.record.get("device")})


def placement_points(rows: list[Row]) -> dict[str, dict[str, tuple[float, float | None]]]:
    """{block: {placement: (top-1 error mean, std)}} of the rows with completed runs (the placement pivot's
    numbers); the plain network under placement "none"."""
    points: dict[str, dict[str, tuple[float, float | None]]] = {}
    for row in rows:
        err, std = row.err("err1")
        if err is not None:
            name, placement = row_placement(row)
            points.setdefault(name, {})[placement] = (err, std)
    return points


def attention_images(run: Run) -> dict[str, bytes]:
    """{stage: PNG} of the attention maps the run logged last (``trainer.attention_maps_every``), from its
    TensorBoard events; empty when it logged none."""
    folder = Path(run.path)
    if not any(folder.glob("events.out.tfevents.*")):
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 1})
    try:
        events.Reload()
    except Exception:
        pass
    images = {}
    for tag in sorted(events.Tags().get("images", [])):
        if tag.startswith("attention/"):
            last = events.Images(tag)[-1]
            images[tag.removeprefix("attention/")] = last.encoded_image_string
    return images
