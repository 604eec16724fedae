"""Runs -> tables: read every ``results.json`` of a sweep, aggregate over seeds, set published numbers beside.

Only ``results.json`` files (and Hydra's ``multirun.yaml``, to know which jobs a sweep
launched) are read: a job that failed, is still running, or left no results is listed as
such, never dropped silently. The same reading serves a ledger of committed runs
(``docs/results/runs/<card>/...``), where seeds accumulate over many sweeps: ``where``
conditions pick one recipe out of it, and ``count_seeds`` says how many seeds of a
configuration are already done.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .attention_registry import attention_names, canonical_attention
from .config import resolvers  # noqa: F401 - sweeper params may use ${att_blocks:} and ${seeds}-style interpolations
from .config.choices import EXECUTION_MODEL_KEYS, NETWORK_MODEL_KEYS, TRANSFER_MODEL_KEYS
from .config.resume import OFF_VALUES

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
    # The training budget: epochs completed, training-set size, and the batches per epoch when
    # trainer.limit_train_batches cut the epochs short (None: the whole set).
    epochs: int | None = None
    train_size: int | None = None
    limit_train_batches: int | None = None
    # What the run was launched with, for ``where`` conditions: the resolved config and the
    # command-line overrides (the only record of config-group choices such as ``experiment``).
    config: dict | None = field(default=None, repr=False, compare=False)
    overrides: list[str] = field(default_factory=list, repr=False, compare=False)

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
    # A fine-tuned run (model.init_from, model.freeze) is never averaged with runs trained from scratch;
    # how the network ran (model.fused) does not tell runs apart.
    options = {key: value for key, value in (model or {}).items()
               if key not in NETWORK_MODEL_KEYS + EXECUTION_MODEL_KEYS
               and not (key in TRANSFER_MODEL_KEYS and value == OFF_VALUES.get(f"model.{key}"))}
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
              error=results.get("error"), config=config,
              overrides=list((results.get("job") or {}).get("overrides") or []))
    if run.status == "completed":
        # "final" is the last epoch on the test set; "final_val" (held-out split) is not what tables report.
        final = results.get("final") or {}
        run.err1, run.err5 = _error_rate(final, 1), _error_rate(final, 5)
        run.params, run.gflops = results.get("params"), results.get("gflops")
        run.epochs = _as_int(results.get("epochs"))
        run.train_size = _as_int((results.get("data") or {}).get("train_size"))
        run.limit_train_batches = _as_int((config.get("trainer") or {}).get("limit_train_batches")) or None
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
                       error="no results.json (job never ran or its folder was removed)",
                       config=_container(config), overrides=list(job))
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


def _container(config) -> dict:
    """A job's config as plain data, resolved where its interpolations allow (else as written)."""
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(config, resolve=True)
    except Exception:  # an interpolation that needs Hydra's runtime (${hydra:...}) cannot resolve here
        return OmegaConf.to_container(config, resolve=False)


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def collect_runs(sweep_dir: str | Path, where: Mapping[str, str] | Iterable[str] | None = None) -> list[Run]:
    """All runs under ``sweep_dir``, at any depth: one per results.json, plus jobs a sweep launched that left none.

    ``where`` keeps only the runs that satisfy every condition (see ``run_matches``).
    """
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
    conditions = parse_where(where)
    return [run for run in runs if run_matches(run, conditions)]


# ------------------------------------------------------------- selecting runs
def parse_where(conditions: Mapping[str, str] | Iterable[str] | None) -> dict[str, str]:
    """``["experiment=cifar10_fast", "model.att_type=CBAM"]`` (or a mapping already) -> {key: value}."""
    if conditions is None:
        return {}
    if isinstance(conditions, Mapping):
        return {str(key): str(value) for key, value in conditions.items()}
    parsed = {}
    for condition in conditions:
        key, equals, value = str(condition).partition("=")
        if not equals or not key.strip():
            raise ValueError(f"Invalid condition {condition!r}: write key=value "
                             "(e.g. experiment=cifar10_fast or model.att_type=CBAM).")
        parsed[key.strip()] = value.strip()
    return parsed


