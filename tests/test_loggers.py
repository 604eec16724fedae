"""Loggers chosen in the config: each one's output, read back with its own reader, equals results.json.

TensorBoard through its ``EventAccumulator``, the CSV file through ``csv``, MLflow through
``MlflowClient`` and W&B's offline run files through wandb's own record definitions
(``wandb_internal_pb2.Record``). W&B never reaches a server here: it runs offline.
"""

from __future__ import annotations

import csv
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from attn_resnet.config.command_line import check_overrides
from attn_resnet.config.validate import ConfigError, validate_train_config

from helpers import CONF, FAST, REPO, compose_train, kill_mid_epoch, launch_env

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra (pip install -e '.[mlflow]') is not installed")
wandb_internal_pb2 = pytest.importorskip("wandb.proto.wandb_internal_pb2",
                                         reason="the wandb extra (pip install -e '.[wandb]') is not installed")

ALL = "logger=[tensorboard,csv,mlflow,wandb]"
# The epoch scalars and the history keys they come from.
SCALARS = {"train/loss": "train_loss", "train/acc1": "train_acc1", "val/loss": "val_loss", "val/acc1": "val_acc1",
           "val/acc5": "val_acc5", "opt/lr": "lr", "perf/images_per_sec": "images_per_sec",
           "perf/epoch_seconds": "epoch_seconds"}




@pytest.fixture(autouse=True)
def mlflow_file_store(monkeypatch):
    """MLflow 3 opens a folder store (mlruns/) only with MLFLOW_ALLOW_FILE_STORE=true: the reader here, as the
    logger in its run, and as `mlflow ui` for a user (docs/logging.md)."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")


# ----------------------------------------------------------------- the readers
def tensorboard_scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: {event.step: event.value for event in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def tensorboard_steps(run_dir: Path, tag: str) -> list[int]:
    """Every step TensorBoard shows for ``tag`` (a step logged twice would appear twice)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [event.step for event in events.Scalars(tag)]


def csv_scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    with (run_dir / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    scalars: dict[str, dict[int, float]] = {}
    for row in rows:
        step = int(row.pop("step"))
        for key, value in row.items():
            if value != "":
                scalars.setdefault(key, {})[step] = float(value)
    return scalars


def mlflow_run(tracking_uri: str) -> tuple:
    """The client and the one run of the experiment ``attn-resnet`` in ``tracking_uri``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("attn-resnet")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, [run.info.run_id for run in runs]
    return client, runs[0]


def mlflow_scalars(client, run) -> dict[str, dict[int, list[float]]]:
    """Every value MLflow holds per metric and step, in the order logged."""
    return {key: _by_step((metric.step, metric.value) for metric in client.get_metric_history(run.info.run_id, key))
            for key in run.data.metrics}


def _by_step(pairs) -> dict[int, list[float]]:
    steps: dict[int, list[float]] = {}
    for step, value in pairs:
        steps.setdefault(int(step), []).append(value)
    return steps


def wandb_records(path: Path):
    """The records of one .wandb file: wandb's leveldb-log framing (32 KiB blocks, 7-byte chunk headers), each
    record a ``wandb_internal_pb2.Record``. A killed run's file may end inside a record: reading stops there."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    block, header = 32768, 7
    position, pending = header, b""
    while position + header <= len(data):
        left = block - position % block
        if left < header:  # the block's tail is padding
            position += left
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[position:position + header])
        if kind == 0:  # zeroed: padding, or a write cut short
            position += left
            continue
        chunk = data[position + header:position + header + length]
        if len(chunk) < length:
            return
        position += header + length
        pending = chunk if kind in (1, 2) else pending + chunk  # FULL, FIRST | MIDDLE, LAST
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def wandb_run_files(run_dir: Path) -> list[Path]:
    """The offline run files of ``run_dir``, one per attempt, oldest first."""
    return sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))


