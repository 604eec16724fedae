"""Runs -> tables: read every ``results.json`` of a sweep, aggregate over seeds, set published numbers beside.

Only ``results.json`` files (and Hydra's ``multirun.yaml``, to know which jobs a sweep
launched) are read: a job that failed, is still running, or left no results is listed as
such, never dropped silently.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .attention_registry import attention_names, canonical_attention
from .config import resolvers  # noqa: F401 - sweeper params may use ${att_blocks:} and ${seeds}-style interpolations
from .config.choices import NETWORK_MODEL_KEYS

ATT_ORDER = {name: index for index, name in enumerate(attention_names())}  # the registry's order
FORMATS = ("md", "csv", "latex")


def load_papers() -> dict[str, dict]:
    """The published tables shipped with the package (``paper_results.json``)."""
    text = resources.files("attn_resnet").joinpath("paper_results.json").read_text()
    return {key: value for key, value in json.loads(text).items() if not key.startswith("_")}


def paper_table(name: str) -> dict:
    papers = load_papers()
    if name not in papers:
        raise ValueError(f"Unknown paper table {name!r}. Valid choices: {', '.join(papers)}.")
    return papers[name]


@dataclass
class Run:
    """One job of a sweep, whatever became of it."""

    path: str
    status: str  # completed | failed | running | missing
    dataset: str | None
    depth: int | None
    att_type: str | None
    seed: int | None = None
    err1: float | None = None
    err5: float | None = None
    params: int | None = None
    gflops: float | None = None
    error: str | None = None

    @property
    def key(self) -> tuple:
        return (self.dataset, self.depth, self.att_type)


def _canonical_att(value: Any) -> str | None:
    if value is None:
        return None
    return canonical_attention(str(value)) or str(value)


PLACEMENT_ORDER = {"residual": 0, "post_add": 1, "stage": 2, "head": 3}


def _attention_identity(att_type: Any, placement: Any = None, model: dict | None = None) -> str | None:
    """The block's name, with its options where the run set any (``SA(groups=8)``) and ``@placement``
    when the run put it somewhere other than the block's own place, so that such runs are never
    averaged together as if they were seeds of one configuration."""
    name = _canonical_att(att_type)
    if name in (None, "none"):
        return name
    options = {key: value for key, value in (model or {}).items() if key not in NETWORK_MODEL_KEYS}
    if options:
        name += "(" + ", ".join(f"{key}={options[key]}" for key in sorted(options)) + ")"
    if placement in (None, "default"):
        return name
    from .models.attention import ATTENTION_BLOCKS

    block = ATTENTION_BLOCKS.get(name.split("(")[0])
    return name if block is not None and block.placement == placement else f"{name}@{placement}"


def _attention_order(att_type: str | None) -> tuple:
    name, _, placement = str(att_type).partition("@")
    return (ATT_ORDER.get(name.split("(")[0], len(ATT_ORDER)), name, PLACEMENT_ORDER.get(placement, -1))


def run_from_results(path: Path) -> Run:
    try:
        results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        return Run(str(path.parent), "failed", None, None, None, error=f"unreadable results.json: {error}")
    # A job whose config was rejected fails before its config is recorded: its overrides tell what it was.
    config = results.get("config") or _identity_from_overrides((results.get("job") or {}).get("overrides"))
    model, data = config.get("model") or {}, config.get("data") or {}
    run = Run(str(path.parent), results.get("status", "unknown"), data.get("name"), _as_int(model.get("depth")),
              _attention_identity(model.get("att_type"), model.get("att_placement"), model), _as_int(config.get("seed")),
              error=results.get("error"))
    if run.status == "completed":
        # "final" is the last epoch on the test set; "final_val" (held-out split) is not what tables report.
        final = results.get("final") or {}
        run.err1, run.err5 = _error_rate(final, 1), _error_rate(final, 5)
        run.params, run.gflops = results.get("params"), results.get("gflops")
    return run


IDENTITY_KEYS = ("data.name", "model.depth", "model.att_type", "model.att_placement", "seed")


def _identity_from_overrides(overrides: list[str] | None) -> dict:
    """The part of a run's identity its command-line overrides give (``data=...``, ``model.depth=...``, ...)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    config = OmegaConf.create()
    try:
        for override in OverridesParser.create().parse_overrides(list(overrides or [])):
            if override.key_or_group in ("data", *IDENTITY_KEYS) and not override.is_sweep_override():
                _apply_job_override(config, override, {"data"})
        return OmegaConf.to_container(config, resolve=False)
    except Exception:  # overrides that do not parse identify nothing
        return {}


