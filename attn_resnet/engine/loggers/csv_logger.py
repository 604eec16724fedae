"""A CSV file per run: ``metrics.csv`` (one row per epoch, one column per scalar) and ``hparams.csv``."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Mapping

from .base import Logger, RunInfo


def read_metrics_csv(path: str | Path) -> dict[int, dict[str, float]]:
    """``metrics.csv`` as the logger writes it: {step (the epoch): {scalar: value}}, empty cells left out."""
    rows = {}
    with Path(path).open(newline="") as handle:
        for row in csv.DictReader(handle):
            step = int(row.pop("step"))
            rows[step] = {key: float(value) for key, value in row.items() if value != ""}
    return rows


class CSVLogger(Logger):
    """``metrics.csv`` in ``save_dir`` (null: the run folder): a ``step`` column (the epoch) and one column per
    scalar, the final metrics in the last epoch's row; ``hparams.csv``: ``name,value`` per hyperparameter.

    The file is rewritten whole at each epoch (a few rows: cheap), atomically, so a killed run leaves a
    readable file; a resumed run drops the rows after the epoch it continues from, which it trains again,
    and adds the checkpoint's epochs the file lacks.
    """

    name = "csv"

    def __init__(self, save_dir: str | None = None, filename: str = "metrics.csv") -> None:
        self.save_dir, self.filename = save_dir, filename
        self.path: Path | None = None
        self.rows: dict[int, dict[str, Any]] = {}

    def start(self, run: RunInfo, state: dict | None) -> None:
        folder = Path(self.save_dir) if self.save_dir else run.run_dir
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / self.filename
        self.rows = {}
        if run.resume_step and self.path.is_file():
            self.rows = {step: row for step, row in read_metrics_csv(self.path).items() if step <= run.resume_step}
        for step, scalars in run.history:  # the epochs the checkpoint holds that the file lacks
            self.rows.setdefault(int(step), dict(scalars))
        self._write()

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        self._write_atomic(self.path.with_name("hparams.csv"), [["name", "value"], *map(list, params.items())])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.rows.setdefault(int(step), {}).update({key: float(value) for key, value in metrics.items()})
        self._write()

    def log_summary(self, metrics: Mapping[str, float], step: int) -> None:
        self.log_metrics(metrics, step)

    def _write(self) -> None:
        columns: list[str] = []
        for row in self.rows.values():
            columns += [key for key in row if key not in columns]
        lines = [["step", *columns]]
        lines += [[step, *(self.rows[step].get(key, "") for key in columns)] for step in sorted(self.rows)]
        self._write_atomic(self.path, lines)

    @staticmethod
    def _write_atomic(path: Path, lines: list[list[Any]]) -> None:
        from ...runfiles import write_file_atomic

        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(lines)
        data = text.getvalue().encode("utf-8")
        write_file_atomic(path, lambda stream: stream.write(data))