def run_setting(run: Run, key: str) -> Any:
    """What ``key`` was in ``run``: the scalar its resolved config holds there, else the value its
    command-line overrides gave it. A config group's choice (``experiment``, ``trainer``) leaves no
    scalar in the resolved config, so the overrides are its only record; None when neither has it."""
    node: Any = run.config or {}
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is not None and not isinstance(node, (dict, list)):
        return node
    for override in reversed(run.overrides):  # the last one wins, as on Hydra's command line
        name, equals, value = override.lstrip("+").partition("=")
        if equals and name == key:  # a deletion (~key=...) keeps its tilde and never matches
            return value.strip("'\"")
    return None


def _same_value(key: str, actual: Any, wanted: str) -> bool:
    """Equal as the config means them: attention names in any spelling, numbers by value (5e-4 is 0.0005)."""
    if key.split(".")[-1] == "att_type":
        return _canonical_att(actual) == _canonical_att(wanted)
    if isinstance(actual, bool) or str(actual).lower() in ("true", "false"):
        return str(actual).lower() == wanted.lower()
    try:
        return float(actual) == float(wanted)
    except (TypeError, ValueError):
        return str(actual) == wanted


def run_matches(run: Run, where: Mapping[str, str]) -> bool:
    """Whether ``run`` satisfies every ``key=value`` condition; a key the run does not have never matches."""
    for key, wanted in where.items():
        actual = run_setting(run, key)
        if actual is None or not _same_value(key, actual, wanted):
            return False
    return True


def unknown_keys(runs: list[Run], where: Mapping[str, str]) -> list[str]:
    """The condition keys that no run has at all: most likely misspelt (``model.att_tpye``), since a
    condition on them silently selects nothing."""
    return [key for key in where if all(run_setting(run, key) is None for run in runs)]


def completed_seeds(root: str | Path, where: Mapping[str, str] | Iterable[str] | None = None) -> list[int]:
    """The distinct seeds of the completed runs under ``root`` that satisfy ``where``, sorted.

    A folder that does not exist yet holds no runs (the first session on a new card).
    Runs that failed or did not finish are not counted: their seed still has to be run.
    """
    if not Path(root).exists():
        return []
    return distinct_seeds(collect_runs(root, where))


def distinct_seeds(runs: Iterable[Run]) -> list[int]:
    """The distinct seeds of the completed ones among ``runs``, sorted (a seed run twice counts once)."""
    return sorted({run.seed for run in runs if run.status == "completed" and run.seed is not None})


def count_seeds(root: str | Path, where: Mapping[str, str] | Iterable[str] | None = None) -> int:
    """How many distinct seeds of the configuration ``where`` describes have completed under ``root``.

    For a campaign that tops a ledger up to N seeds: ``count_seeds(ledger, {"experiment":
    "cifar10_fast", "model.att_type": "CBAM"}) >= N`` means that configuration can be skipped.
    """
    return len(completed_seeds(root, where))


