"""Every config composes and validates; bad values fail fast with the key and the choices."""

import itertools
import time

import pytest

from attn_resnet.app import ConfigError, validate_train_config

from helpers import CONF, compose_train, run_script

GROUPS = {group: sorted(p.stem for p in (CONF / group).glob("*.yaml")) for group in
          ("model", "data", "optim", "sched", "trainer")}
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def test_groups_exist():
    assert set(GROUPS["data"]) >= {"cifar10", "cifar100", "imagenet", "imagefolder", "synthetic", "digits"}
    assert set(GROUPS["optim"]) == {"sgd", "adamw"} and set(GROUPS["sched"]) >= {"step", "multistep", "cosine"}
    assert set(GROUPS["trainer"]) >= {"default", "debug"} and EXPERIMENTS


@pytest.mark.parametrize("data,optim,sched,trainer", list(itertools.product(
    GROUPS["data"], GROUPS["optim"], GROUPS["sched"], GROUPS["trainer"])))
def test_every_group_combination_composes_and_validates(data, optim, sched, trainer):
    cfg = compose_train([f"data={data}", f"optim={optim}", f"sched={sched}", f"trainer={trainer}"])
    validate_train_config(cfg)
    assert cfg.data.name == data and cfg.optim.name == optim and cfg.sched.name == sched


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_validates(experiment):
    cfg = compose_train([f"experiment={experiment}"])
    validate_train_config(cfg)


@pytest.mark.parametrize("depth,att", list(itertools.product([18, 34, 50, 101], ["none", "SE", "CBAM", "BAM", "cbam"])))
def test_model_choices_validate(depth, att):
    validate_train_config(compose_train([f"model.depth={depth}", f"model.att_type={att}"]))


@pytest.mark.parametrize(
    "override,needle,choice",
    [
        ("model.depth=42", "model.depth=42", "101"),
        ("model.att_type=XYZ", "model.att_type='XYZ'", "CBAM"),
        ("trainer.precision=fp8", "trainer.precision='fp8'", "bf16"),
        ("optim.name=lion", "optim.name='lion'", "adamw"),
        ("model.init=xavier", "model.init='xavier'", "torchvision"),
        ("data.batch_size=0", "data.batch_size=0", "positive"),
        ("trainer.resume=/no/such/file.pt", "trainer.resume", "no such file"),
    ],
)
def test_bad_values_name_the_key_and_the_choices(override, needle, choice):
    with pytest.raises(ConfigError) as error:
        validate_train_config(compose_train([override]))
    assert needle in str(error.value) and choice in str(error.value)


def test_cli_bad_value_fails_fast_before_reading_data(tmp_path):
    started = time.time()
    # data.root points nowhere: a data read would fail with a different message.
    result = run_script("train.py", ["model.depth=42", f"data.root={tmp_path / 'nothing'}",
                                     f"hydra.run.dir={tmp_path / 'run'}"])
    elapsed = time.time() - started
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "model.depth=42" in output and "18, 34, 50, 101" in output
    assert "Traceback" not in output
    assert "cifar-10-batches-py" not in output
    assert elapsed < 15  # fails in seconds (the budget includes starting Python and importing torch)
    assert '"status": "failed"' in (tmp_path / "run" / "results.json").read_text()


def test_cli_unknown_dataset_lists_choices(tmp_path):
    result = run_script("train.py", ["data=mnist", f"hydra.run.dir={tmp_path}"])
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "mnist" in output and "cifar10" in output and "digits" in output


def test_cfg_job_prints_the_resolved_config():
    result = run_script("train.py", ["--cfg", "job", "model.att_type=CBAM", "data=cifar100"])
    assert result.returncode == 0, result.stderr
    assert "att_type: CBAM" in result.stdout and "name: cifar100" in result.stdout
    assert "network_type: CIFAR100" in result.stdout