def _fill_identity(run: Run, expected: Run) -> None:
    """Complete what ``run`` does not know of its identity from the sweep's record of the same job."""
    for name in ("dataset", "depth", "att_type", "seed"):
        if getattr(run, name) is None:
            setattr(run, name, getattr(expected, name))


def _error_rate(metrics: dict, k: int) -> float | None:
    """Top-k error in %: ``err<k>``, else ``100 - acc<k>``; None where top-k is undefined (fewer than k classes)."""
    error, accuracy = metrics.get(f"err{k}"), metrics.get(f"acc{k}")
    if error is not None:
        return float(error)
    return None if accuracy is None else 100.0 - float(accuracy)


def sweep_jobs(config) -> list[list[str]]:
    """The override list of every job a Hydra sweep of ``config`` (with its ``hydra`` node) launches.

    Combines ``hydra.sweeper.params`` with the command-line overrides exactly as Hydra's
    basic sweeper does (the command line wins for a key given in both). A command-line sweep
    has no ``params`` (``hydra.sweeper.params: null``).
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    params = config.hydra.sweeper.get("params")
    params = OmegaConf.to_container(params, resolve=True) if OmegaConf.is_config(params) else dict(params or {})
    arguments = [f"{key}={value}" for key, value in params.items()] + list(config.hydra.overrides.get("task") or [])
    overrides = OverridesParser.create().parse_overrides(arguments)
    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


def _apply_job_override(config, override, groups: set[str]) -> None:
    """Apply one of a job's overrides to the sweep's saved config, as far as the run's identity goes.

    A config-group choice (``data=synthetic``) is not composed again; only the data set's name
    follows it (each data option is named after its file). Plain keys, new (``+key``) or forced
    (``++key``), are set; deletions (``~key``) and Hydra's own settings are left alone.
    """
    from omegaconf import OmegaConf

    key = override.key_or_group
    if override.is_delete() or key == "hydra" or key.startswith(("hydra.", "hydra/")):
        return
    if key in groups or "/" in key or override.package is not None:
        if key == "data" and override.package is None and isinstance(override.value(), str):
            OmegaConf.update(config, "data.name", override.value(), force_add=True)
        return
    OmegaConf.update(config, key, override.value(), merge=False, force_add=True)


def _select(config, key: str):
    from omegaconf import OmegaConf

    try:
        return OmegaConf.select(config, key, default=None, throw_on_resolution_failure=False)
    except Exception:  # an unresolvable value leaves this part of the identity unknown
        return None


def expected_jobs(multirun_yaml: Path) -> list[tuple[int, Run]]:
    """Every job a Hydra sweep launched (number, identity), rebuilt from its ``multirun.yaml``."""
    import copy

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    saved = OmegaConf.load(multirun_yaml)
    base = OmegaConf.masked_copy(saved, [key for key in saved if key != "hydra"])
    groups = set(_select(saved, "hydra.runtime.choices") or {})
    parser = OverridesParser.create()
    found = []
    for number, job in enumerate(sweep_jobs(saved)):
        config = copy.deepcopy(base)
        for override in parser.parse_overrides(job):
            _apply_job_override(config, override, groups)
        identity = Run(str(multirun_yaml.parent / f"{number}_*"), "missing", _select(config, "data.name"),
                       _as_int(_select(config, "model.depth")), _attention_identity(_select(config, "model.att_type"),
                                                                          _select(config, "model.att_placement"),
                                                                          _plain_node(config, "model")),
                       _as_int(_select(config, "seed")),
                       error="no results.json (job never ran or its folder was removed)")
        found.append((number, identity))
    return found


def _job_number(results_path: Path) -> int | None:
    """The sweep job number recorded in results.json, else the ``<num>_`` prefix of its folder."""
    try:
        number = (json.loads(results_path.read_text()).get("job") or {}).get("num")
    except (OSError, json.JSONDecodeError):
        number = None
    if number is None:
        number = _as_int(results_path.parent.name.split("_", 1)[0])
    return number


def _plain_node(config, key: str) -> dict:
    from omegaconf import OmegaConf

    node = _select(config, key)
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node or {})


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def collect_runs(sweep_dir: str | Path) -> list[Run]:
    """All runs under ``sweep_dir``: one per results.json, plus jobs a sweep launched that left none."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir} is not a folder; pass the sweep folder (e.g. multirun/<time>).")
    expected: dict[tuple[Path, int], Run] = {}  # (sweep folder, job number) -> the job's identity
    for multirun_yaml in sorted(sweep_dir.rglob("multirun.yaml")):
        try:
            jobs = expected_jobs(multirun_yaml)
        except Exception as error:  # an unreadable sweep record must not hide the runs that did finish
            warnings.warn(f"{multirun_yaml}: cannot rebuild the sweep's job list ({type(error).__name__}: {error}); "
                          "jobs of this sweep that left no results.json are not listed.", stacklevel=2)
            continue
        for number, run in jobs:
            expected[(multirun_yaml.parent.resolve(), number)] = run
    runs, seen = [], set()
    for path in sorted(sweep_dir.rglob("results.json")):
        run = run_from_results(path)
        number = _job_number(path)
        if number is not None:
            slot = (path.parent.parent.resolve(), number)
            seen.add(slot)
            if slot in expected:
                _fill_identity(run, expected[slot])
        runs.append(run)
    runs += [run for slot, run in expected.items() if slot not in seen]
    return runs