def _stats(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


# ------------------------------------------------- paired differences from the plain network
# t_{0.975, df} for df = 1..30, printed from scipy.stats.t.ppf to 10 significant digits. A table,
# not scipy, so that building a table needs nothing beyond the standard library; beyond df 30 the
# Cornish-Fisher expansion about the normal quantile is within 3e-8 of the exact value.
T_975 = (
    12.70620474, 4.30265273, 3.182446305, 2.776445105, 2.570581836,
    2.446911851, 2.364624252, 2.306004135, 2.262157163, 2.228138852,
    2.20098516, 2.17881283, 2.160368656, 2.144786688, 2.131449546,
    2.119905299, 2.109815578, 2.10092204, 2.093024054, 2.085963447,
    2.079613845, 2.073873068, 2.06865761, 2.063898562, 2.059538553,
    2.055529439, 2.051830516, 2.048407142, 2.045229642, 2.042272456,
)
Z_975 = 1.959963984540054  # the standard normal's 0.975 quantile


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (two-sided 95% intervals)."""
    if df < 1:
        raise ValueError(f"t quantile needs at least 1 degree of freedom, got {df}")
    if df <= len(T_975):
        return T_975[df - 1]
    z = Z_975
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
            + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * df**4))


@dataclass(frozen=True)
class PairedDifference:
    """Mean of per-seed differences with its 95% t interval; mean and bounds None under 2 pairs."""

    pairs: int
    mean: float | None = None
    low: float | None = None
    high: float | None = None

    @property
    def excludes_zero(self) -> bool:
        """The interval lies wholly above 0 (a gain) or wholly below it (a loss)."""
        return self.low is not None and (self.low > 0 or self.high < 0)


def paired_difference(treated: Mapping[int, float], reference: Mapping[int, float]) -> PairedDifference:
    """``treated[s] - reference[s]`` over the seeds ``s`` both have: mean ± t_{0.975, n-1} sd / sqrt(n).

    A seed draws the same data order and augmentations for both runs; pairing by seed removes
    that shared part of the spread, which an unpaired comparison of the two means counts as
    noise. A seed only one side ran pairs with nothing and is left out. One pair has no
    spread, so no interval.
    """
    differences = [treated[seed] - reference[seed] for seed in sorted(treated.keys() & reference.keys())]
    if len(differences) < 2:
        return PairedDifference(len(differences))
    mean = statistics.fmean(differences)
    half_width = t_quantile_975(len(differences) - 1) * statistics.stdev(differences) / math.sqrt(len(differences))
    return PairedDifference(len(differences), mean, mean - half_width, mean + half_width)


@dataclass
class Row:
    dataset: str | None
    depth: int | None
    att_type: str | None
    runs: list[Run] = field(default_factory=list)
    paper: dict | None = None
    baseline: Row | None = field(default=None, repr=False)  # the plain network (none) of the same data and depth

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


def build_rows(runs: list[Run], paper: dict | None = None) -> list[Row]:
    """One row per architecture (data set, depth, attention); the paper's rows appear even without runs."""
    rows: dict[tuple, Row] = {}
    for run in runs:
        rows.setdefault(run.key, Row(*run.key)).runs.append(run)
    if paper is not None:
        for published in paper["rows"]:
            key = (paper["dataset"], published["depth"], published["att_type"])
            rows.setdefault(key, Row(*key)).paper = published
    for (dataset, depth, att_type), row in rows.items():
        if att_type not in (None, "none"):
            row.baseline = rows.get((dataset, depth, "none"))
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
          "Paper top-1", "Δ top-1", "Paper top-5", "Δ top-5", "Top-1 acc vs plain (95% CI)", "Pairs"]
SIGNIFICANT = "*"
PAIRED_LEGEND = ("Top-1 acc vs plain: the block's top-1 accuracy minus the plain ResNet's (same data and depth), "
                 "in points, averaged over the seeds both ran (paired by seed; Pairs: how many), with its 95% "
                 "interval mean ± t(0.975, n-1) sd/sqrt(n); " + SIGNIFICANT + " the interval excludes 0 "
                 "(a gain if positive, a loss if negative); n/a: fewer than 2 pairs.")


def _paired_cells(difference: PairedDifference | None) -> list[str]:
    """``+2.00 [+1.75, +2.25] *`` and the number of pairs; "–" for a row with nothing to pair with."""
    if difference is None:
        return ["–", "–"]
    if difference.mean is None:
        return ["n/a", str(difference.pairs)]
    text = f"{difference.mean:+.2f} [{difference.low:+.2f}, {difference.high:+.2f}]"
    return [text + (f" {SIGNIFICANT}" if difference.excludes_zero else ""), str(difference.pairs)]