def wandb_history(run_dir: Path) -> dict:
    """{"ids", "tags", "scalars": {key: {step: [values]}}, "summary", "config", "exit_codes", "artifacts"} over all
    the attempts' files."""
    found = {"ids": [], "tags": [], "scalars": {}, "summary": {}, "config": {}, "exit_codes": [], "artifacts": []}
    for path in wandb_run_files(run_dir):
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                found["ids"].append(record.run.run_id)
                found["tags"] = list(record.run.tags)
            elif kind == "history":
                # a scalar has one key; an image or histogram's fields have two (the tag, the field)
                row = {item.key or item.nested_key[0]: json.loads(item.value_json) for item in record.history.item
                       if item.key or len(item.nested_key) == 1}
                for key, value in row.items():  # every row carries its epoch (the charts' x-axis)
                    if not key.startswith("_") and key != "epoch" and isinstance(value, (int, float)):
                        found["scalars"].setdefault(key, {}).setdefault(int(row["epoch"]), []).append(value)
            elif kind == "summary":
                for item in record.summary.update:
                    found["summary"]["/".join(item.nested_key) or item.key] = json.loads(item.value_json)
            elif kind == "config":
                for item in record.config.update:
                    found["config"][item.key] = json.loads(item.value_json)
            elif kind == "exit":
                found["exit_codes"].append(record.exit.exit_code)
            elif kind == "artifact":
                found["artifacts"].append((record.artifact.type, [entry.path for entry in record.artifact.manifest.contents]))
    return found


# ------------------------------------------------------------------- the runs
def logger_env(tmp_path: Path) -> dict:
    """A child's environment: W&B offline, its settings and caches inside ``tmp_path``, no MLflow server."""
    env = {key: value for key, value in launch_env().items()
           if not key.startswith(("WANDB_", "MLFLOW_"))}
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        env[name] = str(tmp_path / "wandb-home" / name.lower())
    return {**env, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}


def train_command(args: list[str]) -> list[str]:
    return [sys.executable, str(REPO / "train.py"), *args]


