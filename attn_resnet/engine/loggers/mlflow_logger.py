"""MLflow: a run in a local ``mlruns/`` folder or on a tracking server, continued when the run resumes."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping

from .base import Logger, RunInfo

log = logging.getLogger(__name__)

# MLflow's limits on one log_batch request and on a parameter's value.
BATCH_PARAMS, BATCH_METRICS, PARAM_LENGTH = 100, 1000, 6000
STATUS = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}


def local_store(uri: str) -> bool:
    """Whether ``uri`` is a folder (MLflow's file store) rather than a database or a server."""
    return "://" not in uri or uri.startswith("file:")


class MLflowLogger(Logger):
    """One MLflow run per run folder, in the experiment ``experiment_name``; each value is written as it is logged.

    ``tracking_uri``: null uses ``$MLFLOW_TRACKING_URI`` when set, else ``mlruns/`` in the
    folder train.py is started from (MLflow's file store; MLflow 3 refuses it unless
    ``MLFLOW_ALLOW_FILE_STORE=true``, which this logger sets for its own process when the URI
    is a folder). ``log_checkpoint``: also upload ``checkpoints/best.pt`` (else ``last.pt``) as
    an artifact when the run completes. The run's tags: block, depth, dataset, seed.
    """

    name = "mlflow"
    requires = ("mlflow", "mlflow")

    def __init__(self, experiment_name: str = "attn-resnet", tracking_uri: str | None = None,
                 run_name: str | None = None, log_checkpoint: bool = False) -> None:
        self.experiment_name, self.tracking_uri = experiment_name, tracking_uri
        self.run_name, self.log_checkpoint = run_name, log_checkpoint
        self.client = None
        self.run_id: str | None = None
        self.run_dir: Path | None = None

    def start(self, run: RunInfo, state: dict | None) -> None:
        from mlflow.tracking import MlflowClient

        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or Path("mlruns").absolute().as_uri()
        if local_store(uri):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.tracking_uri, self.run_dir = uri, run.run_dir
        self.client = MlflowClient(tracking_uri=uri)
        previous = (state or {}).get("run_id") if (state or {}).get("tracking_uri") == uri else None
        if previous is not None and self._reopen(previous):
            log.info("MLflow: continuing run %s in %s.", previous, uri)
            return
        experiment_id = self._experiment_id()
        created = self.client.create_run(experiment_id, tags=dict(run.tags), run_name=self.run_name or run.label)
        self.run_id = created.info.run_id
        log.info("MLflow: run %s in experiment %r at %s.", self.run_id, self.experiment_name, uri)
        for step, scalars in run.history:  # a resumed run's new MLflow run gets the checkpoint's epochs too
            self.log_metrics(scalars, step)

    def _reopen(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
        except MlflowException as error:
            log.warning("MLflow run %s of this run folder's earlier attempt is not in %s (%s): a new one is "
                        "opened.", run_id, self.tracking_uri, error)
            return False
        self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id
        return True

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(self.experiment_name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(self.experiment_name)
        except MlflowException:  # a job of a parallel sweep created it first
            return self.client.get_experiment_by_name(self.experiment_name).experiment_id

    def state_dict(self) -> dict[str, Any] | None:
        return {"run_id": self.run_id, "tracking_uri": self.tracking_uri} if self.run_id else None

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        """Each parameter once: a resumed run logs the ones its run lacks (MLflow refuses to change a value; a
        resume that changed one is recorded in results.json's resume_changes)."""
        from mlflow.entities import Param

        logged = self.client.get_run(self.run_id).data.params
        values = {key: str(value)[:PARAM_LENGTH] for key, value in params.items()}
        changed = sorted(key for key, value in values.items() if key in logged and logged[key] != value)
        if changed:
            log.warning("MLflow keeps the first value of a parameter: %s keep the values of the run's first "
                        "attempt.", ", ".join(changed))
        new = [Param(key, value) for key, value in values.items() if key not in logged]
        for start in range(0, len(new), BATCH_PARAMS):
            self.client.log_batch(self.run_id, params=new[start:start + BATCH_PARAMS])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = [Metric(key, float(value), now, int(step)) for key, value in metrics.items()]
        for start in range(0, len(entries), BATCH_METRICS):
            self.client.log_batch(self.run_id, metrics=entries[start:start + BATCH_METRICS])

    def log_summary(self, metrics: Mapping[str, float], step: int) -> None:
        self.log_metrics(metrics, step)
        if self.log_checkpoint:
            checkpoints = self.run_dir / "checkpoints"
            path = next((p for p in (checkpoints / "best.pt", checkpoints / "last.pt") if p.is_file()), None)
            if path is not None:
                self.client.log_artifact(self.run_id, str(path), artifact_path="checkpoints")

    def finish(self, status: str) -> None:
        if self.client is not None and self.run_id is not None:
            self.client.set_terminated(self.run_id, STATUS.get(status, "FAILED"))