def table_cells(row: Row) -> list[str]:
    err1, std1 = row.err("err1")
    err5, std5 = row.err("err5")
    paper1, paper5 = _paper_value(row, "err1"), _paper_value(row, "err5")
    seeds = f"{len(row.completed)}" + (f"/{len(row.runs)}" if len(row.runs) != len(row.completed) else "")
    return [row.label, str(row.dataset), _fmt(row.params_m), _fmt(row.gflops, 3), _mean_std(err1, std1),
            _mean_std(err5, std5, undefined=row.undefined("err5")), seeds, _fmt(paper1),
            _fmt(_delta(err1, paper1), signed=True), _fmt(paper5), _fmt(_delta(err5, paper5), signed=True),
            *_paired_cells(row.vs_plain)]


def _rounded(value: float | None, digits: int = 2) -> float | None:
    """``value`` to the digits the Markdown table prints (no ``29.700000000000003`` in a CSV file)."""
    return None if value is None else round(float(value), digits)


def csv_record(row: Row) -> dict:
    """The row as numbers, rounded as the Markdown table prints them (errors 2 decimals, GFLOPs 3)."""
    err1, std1 = row.err("err1")
    err5, std5 = row.err("err5")
    paper1, paper5 = _paper_value(row, "err1"), _paper_value(row, "err5")
    att_type, _, placement = str(row.att_type).partition("@")
    paired = row.vs_plain or PairedDifference(0)
    r = _rounded
    return {"model": row.label, "data": row.dataset, "depth": row.depth,
            "att_type": row.att_type if row.att_type is None else att_type, "att_placement": placement or "default",
            "params_m": r(row.params_m), "gflops": r(row.gflops, 3), "err1_mean": r(err1), "err1_std": r(std1),
            "err5_mean": r(err5), "err5_std": r(std5), "seeds_completed": len(row.completed), "runs": len(row.runs),
            "paper_err1": paper1, "delta_err1": r(_delta(err1, paper1)), "paper_err5": paper5,
            "delta_err5": r(_delta(err5, paper5)), "acc1_vs_plain": r(paired.mean),
            "acc1_vs_plain_low": r(paired.low), "acc1_vs_plain_high": r(paired.high),
            "pairs": paired.pairs if row.vs_plain is not None else None,
            "acc1_vs_plain_excludes_0": paired.excludes_zero if paired.mean is not None else None}


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
    paired = cells is table_cells and any(row.vs_plain is not None for row in rows)
    # The budget right under the table: a table of short runs must not pass for one of the full recipe.
    budget = budget_notes(run for row in rows for run in row.runs) if cells is table_cells else []
    notes = [line for line in (caption, *budget, paired and PAIRED_LEGEND, paper and f"Published: {paper['source']}",
                               paper and paper.get("note")) if line]
    if cells is table_cells:
        notes += mixed_experiments(rows) + mixed_recipes(rows)
    notes += evaluation_notes(rows)
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
            "stride_in_1x1": bool(row.paper.get("stride_in_1x1")),
            "params_m": float(row.printed("params_m", row.params_m)), "gflops": float(row.printed("gflops", row.gflops)),
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
    budget = budget_notes(run for row in rows for run in row.runs)
    if budget:
        text += [*budget, ""]
    issues = problems(rows)
    if issues:
        text += ["Runs not completed:", *(f"- {line}" for line in issues), ""]
    return "\n".join(text)


def _pivot_cell(err: float | None, std: float | None, seeds: int, bold: bool = False) -> str:
    if err is None:
        return "–"
    value = f"{err:.2f}" + (f" ± {std:.2f}" if std is not None else "")
    return (f"**{value}**" if bold else value) + f" ({seeds})"


# ------------------------------------------------------------ blocks x recipes
NO_RECIPE = "(no recipe)"
RECIPE_LEGEND = ("vs plain: the block's top-1 accuracy minus the plain ResNet's trained with the same recipe "
                 "(same data and depth), in points, averaged over the seeds both ran (paired by seed; n: how many), "
                 "with its 95% interval mean ± t(0.975, n-1) sd/sqrt(n); " + SIGNIFICANT + " the interval excludes 0; "
                 "n/a: fewer than 2 pairs.")


