"""Faults a new user met: shared run folders, changed-config resumes, evaluation elsewhere, held-out splits."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from attn_resnet.app import ConfigError, train
from attn_resnet.runfiles import RunFolderBusyError, RunLock

from helpers import FAST, REPO, compose_train, disk_with_free, run_script, write_cifar10, write_imagefolder


def read_results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


# ------------------------------------------------------------------ run folders
def test_runs_started_together_with_the_same_overrides_get_their_own_folders(tmp_path):
    args = FAST + [f"hydra.run.dir={tmp_path}/" + "${name}/${now:%Y-%m-%d_%H-%M-%S}_${unique:}"]
    processes = [subprocess.Popen([sys.executable, "train.py", *args], cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-2000:]
    folders = sorted((tmp_path / "synthetic_resnet18_none").iterdir())
    assert len(folders) == 2
    for folder in folders:
        results = read_results(folder)
        assert results["status"] == "completed" and results["run_dir"] == str(folder)
        assert (folder / "train.log").read_text().count("Done: final") == 1


def test_a_folder_owned_by_a_live_run_is_refused_untouched(tmp_path):
    run = tmp_path / "run"
    train(compose_train(FAST), run)
    before = {p.name: p.read_bytes() for p in (run, run / "checkpoints") for p in p.iterdir() if p.is_file()}
    with RunLock(run):  # another live process training in this folder
        with pytest.raises(RunFolderBusyError) as error:
            train(compose_train(FAST + ["trainer.epochs=2", "trainer.resume_allow_changes=true"]), run)
    assert str(run) in str(error.value) and "another" in str(error.value).lower()
    after = {p.name: p.read_bytes() for p in (run, run / "checkpoints") for p in p.iterdir() if p.is_file()}
    assert after == before


def test_cli_refuses_a_busy_folder_before_hydra_writes_into_it(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with RunLock(run):
        result = run_script("train.py", FAST + [f"hydra.run.dir={run}"])
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "another" in (result.stderr + result.stdout).lower()
    assert not (run / ".hydra").exists() and not (run / "results.json").exists()


def test_stale_temp_files_of_an_interrupted_write_are_removed(tmp_path):
    run = tmp_path / "run"
    train(compose_train(FAST), run)
    stale = [run / "checkpoints" / ".last.pt.k2j4x9.tmp", run / ".results.json.a1b2.tmp"]
    for path in stale:
        path.write_bytes(b"x" * 1000)
    keep = run / "checkpoints" / "notes.txt"
    keep.write_text("mine")
    train(compose_train(FAST + ["trainer.epochs=2", "trainer.resume_allow_changes=true"]), run)
    assert not any(path.exists() for path in stale) and keep.read_text() == "mine"


def test_a_file_in_the_way_of_the_run_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    result = run_script("train.py", FAST + [f"hydra.run.dir={blocker / 'run'}"])
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output
    assert str(blocker) in output and "file" in output
    assert blocker.read_text() == "a file"


def test_checkpoints_not_a_folder_is_a_clear_error_and_results_say_so(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").write_text("not a folder")
    result = run_script("train.py", FAST + [f"hydra.run.dir={run}"])
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output
    assert str(run / "checkpoints") in output
    assert read_results(run)["status"] == "failed"


# ---------------------------------------------------------- changed-config resume
@pytest.mark.parametrize("change,key", [
    ("trainer.epochs=3", "trainer.epochs"),
    ("data.batch_size=4", "data.batch_size"),
    ("trainer.accumulate=2", "trainer.accumulate"),
    ("sched=step", "sched.name"),
    ("data.train_size=40", "data.train_size"),
])
def test_resume_with_a_changed_trajectory_is_refused_naming_the_keys(tmp_path, change, key):
    train(compose_train(FAST + ["trainer.epochs=2", "trainer.limit_train_batches=3"]), tmp_path)
    results = (tmp_path / "results.json").read_bytes()
    last = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(ConfigError) as error:
        train(compose_train(FAST + ["trainer.epochs=2", "trainer.limit_train_batches=3", change]), tmp_path)
    assert key in str(error.value) and "resume_allow_changes" in str(error.value)
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == last
    assert (tmp_path / "results.json").read_bytes() == results


@pytest.mark.parametrize("change,key", [
    ("data=digits", "data.name"),
    ("data.num_classes=4", "data.num_classes"),
    ("data.val_split=10", "data.val_split"),
])
def test_a_resume_onto_another_task_is_refused_even_when_changes_are_allowed(tmp_path, change, key):
    # A run of another data set, class set or validation split would report the old run's best as its own.
    train(compose_train(FAST + ["trainer.epochs=2", "trainer.limit_train_batches=3"]), tmp_path)
    results = (tmp_path / "results.json").read_bytes()
    last = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    overrides = [change] if change.startswith("data=") else FAST + [change]
    with pytest.raises(ConfigError) as error:
        train(compose_train(overrides + ["trainer.epochs=2", "trainer.limit_train_batches=3", "trainer.progress=false",
                                         "trainer.resume_allow_changes=true"]), tmp_path)
    message = str(error.value)
    assert key in message and "another task" in message and "model.init_from=" in message
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == last
    assert (tmp_path / "results.json").read_bytes() == results


def test_operational_changes_resume_and_allowed_changes_are_recorded(tmp_path):
    train(compose_train(FAST), tmp_path)
    # where the data lives, logging and checkpoint frequency may change freely
    train(compose_train(FAST + ["trainer.log_every_steps=5", "trainer.checkpoint_every_steps=2"]), tmp_path)
    train(compose_train(FAST + ["trainer.epochs=2", "trainer.resume_allow_changes=true"]), tmp_path)
    results = read_results(tmp_path)
    assert results["epochs"] == 2
    assert results["resume_changes"] == {"trainer.epochs": {"checkpoint": 1, "now": 2}}


# ----------------------------------------------------------------- evaluation
def test_evaluate_on_data_moved_elsewhere_with_only_data_root(tmp_path):
    root = write_cifar10(tmp_path / "data")
    overrides = ["data=cifar10", f"data.root={root}", "data.batch_size=10", "data.num_workers=0",
                 "trainer.epochs=1", "trainer.progress=false"]
    train(compose_train(overrides), tmp_path / "run")
    final = read_results(tmp_path / "run")["final"]
    moved = tmp_path / "elsewhere"
    (moved / "cifar-10-batches-py").mkdir(parents=True)
    for name in ("test_batch", "batches.meta"):  # the train batches are not needed to evaluate
        shutil.copy(root / "cifar-10-batches-py" / name, moved / "cifar-10-batches-py" / name)
    shutil.rmtree(root)
    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    result = run_script("evaluate.py", [f"checkpoint={checkpoint}", f"data.root={moved}",
                                        f"hydra.run.dir={tmp_path / 'eval'}"])
    assert result.returncode == 0, result.stderr[-2000:]
    evaluation = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert evaluation["acc1"] == pytest.approx(final["acc1"]) and evaluation["images"] == 40
    assert evaluation["data"]["root"] == str(moved)
    assert "slow for real training" not in result.stdout + result.stderr
    # other data.* keys override the checkpoint's data settings
    result = run_script("evaluate.py", [f"checkpoint={checkpoint}", f"data.root={moved}", "data.val_subset=20",
                                        f"hydra.run.dir={tmp_path / 'eval2'}"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "eval2" / "eval.json").read_text())["images"] == 20
    # an unknown data key is named, not ignored
    result = run_script("evaluate.py", [f"checkpoint={checkpoint}", "+data.rooot=/x",
                                        f"hydra.run.dir={tmp_path / 'eval3'}"])
    assert result.returncode == 1 and "data.rooot" in result.stderr + result.stdout


def test_evaluate_an_imagefolder_model_on_a_tree_with_only_val(tmp_path):
    root = write_imagefolder(tmp_path / "images")
    train(compose_train(["data=imagefolder", f"data.root={root}", "data.image_size=32", "data.batch_size=6",
                         "data.num_workers=0", "trainer.epochs=1", "trainer.progress=false"]), tmp_path / "run")
    shutil.rmtree(root / "train")
    result = run_script("evaluate.py", [f"checkpoint={tmp_path / 'run' / 'checkpoints' / 'last.pt'}",
                                        f"data.root={root}", f"hydra.run.dir={tmp_path / 'eval'}"])
    assert result.returncode == 0, result.stderr[-2000:]
    evaluation = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert evaluation["images"] == 9 and evaluation["acc5"] is None  # 3 classes: top-5 is undefined


# ------------------------------------------------------------ held-out split
def test_val_split_picks_best_on_held_out_images_and_reports_test(tmp_path):
    train(compose_train(FAST + ["data.val_split=16", "trainer.epochs=2"]), tmp_path)
    results = read_results(tmp_path)
    assert results["data"]["train_size"] == 32 and results["data"]["val_split_size"] == 16
    history = results["history"]
    assert all({"val_acc1", "test_acc1", "test_acc5"} <= set(record) for record in history)
    assert results["final"]["acc1"] == pytest.approx(history[-1]["test_acc1"])
    assert results["final_val"]["acc1"] == pytest.approx(history[-1]["val_acc1"])
    best = max(range(2), key=lambda i: (history[i]["val_acc1"], -i))
    assert results["best"]["epoch"] == best + 1
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert {"test/acc1", "test/loss", "val/acc1"} <= set(events.Tags()["scalars"])


def test_the_number_of_loader_workers_is_logged(tmp_path):
    root = write_cifar10(tmp_path / "data")
    result = run_script("train.py", ["data=cifar10", f"data.root={root}", "data.batch_size=10",
                                     "trainer.epochs=1", "trainer.limit_train_batches=2",
                                     "trainer.limit_val_batches=1", f"hydra.run.dir={tmp_path / 'run'}"])
    assert result.returncode == 0, result.stderr[-2000:]
    log = (tmp_path / "run" / "train.log").read_text()
    assert "data.num_workers=auto ->" in log
    assert "suggested max number of worker" not in result.stderr


def test_a_full_disk_during_a_checkpoint_keeps_the_last_good_one(tmp_path, monkeypatch):
    import errno

    from attn_resnet.runfiles import RunFolderError

    train(compose_train(FAST), tmp_path)
    last = tmp_path / "checkpoints" / "last.pt"
    good = last.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(RunFolderError) as error:
        train(compose_train(FAST + ["trainer.epochs=2", "trainer.resume_allow_changes=true"]), tmp_path)
    message = str(error.value)
    assert str(last) in message and "full" in message and "Traceback" not in message
    assert last.read_bytes() == good and not list((tmp_path / "checkpoints").glob(".*.tmp"))
    assert read_results(tmp_path)["status"] == "completed"
    assert json.loads((tmp_path / "results.last_attempt.json").read_text())["status"] == "failed"


def test_a_read_only_run_folder_is_refused_before_training(tmp_path, monkeypatch):
    import errno

    import attn_resnet.runfiles as runfiles

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(runfiles.tempfile, "mkstemp", read_only)
    with pytest.raises(runfiles.RunFolderError) as error:
        train(compose_train(FAST), tmp_path / "run")
    assert str(tmp_path / "run") in str(error.value) and "not writable" in str(error.value)
    assert not (tmp_path / "run" / "results.json").exists()


def test_a_disk_without_room_for_the_checkpoints_is_refused_before_training(tmp_path, monkeypatch):
    import re

    import attn_resnet.runfiles as runfiles
    from attn_resnet.engine.trainer import Trainer

    fitted = []
    monkeypatch.setattr(Trainer, "fit", lambda self: fitted.append(self))
    disk_with_free(monkeypatch, 50 * 10**6)  # less than three ResNet-18 checkpoints with momentum (~89 MB each)
    run = tmp_path / "run"
    with pytest.raises(runfiles.RunFolderError) as error:
        train(compose_train(FAST), run)
    message = str(error.value)
    assert f"The disk holding {str(run)!r} has 50.0 MB free" in message
    sizes = re.search(r"need about (\d+\.\d) MB", message), re.search(r"of about (\d+\.\d) MB each", message)
    assert sizes[0] and sizes[1] and float(sizes[0][1]) == pytest.approx(3 * float(sizes[1][1]), abs=0.2)
    assert 85 < float(sizes[1][1]) < 90
    assert fitted == [] and not (run / "checkpoints").exists()
    results = read_results(run)
    assert results["status"] == "failed" and "MB free" in results["error"]


# ------------------------------------------------------------------ disk use
def test_best_pt_holds_the_weights_alone_and_is_no_resume_point(tmp_path):
    from attn_resnet.engine.checkpoint import load_training_checkpoint
    from attn_resnet.models.official import CheckpointError

    run = tmp_path / "run"
    train(compose_train(FAST), run)
    last_path, best_path = run / "checkpoints" / "last.pt", run / "checkpoints" / "best.pt"
    last, best = load_training_checkpoint(last_path), load_training_checkpoint(best_path)
    assert best["kind"] == "weights" and last["kind"] == "training"
    assert not {"optimizer", "scheduler", "scaler", "rng", "epoch_meters"} & set(best)
    assert best["model"].keys() == last["model"].keys()
    assert all(torch.equal(best["model"][key], last["model"][key]) for key in best["model"])  # 1 epoch: the same
    assert best["model_spec"] == last["model_spec"] and best["input"] == last["input"]
    assert best_path.stat().st_size < 0.6 * last_path.stat().st_size  # no momentum buffers: about half
    with pytest.raises(CheckpointError) as error:
        train(compose_train(FAST + [f"trainer.resume={best_path}"]), tmp_path / "other")
    assert "weights of the best epoch only" in str(error.value) and f"model.init_from={best_path}" in str(error.value)
    assert not (tmp_path / "other").exists()  # refused before training: no folder left behind


def test_save_best_false_keeps_last_pt_only(tmp_path):
    train(compose_train(FAST + ["trainer.save_best=false"]), tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.pt"]
    assert read_results(tmp_path)["status"] == "completed"

