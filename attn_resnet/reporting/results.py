"""Reading runs from disk: one per ``results.json``, plus the jobs a sweep launched that left none;
the seeds a folder of runs (a ledger) already holds."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

from .runs import Run, _as_int, _attention_identity, distinct_seeds, network_identity, parse_where, run_matches
from .sweeps import expected_jobs, identity_from_overrides


def run_from_results(path: Path) -> Run:
    """The run one ``results.json`` records (a failed one where the file cannot be read)."""
    try:
        results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        return Run(str(path.parent), "failed", None, None, None, error=f"unreadable results.json: {error}")
    # A job whose config was rejected fails before its config is recorded: its overrides tell what it was.
    config = results.get("config") or identity_from_overrides((results.get("job") or {}).get("overrides"))
    model, data = config.get("model") or {}, config.get("data") or {}
    run = Run(str(path.parent), results.get("status", "unknown"), data.get("name"), _as_int(model.get("depth")),
              _attention_identity(model.get("att_type"), model.get("att_placement"), model), _as_int(config.get("seed")),
              error=results.get("error"), config=config,
              overrides=list((results.get("job") or {}).get("overrides") or []), network=network_identity(model),
              record=results)
    if run.status == "completed":
        # "final" is the last epoch on the test set; "final_val" (held-out split) is not what tables report.
        final = results.get("final") or {}
        run.err1, run.err5 = _error_rate(final, 1), _error_rate(final, 5)
        run.params, run.gflops = results.get("params"), results.get("gflops")
        run.epochs = _as_int(results.get("epochs"))
        run.train_size = _as_int((results.get("data") or {}).get("train_size"))
        run.limit_train_batches = _as_int((config.get("trainer") or {}).get("limit_train_batches")) or None
    return run


def _fill_identity(run: Run, expected: Run) -> None:
    """Complete what ``run`` does not know of its identity from the sweep's record of the same job."""
    for name in ("dataset", "depth", "network", "att_type", "seed"):
        if getattr(run, name) is None:
            setattr(run, name, getattr(expected, name))


def _error_rate(metrics: dict, k: int) -> float | None:
    """Top-k error in %: ``err<k>``, else ``100 - acc<k>``; None where top-k is undefined (fewer than k classes)."""
    error, accuracy = metrics.get(f"err{k}"), metrics.get(f"acc{k}")
    if error is not None:
        return float(error)
    return None if accuracy is None else 100.0 - float(accuracy)


def _job_number(results_path: Path) -> int | None:
    """The sweep job number recorded in results.json, else the ``<num>_`` prefix of its folder."""
    try:
        number = (json.loads(results_path.read_text()).get("job") or {}).get("num")
    except (OSError, json.JSONDecodeError):
        number = None
    if number is None:
        number = _as_int(results_path.parent.name.split("_", 1)[0])
    return number


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


def completed_seeds(root: str | Path, where: Mapping[str, str] | Iterable[str] | None = None) -> list[int]:
    """The distinct seeds of the completed runs under ``root`` that satisfy ``where``, sorted.

    A folder that does not exist yet holds no runs (the first session on a new card).
    Runs that failed or did not finish are not counted: their seed still has to be run.
    """
    if not Path(root).exists():
        return []
    return distinct_seeds(collect_runs(root, where))


def count_seeds(root: str | Path, where: Mapping[str, str] | Iterable[str] | None = None) -> int:
    """How many distinct seeds of the configuration ``where`` describes have completed under ``root``.

    For a campaign that tops a ledger up to N seeds: ``count_seeds(ledger, {"experiment":
    "cifar10_fast", "model.att_type": "CBAM"}) >= N`` means that configuration can be skipped.
    """
    return len(completed_seeds(root, where))