def _stats(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


@dataclass
class Row:
    dataset: str | None
    depth: int | None
    att_type: str | None
    runs: list[Run] = field(default_factory=list)
    paper: dict | None = None

    @property
    def label(self) -> str:
        attention = "" if self.att_type in (None, "none") else f" + {self.att_type.replace('@', ' @ ')}"
        return f"ResNet-{'?' if self.depth is None else self.depth}{attention}"

    @property
    def completed(self) -> list[Run]:
        return [run for run in self.runs if run.status == "completed"]

    def err(self, which: str) -> tuple[float | None, float | None]:
        """Mean and std of ``err1`` / ``err5`` over the completed runs that define it (None is skipped, never 0)."""
        return _stats([getattr(run, which) for run in self.completed if getattr(run, which) is not None])

    def undefined(self, which: str) -> bool:
        """Runs completed, yet none reports ``which`` (top-5 of a data set with fewer than 5 classes)."""
        return bool(self.completed) and all(getattr(run, which) is None for run in self.completed)

    @property
    def params_m(self) -> float | None:
        values = [run.params for run in self.completed if run.params]
        return values[0] / 1e6 if values else None

    @property
    def gflops(self) -> float | None:
        values = [run.gflops for run in self.completed if run.gflops]
        return values[0] if values else None


def build_rows(runs: list[Run], paper: dict | None = None) -> list[Row]:
    """One row per architecture (data set, depth, attention); the paper's rows appear even without runs."""
    rows: dict[tuple, Row] = {}
    for run in runs:
        rows.setdefault(run.key, Row(*run.key)).runs.append(run)
    if paper is not None:
        for published in paper["rows"]:
            key = (paper["dataset"], published["depth"], published["att_type"])
            rows.setdefault(key, Row(*key)).paper = published
    return sorted(rows.values(), key=lambda r: (str(r.dataset), r.depth or 0, _attention_order(r.att_type)))


def _fmt(value: float | None, digits: int = 2, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _mean_std(mean: float | None, std: float | None, undefined: bool = False) -> str:
    if mean is None:
        return "n/a" if undefined else "–"
    return f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f}"


def _paper_value(row: Row, key: str) -> float | None:
    if row.paper is None or row.paper.get(key) is None:
        return None
    return float(row.paper[key])


def _delta(ours: float | None, published: float | None) -> float | None:
    return None if ours is None or published is None else ours - published


HEADER = ["Model", "Data", "Params (M)", "GFLOPs", "Top-1 err (%)", "Top-5 err (%)", "Seeds",
          "Paper top-1", "Δ top-1", "Paper top-5", "Δ top-5"]


def table_cells(row: Row) -> list[str]:
    err1, std1 = row.err("err1")
    err5, std5 = row.err("err5")
    paper1, paper5 = _paper_value(row, "err1"), _paper_value(row, "err5")
    seeds = f"{len(row.completed)}" + (f"/{len(row.runs)}" if len(row.runs) != len(row.completed) else "")
    return [row.label, str(row.dataset), _fmt(row.params_m), _fmt(row.gflops, 3), _mean_std(err1, std1),
            _mean_std(err5, std5, undefined=row.undefined("err5")), seeds, _fmt(paper1),
            _fmt(_delta(err1, paper1), signed=True), _fmt(paper5), _fmt(_delta(err5, paper5), signed=True)]


def csv_record(row: Row) -> dict:
    err1, std1 = row.err("err1")
    err5, std5 = row.err("err5")
    paper1, paper5 = _paper_value(row, "err1"), _paper_value(row, "err5")
    att_type, _, placement = str(row.att_type).partition("@")
    return {"model": row.label, "data": row.dataset, "depth": row.depth,
            "att_type": row.att_type if row.att_type is None else att_type, "att_placement": placement or "default",
            "params_m": row.params_m, "gflops": row.gflops, "err1_mean": err1, "err1_std": std1, "err5_mean": err5,
            "err5_std": std5, "seeds_completed": len(row.completed), "runs": len(row.runs), "paper_err1": paper1,
            "delta_err1": _delta(err1, paper1), "paper_err5": paper5, "delta_err5": _delta(err5, paper5)}


def problems(rows: list[Row]) -> list[str]:
    """One line per run that did not complete, and per published row that has no run."""
    lines = []
    for row in rows:
        for run in row.runs:
            if run.status != "completed":
                state = {"running": "did not finish (still running, or killed)"}.get(run.status, run.status)
                lines.append(f"{row.label} ({row.dataset}, seed {run.seed}): {state} — {run.path}"
                             + (f": {run.error.splitlines()[0]}" if run.error else ""))
        if not row.runs:
            lines.append(f"{row.label} ({row.dataset}): no runs")
    return lines


def render(rows: list[Row], fmt: str = "md", paper: dict | None = None, caption: str | None = None,
           header: list[str] | None = None, cells=table_cells, records=csv_record) -> str:
    """The table in Markdown, CSV or LaTeX, with a caption and the list of runs that did not complete."""
    if fmt not in FORMATS:
        raise ValueError(f"Unknown format {fmt!r}. Valid choices: {', '.join(FORMATS)}.")
    header = header or HEADER
    issues = problems(rows) if cells is table_cells else []
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(records(rows[0]).keys()) if rows else ["model"])
        writer.writeheader()
        for row in rows:
            writer.writerow(records(row))
        return buffer.getvalue()
    notes = [line for line in (caption, paper and f"Published: {paper['source']}",
                               paper and paper.get("note")) if line]
    if fmt == "md":
        lines = [f"| {' | '.join(header)} |", "|" + "|".join("---" for _ in header) + "|"]
        lines += [f"| {' | '.join(cells(row))} |" for row in rows]
        text = "\n".join(lines) + "\n"
        if notes:
            text += "\n" + "\n".join(notes) + "\n"
        if issues:
            text += "\nRuns not completed:\n" + "\n".join(f"- {line}" for line in issues) + "\n"
        return text
    lines = [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}",
             r"\toprule", " & ".join(_latex_escape(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(_latex_escape(c) for c in cells(row)) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if notes:
        lines.append(r"\caption{" + _latex_escape(" ".join(notes)) + "}")
    lines.append(r"\end{table}")
    text = "\n".join(lines) + "\n"
    if issues:
        text += "\n".join(f"% not completed: {_latex_escape(line)}" for line in issues) + "\n"
    return text


def _latex_escape(text: str) -> str:
    return (text.replace("%", r"\%").replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("_", r"\_")
            .replace("–", "--"))


# --------------------------------------------------------------- complexity only
COMPLEXITY_HEADER = ["Model", "Params (M)", "Paper params (M)", "GFLOPs", "Paper GFLOPs", "Match"]


@dataclass
class ComplexityRow:
    depth: int
    att_type: str
    params_m: float
    gflops: float
    paper: dict

    @property
    def label(self) -> str:
        return Row(None, self.depth, self.att_type).label

    def printed(self, key: str, value: float) -> str:
        """Our value at the precision the paper printed its own."""
        published = self.paper.get(key)
        decimals = len(published.split(".")[1]) if published and "." in published else 2
        return f"{value:.{decimals}f}"

    @property
    def matches(self) -> bool:
        return all(self.paper.get(key) in (None, self.printed(key, value))
                   for key, value in (("params_m", self.params_m), ("gflops", self.gflops)))


def complexity_rows(paper: dict, image_size: int | None = None) -> list[ComplexityRow]:
    """Params and GFLOPs of each of the paper's models, built on the meta device (no training)."""
    import torch

    from .complexity import measure
    from .models import ResidualNet

    network_type = {"imagenet": "ImageNet", "cifar10": "CIFAR10", "cifar100": "CIFAR100"}[paper["dataset"]]
    size = image_size or (224 if network_type == "ImageNet" else 32)
    rows = []
    for published in paper["rows"]:
        with torch.device("meta"):
            model = ResidualNet(network_type, published["depth"], None, published["att_type"],
                                stride_in_1x1=bool(published.get("stride_in_1x1", False)))
        result = measure(model, (3, size, size))
        rows.append(ComplexityRow(published["depth"], published["att_type"], result.params_m, result.gflops,
                                  published))
    return rows


def complexity_cells(row: ComplexityRow) -> list[str]:
    return [row.label + (" (stride in 1x1)" if row.paper.get("stride_in_1x1") else ""),
            row.printed("params_m", row.params_m), row.paper.get("params_m") or "–",
            row.printed("gflops", row.gflops), row.paper.get("gflops") or "–", "yes" if row.matches else "NO"]


def complexity_record(row: ComplexityRow) -> dict:
    return {"model": row.label, "depth": row.depth, "att_type": row.att_type,
            "stride_in_1x1": bool(row.paper.get("stride_in_1x1")), "params_m": row.params_m, "gflops": row.gflops,
            "paper_params_m": row.paper.get("params_m"), "paper_gflops": row.paper.get("gflops"),
            "match": row.matches}


# ------------------------------------------------------- blocks x placements
def placement_pivot(rows: list[Row], caption: str | None = None) -> str:
    """Markdown: one table per (data set, depth), a row per block, a column per placement, top-1 error.

    Each cell is the mean top-1 error (± std over seeds, and the number of seeds); the block's own
    placement is marked with †, and the lowest error of each block is in bold. The plain network
    (att_type=none) is the first row, for reference.
    """
    from .models.attention import ATTENTION_BLOCKS

    placements = list(PLACEMENT_ORDER)
    tables: dict[tuple, dict[str, dict[str, Row]]] = {}
    for row in rows:
        name, _, placement = str(row.att_type).partition("@")
        if name != "none" and not placement:
            block = ATTENTION_BLOCKS.get(name.split("(")[0])
            placement = block.placement if block is not None else "default"
        tables.setdefault((row.dataset, row.depth), {}).setdefault(name, {})[placement or "none"] = row
    text = []
    for (dataset, depth), blocks in sorted(tables.items(), key=lambda item: (str(item[0][0]), item[0][1] or 0)):
        text += [f"**{dataset}, ResNet-{depth}**: top-1 error (%), mean ± std over seeds (seeds); "
                 "† the block's own placement; bold: the block's best placement.", "",
                 "| Block | " + " | ".join(placements) + " | best |", "|---|" + "---|" * (len(placements) + 1)]
        for name in sorted(blocks, key=lambda n: _attention_order(n)):
            cells = blocks[name]
            if name == "none":
                err, std = cells["none"].err("err1")
                text.append(f"| none (plain) | {_pivot_cell(err, std, len(cells['none'].completed))} "
                            + "| " * len(placements) + "|")
                continue
            means = {p: cells[p].err("err1")[0] for p in placements if p in cells}
            measured = {p: m for p, m in means.items() if m is not None}
            best = min(measured, key=measured.get) if measured else None
            block = ATTENTION_BLOCKS.get(name.split("(")[0])
            own = block.placement if block is not None else None
            row_cells = []
            for p in placements:
                if p not in cells:
                    row_cells.append("—")
                    continue
                err, std = cells[p].err("err1")
                row_cells.append(_pivot_cell(err, std, len(cells[p].completed), bold=p == best and len(measured) > 1)
                                 + (" †" if p == own else ""))
            text.append(f"| {name} | " + " | ".join(row_cells) + f" | {best or '—'} |")
        text.append("")
    if caption:
        text += [caption, ""]
    issues = problems(rows)
    if issues:
        text += ["Runs not completed:", *(f"- {line}" for line in issues), ""]
    return "\n".join(text)


def _pivot_cell(err: float | None, std: float | None, seeds: int, bold: bool = False) -> str:
    if err is None:
        return "–"
    value = f"{err:.2f}" + (f" ± {std:.2f}" if std is not None else "")
    return (f"**{value}**" if bold else value) + f" ({seeds})"
