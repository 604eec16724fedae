"""Sweeps through Hydra's plugins: the Slurm preset, submitit jobs running DDP, joblib, and Optuna searches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate

from helpers import REPO, compose_train, launch_env

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the sweep extra is not installed")

# Tiny runs on the CPU: synthetic 8x8 images, ResNet-18, one epoch.
TINY = [
    "data=synthetic",
    "data.image_size=8",
    "data.train_size=48",
    "data.val_size=17",
    "data.batch_size=8",
    "model.depth=18",
    "trainer.epochs=1",
    "trainer.device=cpu",
    "trainer.progress=false",
    "trainer.attention_maps_every=0",
]


def _train(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=launch_env())


def _results(sweep: Path) -> dict[str, dict]:
    return {path.parent.name: json.loads(path.read_text()) for path in sorted(sweep.glob("*/results.json"))}


def test_slurm_preset_composes_into_the_sbatch_script_slurm_would_get(tmp_path, monkeypatch):
    import submitit

    # submitit's Slurm executor checks that srun exists before it writes anything; nothing is submitted here.
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")

    cfg = compose_train(["hydra/launcher=slurm", "hydra.launcher.nodes=2", "hydra.launcher.gpus_per_node=4",
                         "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=600",
                         f"hydra.sweep.dir={tmp_path}/sweep"], return_hydra_config=True)
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    params = launcher.params
    assert (params["nodes"], params["gpus_per_node"], params["tasks_per_node"]) == (2, 4, 4)  # one task per GPU
    assert params["submitit_folder"] == f"{tmp_path}/sweep/.submitit/%j"

    # The parameters go to submitit as the launcher passes them; the script it writes is what sbatch reads.
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    base = {"submitit_folder", "max_num_timeout"}
    plain = {"timeout_min", "cpus_per_task", "gpus_per_node", "tasks_per_node", "mem_gb", "nodes", "name",
             "stderr_to_stdout"}
    executor.update_parameters(**{(key if key in plain else f"slurm_{key}"): value
                                  for key, value in params.items() if key not in base})
    script = executor._executor._make_submission_file_text("python train.py", "uid")
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --partition=gpu", "#SBATCH --time=600", "export SLURM_KILL_BAD_EXIT=1",
                 "#SBATCH --signal=USR2@120"):
        assert line in script, script
    # A job at its time limit is requeued, a few times at most; USR2 is one of the run's stop signals.
    assert 0 < params["max_num_timeout"] <= 10
    assert "SIGUSR2" in cfg.trainer.stop_signals


def test_sweep_folders_are_unique_even_for_sweeps_composed_in_the_same_second():
    first = compose_train([], return_hydra_config=True)
    second = compose_train([], return_hydra_config=True)
    assert first.hydra.sweep.dir != second.hydra.sweep.dir
    assert first.hydra.run.dir != second.hydra.run.dir
    from omegaconf import OmegaConf

    # Jobs of one sweep: numbered folders inside it.
    assert OmegaConf.to_container(first.hydra.sweep, resolve=False)["subdir"] == "${hydra.job.num}_${name}"


def test_submitit_jobs_of_two_tasks_train_with_ddp_from_the_job_environment(tmp_path):
    result = _train(["--multirun", "hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2",
                     "hydra.launcher.timeout_min=10", "seed=0,1", *TINY, f"hydra.sweep.dir={tmp_path}/sweep"],
                    cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = _results(tmp_path / "sweep")
    assert sorted(runs) == ["0_synthetic_resnet18_none", "1_synthetic_resnet18_none"]
    for run in runs.values():
        assert run["status"] == "completed"
        assert run["world_size"] == 2  # each job's two tasks formed one process group
        assert run["history"][-1]["val_images"] == 17
    assert {run["config"]["seed"] for run in runs.values()} == {0, 1}


def test_joblib_launcher_runs_jobs_side_by_side_in_their_own_folders(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    result = _train(["--multirun", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1", *TINY,
                     f"hydra.sweep.dir={tmp_path}/sweep"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = _results(tmp_path / "sweep")
    assert len(runs) == 2 and all(run["status"] == "completed" for run in runs.values())
    assert {run["config"]["seed"] for run in runs.values()} == {0, 1}


def test_optuna_search_records_the_failed_trial_and_writes_the_best(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    optuna = pytest.importorskip("optuna")
    storage = f"sqlite:///{tmp_path}/study.db"
    # Sampler seed 1231 draws lr=-1.0 (refused by validation: the trial fails) and then lr=0.05.
    result = _train(["hparams_search=optuna_lr_wd", "hydra.sweeper.n_trials=2", *TINY, "data.val_split=16",
                     'hydra.sweeper.params={optim.lr:"choice(0.05,-1.0)",optim.weight_decay:"choice(0.0005)",'
                     'trainer.label_smoothing:"choice(0.0)"}',
                     "hydra.sweeper.sampler.seed=1231", f"hydra.sweeper.storage={storage}",
                     "hydra.sweeper.study_name=tiny", f"hydra.sweep.dir={tmp_path}/sweep"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = _results(tmp_path / "sweep")
    by_lr = {run["config"]["optim"]["lr"]: run for run in runs.values()}
    assert sorted(by_lr) == [-1.0, 0.05]
    assert by_lr[-1.0]["status"] == "failed" and "optim.lr" in by_lr[-1.0]["error"]
    completed = by_lr[0.05]
    assert completed["status"] == "completed"
    # The trial's value is the held-out validation accuracy (never the test split's).
    assert completed["data"]["val_split_size"] == 16
    study = optuna.load_study(study_name="tiny", storage=storage)
    states = {trial.params["optim.lr"]: trial.state for trial in study.trials}
    assert states == {-1.0: optuna.trial.TrialState.FAIL, 0.05: optuna.trial.TrialState.COMPLETE}
    assert study.best_value == pytest.approx(completed["final_val"]["acc1"])
    best = (tmp_path / "sweep" / "optimization_results.yaml").read_text()
    assert "best_value: " + str(study.best_value) in best and "optim.lr: 0.05" in best


def test_optimized_metric_picks_the_held_out_validation_numbers():
    from attn_resnet.app import optimized_value

    results = {"final": {"acc1": 70.0, "loss": 1.0}, "final_val": {"acc1": 65.0, "loss": 1.2},
               "best": {"acc1": 66.0, "epoch": 3}}
    assert optimized_value(results, "val_acc1") == 65.0  # not the test split's 70
    assert optimized_value(results, "best_val_acc1") == 66.0
    assert optimized_value(results, "val_loss") == 1.2
    assert optimized_value({"final": {"acc1": 70.0, "loss": 1.0}, "best": {"acc1": 70.0}}) == 70.0