def run_train(tmp_path: Path, args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    """train.py run from ``tmp_path`` (where MLflow's default mlruns/ goes)."""
    result = subprocess.run(train_command(args), cwd=tmp_path, capture_output=True, text=True, timeout=timeout,
                            env=logger_env(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def expected_scalars(results: dict) -> dict[str, dict[int, float]]:
    """The epoch scalars as results.json's history holds them, and the final metrics at the last epoch."""
    expected: dict[str, dict[int, float]] = {}
    for record in results["history"]:
        for tag, key in SCALARS.items():
            if record.get(key) is not None:
                expected.setdefault(tag, {})[record["epoch"]] = record[key]
    last = results["epochs"]
    expected["hparam/final_acc1"] = {last: results["final"]["acc1"]}
    expected["hparam/final_acc5"] = {last: results["final"]["acc5"]}
    expected["hparam/best_acc1"] = {last: results["best"]["acc1"]}
    return expected


def assert_every_logger_holds(run_dir: Path, tracking_uri: str, results: dict) -> None:
    expected = expected_scalars(results)
    # CSV and MLflow keep the values as written; TensorBoard stores float32.
    assert csv_scalars(run_dir) == expected
    client, run = mlflow_run(tracking_uri)
    held = mlflow_scalars(client, run)
    assert {key: {step: values[-1] for step, values in steps.items()} for key, steps in held.items()} == expected
    assert all(len(values) == 1 for steps in held.values() for values in steps.values())  # no step logged twice
    board = tensorboard_scalars(run_dir)
    assert set(expected) <= set(board)
    for tag, steps in expected.items():
        assert board[tag] == pytest.approx(steps, rel=1e-6), tag
        assert tensorboard_steps(run_dir, tag) == sorted(steps), tag  # each epoch once
    history = wandb_history(run_dir)
    wandb_epochs = {key: {step: values[-1] for step, values in steps.items()}
                    for key, steps in history["scalars"].items()}
    assert wandb_epochs == {tag: steps for tag, steps in expected.items() if not tag.startswith("hparam/")}
    assert {tag: history["summary"][tag] for tag in ("hparam/final_acc1", "hparam/final_acc5", "hparam/best_acc1")} \
        == {tag: steps[results["epochs"]] for tag, steps in expected.items() if tag.startswith("hparam/")}


# ------------------------------------------------------------------- the tests
def test_each_logger_holds_the_scalars_hyperparameters_and_final_metrics_of_results_json(tmp_path):
    run_dir = tmp_path / "run"
    run_train(tmp_path, FAST + ["trainer.epochs=2", "model.att_type=CBAM", "trainer.attention_maps_every=1",
                                "trainer.attention_maps_images=2", ALL, "logger.mlflow.log_checkpoint=true",
                                "logger.wandb.log_checkpoint=true", f"hydra.run.dir={run_dir}"])
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed" and results["epochs"] == 2
    tracking_uri = (tmp_path / "mlruns").as_uri()  # MLflow's default store: mlruns/ where train.py ran
    assert_every_logger_holds(run_dir, tracking_uri, results)

    tags = {"block": "CBAM", "depth": "18", "dataset": results["data"]["name"], "seed": "0"}
    client, run = mlflow_run(tracking_uri)
    assert run.info.status == "FINISHED"
    assert {key: run.data.tags[key] for key in tags} == tags
    config = results["config"]
    assert run.data.params["optim.lr"] == str(config["optim"]["lr"])
    assert run.data.params["model.att_type"] == "CBAM" and run.data.params["trainer.epochs"] == "2"
    artifacts = [entry.path for entry in client.list_artifacts(run.info.run_id, "checkpoints")]
    assert artifacts == ["checkpoints/best.pt"]
    assert json.loads((run_dir / "loggers.json").read_text())["mlflow"]["run_id"] == run.info.run_id

    history = wandb_history(run_dir)
    assert sorted(history["tags"]) == sorted(f"{key}={value}" for key, value in tags.items())
    assert history["config"]["optim.lr"] == config["optim"]["lr"] and history["config"]["model.depth"] == 18
    assert history["exit_codes"] == [0]
    assert [(kind, paths) for kind, paths in history["artifacts"]] == [("model", ["best.pt"])]
    assert history["ids"] == [json.loads((run_dir / "loggers.json").read_text())["wandb"]["id"]]

    with (run_dir / "hparams.csv").open(newline="") as handle:
        hparams = dict(csv.reader(handle))
    assert hparams["optim.lr"] == str(config["optim"]["lr"]) and hparams["model.att_type"] == "CBAM"

    # the attention maps went to the two loggers that take images, every epoch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    stages = [tag for tag in events.Tags()["images"] if tag.startswith("attention/")]
    assert stages and all([image.step for image in events.Images(tag)] == [1, 2] for tag in stages)
    pictures = sorted((run_dir / "wandb").glob("offline-run-*/files/media/images/attention/*.png"))
    assert {path.name.split("_")[0] for path in pictures} == {tag.split("/")[1] for tag in stages}


def test_a_run_killed_mid_epoch_and_resumed_continues_the_same_mlflow_and_wandb_runs(tmp_path):
    # 6 batches per epoch, a checkpoint after each: the run is killed after batch 2 or later of epoch 2.
    run_dir = tmp_path / "run"
    args = FAST + ["trainer.epochs=3", "trainer.checkpoint_every_steps=1", ALL, f"hydra.run.dir={run_dir}"]
    process = subprocess.Popen(train_command(args), cwd=tmp_path, env=logger_env(tmp_path),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_mid_epoch(process, run_dir, epoch=1, batch=2)
    tracking_uri = (tmp_path / "mlruns").as_uri()
    killed_ids = json.loads((run_dir / "loggers.json").read_text())
    _, killed = mlflow_run(tracking_uri)
    assert killed.info.status == "RUNNING"  # SIGKILL: nothing closed it
    assert csv_scalars(run_dir)["val/acc1"].keys() == {1}

    run_train(tmp_path, args)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed" and [r["epoch"] for r in results["history"]] == [1, 2, 3]
    assert_every_logger_holds(run_dir, tracking_uri, results)
    _, run = mlflow_run(tracking_uri)  # still one run in the experiment
    assert run.info.run_id == killed_ids["mlflow"]["run_id"] and run.info.status == "FINISHED"
    # One offline file per attempt, of the same W&B run. W&B writes its file in the background, so the killed
    # attempt's may hold nothing: the resumed attempt logged the checkpoint's epochs again (checked above).
    assert len(wandb_run_files(run_dir)) == 2
    assert set(wandb_history(run_dir)["ids"]) == {killed_ids["wandb"]["id"]}
    assert json.loads((run_dir / "loggers.json").read_text()) == killed_ids


def test_a_resumed_attempt_replaces_what_the_killed_one_logged_after_its_checkpoint(tmp_path, monkeypatch):
    """Epochs 2 and 3 were logged, but the checkpoint holds epoch 1: the resume trains them again, and TensorBoard
    (purge_step), the CSV file and MLflow (the latest value of a step) show the resumed attempt's values."""
    from attn_resnet.engine.loggers import CSVLogger, LoggerList, MLflowLogger, TensorBoardLogger

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def attempt(resume_step: int, values: dict[int, float], status: str) -> None:
        loggers = LoggerList([TensorBoardLogger(), CSVLogger(), MLflowLogger()], name="run",
                             hyperparams={"optim.lr": 0.1})
        loggers.start(tmp_path, resume_step)
        for step, value in values.items():
            loggers.log_metrics({"val/acc1": value}, step)
        loggers.finish(status)

    attempt(0, {1: 10.0, 2: 20.0, 3: 30.0}, "interrupted")
    attempt(1, {2: 21.0, 3: 31.0, 4: 41.0}, "completed")
    final = {1: 10.0, 2: 21.0, 3: 31.0, 4: 41.0}
    assert tensorboard_scalars(tmp_path)["val/acc1"] == final
    assert tensorboard_steps(tmp_path, "val/acc1") == [1, 2, 3, 4]
    assert csv_scalars(tmp_path)["val/acc1"] == final
    client, run = mlflow_run((tmp_path / "mlruns").as_uri())
    held = mlflow_scalars(client, run)["val/acc1"]
    assert {step: values[-1] for step, values in held.items()} == final
    assert run.data.params == {"optim.lr": "0.1"} and run.info.status == "FINISHED"


# A user's logger, in a module of their own.
USER_LOGGER = '''
import json
from attn_resnet import Logger


class Recorder(Logger):
    def __init__(self, path, note="none"):
        self.path, self.note, self.seen = path, note, {"metrics": {}, "summary": {}}

    def start(self, run, state):
        self.seen.update(name=run.name, tags=dict(run.tags), resume_step=run.resume_step, state=state)

    def log_hyperparams(self, params):
        self.seen["params"] = dict(params)

    def log_metrics(self, metrics, step):
        self.seen["metrics"][step] = dict(metrics)

    def log_summary(self, metrics, step):
        self.seen["summary"] = dict(metrics)

    def state_dict(self):
        return {"note": self.note}

    def finish(self, status):
        self.seen["status"] = status
        with open(self.path, "w") as handle:
            json.dump(self.seen, handle)
'''


def test_a_logger_of_ones_own_comes_in_by_its_target_beside_the_built_in_ones(tmp_path, monkeypatch):
    from attn_resnet.app import train

    (tmp_path / "mylogs.py").write_text(USER_LOGGER)
    monkeypatch.syspath_prepend(str(tmp_path))
    record = tmp_path / "seen.json"
    cfg = compose_train(FAST + ["logger=[csv]", "+logger.mine._target_=mylogs.Recorder",
                                f"+logger.mine.path={record}", "+logger.mine.note=hello"])
    assert list(cfg.logger) == ["csv", "mine"]
    results = train(cfg, tmp_path / "run")
    seen = json.loads(record.read_text())
    assert seen["status"] == "completed" and seen["state"] is None and seen["resume_step"] == 0
    assert seen["name"] == results["config"]["name"] and seen["tags"]["seed"] == "0"
    assert seen["params"]["optim.lr"] == results["config"]["optim"]["lr"]
    assert seen["params"]["logger.mine._target_"] == "mylogs.Recorder"
    assert {int(step): metrics["val/acc1"] for step, metrics in seen["metrics"].items()} == \
        {record["epoch"]: record["val_acc1"] for record in results["history"]}
    assert seen["summary"]["hparam/final_acc1"] == results["final"]["acc1"]
    assert json.loads((tmp_path / "run" / "loggers.json").read_text()) == {"mine": {"note": "hello"}}
    assert not (tmp_path / "run" / "wandb").exists() and not list((tmp_path / "run").glob("events.out.*"))


# ----------------------------------------------------------- config checks
def check(argv: list[str]) -> str:
    with pytest.raises(ConfigError) as caught:
        check_overrides(["train.py", *argv], "train", CONF)
    return str(caught.value)


def test_the_command_line_check_takes_several_loggers_and_names_a_misspelt_one():
    for argv in (["logger=[tensorboard,mlflow]"], ["logger=csv"], ["logger=[]"], ["~logger"],
                 ["--multirun", "logger=[tensorboard,mlflow],[csv]"], ["--multirun", "logger=csv,wandb"],
                 ["logger=[csv,mlflow]", "logger.mlflow.tracking_uri=file:///tmp/mlruns"],
                 ["+logger.mine._target_=mylogs.Recorder"]):
        check_overrides(["train.py", *argv], "train", CONF)
    message = check(["logger=[tensorboard,mlfow]"])
    assert "logger=mlfow" in message and "Did you mean logger=mlflow?" in message
    assert "Valid choices of logger: csv, mlflow, tensorboard, wandb" in message
    assert "Did you mean logger=wandb?" in check(["--multirun", "logger=[csv],[wandbb]"])
    assert "logger=[]" in check(["logger=null"])
    message = check(["logger.mlflow.tracking_uri=x"])
    assert "logger=mlflow declares it" in message


def test_trainer_tensorboard_is_refused_with_its_replacement():
    message = check(["trainer.tensorboard=false"])
    assert "replaced by the logger config group" in message and "logger=[]" in message
    cfg = compose_train(FAST)
    OmegaConf.update(cfg, "trainer.tensorboard", False, force_add=True)  # an older config file's key
    with pytest.raises(ConfigError, match="logger=csv"):
        validate_train_config(cfg)


def test_several_loggers_compose_and_validate_and_help_lists_the_group():
    from attn_resnet.config.help import config_help

    cfg = compose_train(FAST + ["logger=[tensorboard,mlflow]", "logger.mlflow.log_checkpoint=true"])
    assert list(cfg.logger) == ["tensorboard", "mlflow"] and cfg.logger.mlflow.log_checkpoint is True
    validate_train_config(cfg)
    assert "logger" not in compose_train(FAST + ["logger=[]"])
    validate_train_config(compose_train(FAST + ["logger=[]"]))
    text = config_help("train", CONF)
    assert "logger:" in text and "mlflow" in text and "wandb" in text


def test_a_logger_target_that_is_wrong_is_named_before_the_run(tmp_path, monkeypatch):
    (tmp_path / "notalogger.py").write_text("class Plain:\n    def __init__(self, path):\n        pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cases = [(["+logger.mine._target_=notalogger.Plain", "+logger.mine.path=x"], "is not an attn_resnet.Logger"),
             (["+logger.mine._target_=nowhere.Logger"], "the module 'nowhere' cannot be imported"),
             (["+logger.mine.path=x"], "logger.mine needs a _target_"),
             (["+logger.csv.file_name=x.csv"], r"does not take these arguments.*logger\.csv\.file_name='x\.csv'")]
    for overrides, expected in cases:
        with pytest.raises(ConfigError, match=expected):
            validate_train_config(compose_train(FAST + ["logger=csv", *overrides]))


BLOCK_MLFLOW = """
import importlib.abc, os, runpy, sys

class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "mlflow" or name.startswith("mlflow."):
            raise ModuleNotFoundError(name)

sys.meta_path.insert(0, Missing())
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(sys.argv[0]))  # as `python train.py` does: this tree's attn_resnet first
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_a_logger_whose_extra_is_missing_names_the_extra_before_the_run_folder_is_made(tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "-c", BLOCK_MLFLOW, str(REPO / "train.py"), *FAST, "logger=mlflow",
                             f"hydra.run.dir={run_dir}"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env=logger_env(tmp_path))
    assert result.returncode == 1, result.stderr[-2000:]
    assert 'pip install -e ".[mlflow]"' in result.stderr and "logger.mlflow" in result.stderr
    assert "Traceback" not in result.stderr
    assert not run_dir.exists() and not (tmp_path / "mlruns").exists()


def test_a_sweep_over_loggers_gives_each_job_its_own(tmp_path):
    sweep = tmp_path / "sweep"
    run_train(tmp_path, ["--multirun", *FAST, "logger=[csv],[csv,mlflow]", f"hydra.sweep.dir={sweep}",
                         "hydra.sweep.subdir=${hydra.job.num}"])
    assert (sweep / "0" / "metrics.csv").is_file() and (sweep / "1" / "metrics.csv").is_file()
    _, run = mlflow_run((tmp_path / "mlruns").as_uri())  # only job 1 chose MLflow
    assert json.loads((sweep / "1" / "loggers.json").read_text())["mlflow"]["run_id"] == run.info.run_id
    assert not (sweep / "0" / "loggers.json").exists()
    results = json.loads((sweep / "1" / "results.json").read_text())
    assert run.data.metrics["val/acc1"] == results["final"]["acc1"]
    assert csv_scalars(sweep / "0")["hparam/final_acc1"] == \
        {1: json.loads((sweep / "0" / "results.json").read_text())["final"]["acc1"]}


@pytest.mark.slow  # a two-process torchrun: about 20 s on 2 cores
def test_only_rank_0_logs_in_a_data_parallel_run(tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(REPO / "train.py"), "data=synthetic", "data.image_size=8", "data.train_size=32", "data.val_size=16",
               "data.batch_size=8", "trainer.epochs=2", "trainer.device=cpu", "trainer.progress=false", ALL,
               f"hydra.run.dir={run_dir}"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env=logger_env(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["world_size"] == 2
    # Rank 1 opened no MLflow run, no W&B run, no event file (it would have made a second of each).
    assert_every_logger_holds(run_dir, (tmp_path / "mlruns").as_uri(), results)
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    assert len(wandb_run_files(run_dir)) == 1
