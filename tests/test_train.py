"""End-to-end training runs on tiny data: artefacts, resume, failures, sweeps, evaluation."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from attn_resnet import app
from attn_resnet.app import train
from attn_resnet.engine.checkpoint import load_training_checkpoint
from attn_resnet.engine.trainer import NonFiniteLossError
from attn_resnet.models.official import CheckpointError

from helpers import FAST, REPO, compose_train, kill_mid_epoch, run_script, write_cifar10, write_imagefolder

TAGS = {"train/loss", "train/acc1", "val/loss", "val/acc1", "val/acc5", "opt/lr", "perf/images_per_sec",
        "perf/epoch_seconds"}


def read_results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def assert_complete_run(run_dir: Path, epochs: int = 1) -> dict:
    results = read_results(run_dir)
    assert results["status"] == "completed"
    assert (run_dir / "checkpoints" / "last.pt").is_file() and (run_dir / "checkpoints" / "best.pt").is_file()
    events = EventAccumulator(str(run_dir))
    events.Reload()
    results = read_results(run_dir)
    top5_defined = results["data"]["num_classes"] >= 5
    assert (TAGS if top5_defined else TAGS - {"val/acc5"}) <= set(events.Tags()["scalars"])
    assert ("val/acc5" in events.Tags()["scalars"]) == top5_defined
    assert len(events.Scalars("val/acc1")) == epochs
    # hyperparameters and their final metrics live in the same run (no timestamped sub-run)
    start = plugin_data_pb2.HParamsPluginData.FromString(
        events.SummaryMetadata("_hparams_/session_start_info").plugin_data.content).session_start_info
    results = read_results(run_dir)
    assert start.hparams["model.att_type"].string_value == results["config"]["model"]["att_type"]
    assert start.hparams["model.depth"].number_value == results["config"]["model"]["depth"]
    assert events.Scalars("hparam/final_acc1")[-1].value == pytest.approx(results["final"]["acc1"])
    assert [p for p in run_dir.iterdir() if p.is_dir() and p.name not in ("checkpoints", ".hydra")] == []
    for key in ("acc1", "acc5", "err1", "err5") if top5_defined else ("acc1", "err1"):
        assert 0 <= results["final"][key] <= 100
    if not top5_defined:  # top-5 of 3 classes is undefined, not 100%
        assert results["final"]["acc5"] is None and results["final"]["err5"] is None
    assert results["final"]["err1"] == pytest.approx(100 - results["final"]["acc1"])
    assert results["params"] > 1e6 and results["gflops"] > 0 and results["images_per_sec"] > 0
    assert results["wall_seconds"] > 0 and results["torch_version"] == torch.__version__
    assert results["device"].startswith("cpu") and "config" in results and "git_commit" in results
    return results


def test_one_epoch_on_cifar_pickles(tmp_path):
    root = write_cifar10(tmp_path / "data")
    cfg = compose_train(["data=cifar10", f"data.root={root}", "data.batch_size=10", "data.num_workers=0",
                         "model.att_type=CBAM", "trainer.epochs=1", "trainer.progress=false"])
    run = tmp_path / "run"
    train(cfg, run)
    results = assert_complete_run(run)
    assert results["data"]["train_size"] == 100 and results["data"]["val_size"] == 40
    assert results["params"] == 11_263_842  # CIFAR10 ResNet-18 + CBAM, as in the reference code
    assert results["model"]["network_type"] == "CIFAR10"


def test_one_epoch_on_imagefolder_tree(tmp_path):
    root = write_imagefolder(tmp_path / "images")
    cfg = compose_train(["data=imagefolder", f"data.root={root}", "data.image_size=32", "data.batch_size=6",
                         "data.num_workers=0", "model.att_type=BAM", "trainer.epochs=1", "trainer.progress=false"])
    run = tmp_path / "run"
    train(cfg, run)
    results = assert_complete_run(run)
    assert results["data"]["num_classes"] == 3 and results["model"]["num_classes"] == 3
    assert results["model"]["network_type"] == "ImageNet"


def test_accumulation_counts_optimizer_steps(tmp_path):
    train(compose_train(FAST + ["trainer.accumulate=3"]), tmp_path)
    assert read_results(tmp_path)["global_step"] == 2  # 6 batches of 8 / 3


def test_deterministic_runs_give_identical_weights(tmp_path):
    for name in ("a", "b"):
        train(compose_train(FAST + ["model.att_type=CBAM"]), tmp_path / name)
    a = load_training_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")["model"]
    b = load_training_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    c_cfg = compose_train(FAST + ["model.att_type=CBAM", "seed=1"])
    train(c_cfg, tmp_path / "c")
    c = load_training_checkpoint(tmp_path / "c" / "checkpoints" / "last.pt")["model"]
    assert not all(torch.equal(a[k], c[k]) for k in a)


def poison_model_after(monkeypatch, calls_before_nan: int) -> None:
    """Make every model built by the app emit NaN logits from its Nth training forward on."""
    original = app.build_model
    calls = {"n": 0}

    def build(spec, **options):
        model = original(spec, **options)

        def hook(module, inputs, output):
            if module.training:
                calls["n"] += 1
                if calls["n"] >= calls_before_nan:
                    return output * float("nan")

        model.register_forward_hook(hook)
        return model

    monkeypatch.setattr(app, "build_model", build)


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    train(compose_train(FAST + ["trainer.epochs=1"]), tmp_path)  # a good first epoch
    last = tmp_path / "checkpoints" / "last.pt"
    before = last.read_bytes()
    poison_model_after(monkeypatch, 3)
    with pytest.raises(NonFiniteLossError) as error:
        # resumes (auto) at epoch 2
        train(compose_train(FAST + ["trainer.epochs=3", "trainer.resume_allow_changes=true"]), tmp_path)
    message = str(error.value)
    assert "nan at epoch 2, batch 3" in message and "step 8" in message and str(last) in message
    assert last.read_bytes() == before
    # the first, completed attempt keeps its results; the failed continuation is recorded beside them
    assert read_results(tmp_path)["status"] == "completed"
    attempt = json.loads((tmp_path / "results.last_attempt.json").read_text())
    assert attempt["status"] == "failed" and "NonFiniteLossError" in attempt["error"]


def test_fp16_lets_the_scaler_skip_before_stopping(tmp_path, monkeypatch):
    poison_model_after(monkeypatch, 2)
    with pytest.raises(NonFiniteLossError, match="batch 5"):
        train(compose_train(FAST + ["trainer.precision=fp16", "trainer.max_nonfinite_skips=3"]), tmp_path)
    assert not (tmp_path / "checkpoints" / "last.pt").exists()


def test_batch_larger_than_the_training_set(tmp_path):
    with pytest.raises(ValueError, match="data.batch_size=64 is larger than the training set"):
        train(compose_train(FAST + ["data.batch_size=64"]), tmp_path)


def test_missing_data_gives_clear_error_and_records_it(tmp_path):
    cfg = compose_train(["data=cifar10", f"data.root={tmp_path / 'nowhere'}", "trainer.progress=false"])
    # A sweep's job keeps its folder: its results.json is the record of which job failed and why.
    with pytest.raises(ValueError) as error:
        train(cfg, tmp_path / "job", job={"num": 3, "overrides": []})
    assert "cifar-10-batches-py" in str(error.value) and "data.download" in str(error.value)
    failed = read_results(tmp_path / "job")
    assert failed["status"] == "failed" and "cifar-10-batches-py" in failed["error"]
    # A single run refused before training leaves no empty run folder behind; other files there stay.
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError):
        train(cfg, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["notes.txt"]
    with pytest.raises(ValueError):
        train(cfg, tmp_path / "cifar10_resnet18_none" / "stamp")
    assert not (tmp_path / "cifar10_resnet18_none").exists()


def test_corrupt_or_foreign_resume_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt or\\s+truncated"):
        train(compose_train(FAST + [f"trainer.resume={bad}"]), tmp_path / "run1")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}}, foreign)
    with pytest.raises(CheckpointError, match="not an attn-resnet training checkpoint"):
        train(compose_train(FAST + [f"trainer.resume={foreign}"]), tmp_path / "run2")
    # a checkpoint of another model is refused too, naming what differs
    train(compose_train(FAST), tmp_path / "run3")
    completed = (tmp_path / "run3" / "results.json").read_text()
    with pytest.raises(ValueError, match="model.att_type: 'none' -> 'CBAM'"):
        train(compose_train(FAST + ["model.att_type=CBAM", "trainer.epochs=2"]), tmp_path / "run3")
    # the completed run's results survive the failed attempt, which is recorded beside them
    assert (tmp_path / "run3" / "results.json").read_text() == completed
    assert json.loads((tmp_path / "run3" / "results.last_attempt.json").read_text())["status"] == "failed"


def test_resume_from_a_given_checkpoint(tmp_path):
    train(compose_train(FAST), tmp_path / "first")
    source = tmp_path / "first" / "checkpoints" / "last.pt"
    train(compose_train(FAST + ["trainer.epochs=2", f"trainer.resume={source}", "trainer.resume_allow_changes=true"]),
          tmp_path / "second")
    results = read_results(tmp_path / "second")
    assert results["epochs"] == 2 and results["global_step"] == 12 and len(results["history"]) == 2
    first = load_training_checkpoint(source)["model"]
    second = _weights(tmp_path / "second" / "checkpoints" / "last.pt")
    assert not all(torch.equal(first[k], v) for k, v in second.items())


def _weights(path: Path) -> dict:
    return load_training_checkpoint(path)["model"]


def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path):
    # 5 batches per epoch, a checkpoint after each: the run is killed after batch 2, 3 or 4 of epoch 2.
    # Every recipe feature that draws random numbers or keeps state is on: cutout, mixup/CutMix, the
    # weight average, BCE against smoothed targets, LAMB, the one-cycle schedule (lr and momentum),
    # stochastic depth, RandAugment, random erasing, repeated augmentation.
    args = FAST + ["data.train_size=40", "trainer.epochs=2", "trainer.checkpoint_every_steps=1",
                   "model.att_type=CBAM", "data.image_size=16", "aug.cutout=6", "aug.mixup=0.2", "aug.cutmix=1.0",
                   "aug.mix_prob=0.8", "trainer.ema_decay=0.9", "trainer.ema_warmup=true", "trainer.loss=bce",
                   "trainer.label_smoothing=0.1", "optim=lamb", "sched=onecycle", "optim.layer_decay=0.8", "model.drop_path=0.1",
                   "aug.policy=randaugment", "aug.random_erasing=0.3", "data.repeat_aug=2"]
    reference = run_script("train.py", args + [f"hydra.run.dir={tmp_path / 'ref'}"])
    assert reference.returncode == 0, reference.stderr[-2000:]

    run_dir = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "train.py", *args, f"hydra.run.dir={run_dir}"], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run_dir / "checkpoints" / "last.pt"
    kill_mid_epoch(process, run_dir, epoch=1, batch=2)  # mid-way through the 2nd epoch
    assert read_results(run_dir)["status"] == "running"
    resumed = run_script("train.py", args + [f"hydra.run.dir={run_dir}"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Resumed from" in (run_dir / "train.log").read_text()
    reference_state, resumed_state = load_training_checkpoint(tmp_path / "ref" / "checkpoints" / "last.pt"), \
        load_training_checkpoint(last)
    for a, b in ((reference_state["model"], resumed_state["model"]),
                 (reference_state["callbacks"]["ema"]["weights"], resumed_state["callbacks"]["ema"]["weights"])):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_results(run_dir)["final"] == read_results(tmp_path / "ref")["final"]


def test_multirun_records_failed_and_successful_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_script("train.py", ["--multirun", *FAST, "model.depth=18,42", f"hydra.sweep.dir={sweep}"])
    assert result.returncode != 0
    outcomes = {}
    for path in sweep.glob("*/results.json"):
        results = json.loads(path.read_text())
        outcomes[results["config"]["model"]["depth"]] = results
    assert outcomes[18]["status"] == "completed"
    assert outcomes[42]["status"] == "failed" and "model.depth=42" in outcomes[42]["error"]
    # The sweep says which folder is its own when it starts, and again at the end, failed job or not.
    lines = [line for line in result.stderr.splitlines() if line.startswith("Sweep folder:")]
    assert lines[0] == f"Sweep folder: {sweep}" and len(lines) == 2, result.stderr[-2000:]
    assert lines[1] == f"Sweep folder: {sweep} (1 completed, 1 failed); its table: python scripts/paper_table.py {sweep}"


def test_a_single_run_prints_no_sweep_folder(tmp_path):
    result = run_script("train.py", ["model.depth=42", f"hydra.run.dir={tmp_path / 'run'}"])
    assert result.returncode == 1 and "Sweep" not in result.stdout + result.stderr


def test_a_single_run_names_its_folder_at_the_start_and_its_checkpoint_at_the_end(tmp_path, caplog):
    run = tmp_path / "run"
    result = run_script("train.py", [*FAST, f"hydra.run.dir={run}"])
    assert result.returncode == 0, result.stderr[-2000:]
    for text in (result.stdout + result.stderr, (run / "train.log").read_text()):  # the console and the log
        lines = [line.split("] - ", 1)[-1] for line in text.splitlines()]
        first_epoch = next(index for index, line in enumerate(lines) if line.startswith("epoch 1/1"))
        assert f"Run folder: {run}" in lines[:first_epoch], lines[:first_epoch]
        assert lines[-1].startswith(f"Run folder: {run}") and str(run / "checkpoints" / "best.pt") in lines[-1]
    # Without a best.pt the end line names last.pt.
    with caplog.at_level("INFO"):
        train(compose_train([*FAST, "trainer.save_best=false"]), tmp_path / "no_best")
    assert str(tmp_path / "no_best" / "checkpoints" / "last.pt") in caplog.records[-1].getMessage()


def test_evaluate_reproduces_final_val_accuracy(tmp_path):
    root = write_cifar10(tmp_path / "data")
    overrides = ["data=cifar10", f"data.root={root}", "data.batch_size=10", "data.num_workers=0",
                 "trainer.epochs=1", "trainer.progress=false"]
    train(compose_train(overrides), tmp_path / "run")
    final = read_results(tmp_path / "run")["final"]
    result = run_script("evaluate.py", [f"checkpoint={tmp_path / 'run' / 'checkpoints' / 'last.pt'}",
                                        f"hydra.run.dir={tmp_path / 'eval'}"])
    assert result.returncode == 0, result.stderr[-2000:]
    evaluation = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert evaluation["acc1"] == pytest.approx(final["acc1"]) and evaluation["acc5"] == pytest.approx(final["acc5"])
    assert evaluation["images"] == 40 and "top-1" in result.stdout
    # best.pt holds the weights alone; evaluation reads it the same (one epoch: best is the last).
    result = run_script("evaluate.py", [f"checkpoint={tmp_path / 'run' / 'checkpoints' / 'best.pt'}",
                                        f"hydra.run.dir={tmp_path / 'eval_best'}"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "eval_best" / "eval.json").read_text())["acc1"] == pytest.approx(final["acc1"])


def test_evaluate_refuses_foreign_checkpoint(tmp_path):
    foreign = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    result = run_script("evaluate.py", [f"checkpoint={foreign}", f"hydra.run.dir={tmp_path / 'eval'}"])
    assert result.returncode == 1
    assert "checkpoint_format=official" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_digits_learns_to_95_percent_on_the_cpu(tmp_path):
    # The quick start's recipe on the real embedded data set, two epochs shorter (96.4% here).
    cfg = compose_train(["experiment=digits", "trainer.epochs=3", "trainer.progress=false",
                         "trainer.deterministic=true"])
    train(cfg, tmp_path)
    results = read_results(tmp_path)
    assert results["final"]["acc1"] >= 95.0, results["history"]
    losses = [epoch["train_loss"] for epoch in results["history"]]
    assert losses[-1] < losses[0] / 5


@pytest.mark.slow
def test_quick_start_command_reaches_97_percent(tmp_path):
    result = run_script("train.py", ["experiment=digits", f"hydra.run.dir={tmp_path}"], timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert read_results(tmp_path)["final"]["acc1"] >= 97.0
    assert "final val top-1" in (tmp_path / "train.log").read_text()


def test_evaluate_takes_the_authors_checkpoint_format(tmp_path):
    from attn_resnet.models import ResidualNet
    from helpers import ours_to_official

    root = write_cifar10(tmp_path / "data")
    torch.manual_seed(0)
    model = ResidualNet("CIFAR10", 18, 10, "CBAM")
    wrapped = {"epoch": 3, "arch": "resnet", "best_prec1": 10.0,
               "state_dict": {f"module.{ours_to_official(k)}": v for k, v in model.state_dict().items()}}
    path = tmp_path / "RESNET18_CIFAR10_CBAM_model_best.pth.tar"
    torch.save(wrapped, path)
    args = [f"checkpoint={path}", "checkpoint_format=official", "model.depth=18", "model.att_type=CBAM",
            "data=cifar10", f"data.root={root}", "data.num_workers=0", f"hydra.run.dir={tmp_path / 'eval'}"]
    result = run_script("evaluate.py", args)
    assert result.returncode == 0, result.stderr[-2000:]
    evaluation = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert evaluation["images"] == 40 and evaluation["params"] == 11_263_842
    # the wrong architecture is refused with the clear message
    result = run_script("evaluate.py", args[:3] + ["model.att_type=BAM"] + args[4:])
    assert result.returncode == 1 and "looks like" in result.stderr + result.stdout


def test_determinism_is_reset_between_jobs_of_a_sweep():
    from attn_resnet.app import configure_determinism

    try:
        configure_determinism(0, True)
        assert torch.are_deterministic_algorithms_enabled()
        configure_determinism(0, False)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