def run_recipe(run: Run) -> str:
    """The recipe a run trained with: ``recipe_name`` in its resolved config (each ``conf/recipe/`` file
    sets it), else the ``recipe=`` choice of its command line (a job rejected before its config was
    recorded, or one rebuilt from its sweep's record); ``NO_RECIPE`` when neither names one."""
    for key in ("recipe_name", "recipe"):
        value = run_setting(run, key)
        if value is not None:
            return str(value)
    return NO_RECIPE


def _recipe_order(recipe: str) -> tuple:
    """The papers' recipe first (the reference), then the others by name, runs without a recipe last."""
    return (recipe != "paper", recipe == NO_RECIPE, recipe)


def recipe_rows(runs: list[Run]) -> dict[str, list[Row]]:
    """Per recipe, one row per architecture; a block's plain baseline is the plain network of its own recipe."""
    by_recipe: dict[str, list[Run]] = {}
    for run in runs:
        by_recipe.setdefault(run_recipe(run), []).append(run)
    return {recipe: build_rows(by_recipe[recipe]) for recipe in sorted(by_recipe, key=_recipe_order)}


def _accuracy_cell(row: Row | None) -> str:
    """Top-1 accuracy, mean ± std over the completed seeds, and how many: ``80.00 ± 2.00 (3)``."""
    if row is None:
        return "—"
    err, std = row.err("err1")
    seeds = sum(run.err1 is not None for run in row.completed)
    return _pivot_cell(None if err is None else 100.0 - err, std, seeds)


def _vs_plain_cell(row: Row | None) -> str:
    if row is None or row.vs_plain is None:
        return "—" if row is None else "–"
    text, pairs = _paired_cells(row.vs_plain)
    return text if text == "n/a" else f"{text} (n={pairs})"


def recipe_pivot(runs: list[Run], caption: str | None = None) -> str:
    """Markdown: one table per (data set, depth), a row per block, a column per recipe (top-1 accuracy),
    and per recipe the block's paired difference from the plain network trained with that recipe.

    The question it answers: does a block's gain over the plain network hold under every recipe?
    The plain network is the first row.
    """
    per_recipe = recipe_rows(runs)
    recipes = list(per_recipe)
    tables: dict[tuple, dict[str, dict[str, Row]]] = {}
    for recipe, rows in per_recipe.items():
        for row in rows:
            tables.setdefault((row.dataset, row.depth), {}).setdefault(str(row.att_type), {})[recipe] = row
    text = []
    for (dataset, depth), blocks in sorted(tables.items(), key=lambda item: (str(item[0][0]), item[0][1] or 0)):
        header = ["Block", *recipes, *(f"{recipe}: vs plain (95% CI)" for recipe in recipes)]
        text += [f"**{dataset}, ResNet-{depth}**: top-1 accuracy (%), mean ± std over seeds (seeds), per recipe; "
                 "then each block minus the plain network of the same recipe.", "",
                 f"| {' | '.join(header)} |", "|" + "---|" * len(header)]
        for name in sorted(blocks, key=_attention_order):
            cells = blocks[name]
            label = "none (plain)" if name == "none" else name
            text.append(f"| {label} | " + " | ".join([*(_accuracy_cell(cells.get(r)) for r in recipes),
                                                      *(_vs_plain_cell(cells.get(r)) for r in recipes)]) + " |")
        text.append("")
    text += [RECIPE_LEGEND, ""]
    if caption:
        text += [caption, ""]
    budget = budget_notes(runs)
    if budget:
        text += [*budget, ""]
    issues = [f"{recipe}: {line}" for recipe, rows in per_recipe.items() for line in problems(rows)]
    if issues:
        text += ["Runs not completed:", *(f"- {line}" for line in issues), ""]
    return "\n".join(text)
