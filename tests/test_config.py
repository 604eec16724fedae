"""Configs: every group option takes effect, bad or unknown keys fail fast (before torch), names and folders."""

import itertools
import os
import re
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from attn_resnet.config import choices as C
from attn_resnet.config.validate import ConfigError, group_keys, validate_train_config

from helpers import CONF, REPO, compose_train, run_script

GROUPS = {group: sorted(p.stem for p in (CONF / group).glob("*.yaml")) for group in
          ("model", "data", "optim", "sched", "trainer")}
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def test_the_model_conf_file_holds_the_network_transfer_and_execution_keys():
    # conf/model/resnet.yaml's keys are the ones the code sorts into the model spec, the transfer start
    # and the execution options; a key in neither would reach ResidualNet as an unknown block option.
    from attn_resnet.build import MODEL_OPTION_KEYS

    assert (set(MODEL_OPTION_KEYS) | {"depth", "att_type"} | set(C.TRANSFER_MODEL_KEYS) | set(C.EXECUTION_MODEL_KEYS)
            == group_keys(CONF, "model", "resnet"))


def test_blocks_read_from_their_source_declare_what_their_classes_take():
    # The command-line check and --help read a block's options from its source, without torch:
    # they must be what the imported class takes, with the same defaults, in the same order.
    from attn_resnet.attention_registry import BLOCKS, declared_block
    from attn_resnet.models.attention import ATTENTION_BLOCKS, block_options

    for name in BLOCKS:
        declared = declared_block(name)
        assert declared is not None, name
        assert declared.options == {key: repr(value) for key, value in block_options(name).items()}, name
        assert declared.placement == ATTENTION_BLOCKS[name].placement, name
        assert declared.summary and declared.summary == ATTENTION_BLOCKS[name].__doc__.strip().splitlines()[0]


@pytest.mark.parametrize("data,optim,sched,trainer", list(itertools.product(
    GROUPS["data"], GROUPS["optim"], GROUPS["sched"], GROUPS["trainer"])))
def test_every_group_combination_takes_its_options_values(data, optim, sched, trainer):
    cfg = compose_train([f"data={data}", f"optim={optim}", f"sched={sched}", f"trainer={trainer}"])
    validate_train_config(cfg, {"data": data, "optim": optim, "sched": sched, "trainer": trainer})
    # each group holds exactly the keys of the chosen file, with that file's values
    for group, option in (("data", data), ("optim", optim), ("sched", sched)):
        own = OmegaConf.load(CONF / group / f"{option}.yaml")
        assert set(cfg[group]) == set(own)
        for key in own:
            if not OmegaConf.is_interpolation(own, key):
                assert cfg[group][key] == own[key], (group, key)
    if trainer == "debug":
        assert cfg.trainer.limit_train_batches == 4 and cfg.trainer.epochs == 1
    else:
        assert cfg.trainer.limit_train_batches == 0 and cfg.trainer.epochs == 200


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_sets_its_recipe(experiment, tmp_path):
    recipe = OmegaConf.load(CONF / "experiment" / f"{experiment}.yaml")
    extra = []
    if (recipe.get("model") or {}).get("init_from") == C.INIT_FROM_REQUIRED:  # a fine-tuning recipe: give the file
        (tmp_path / "weights.pth").write_bytes(b"")
        extra = [f"model.init_from={tmp_path / 'weights.pth'}"]
    cfg = compose_train([f"experiment={experiment}", *extra])
    validate_train_config(cfg, {"experiment": experiment, "data": cfg.data.name, "optim": cfg.optim.name,
                                "sched": cfg.sched.name})
    for group in ("model", "data", "optim", "sched", "trainer"):
        for key, value in (recipe.get(group) or {}).items():
            if not (extra and (group, key) == ("model", "init_from")):
                assert cfg[group][key] == value, (experiment, group, key)


def test_validation_and_checkpoint_frequencies_may_change_on_resume():
    from attn_resnet.config.resume import trajectory_changes

    saved = {"trainer": {"epochs": 5, "val_every_epochs": 1, "checkpoint_every_epochs": 1, "compile_eval": True}}
    assert trajectory_changes(saved, {"trainer": {"epochs": 5, "val_every_epochs": 2, "checkpoint_every_epochs": 3,
                                                  "compile_eval": False}}) == {}
    assert trajectory_changes(saved, {"trainer": {"epochs": 6, "val_every_epochs": 1}}) == {"trainer.epochs": (5, 6)}


def test_cifar10_fast_validates_and_checkpoints_once_after_the_last_epoch_whatever_the_epochs():
    cfg = compose_train(["experiment=cifar10_fast"])
    assert cfg.trainer.val_every_epochs == cfg.trainer.checkpoint_every_epochs == cfg.trainer.epochs == 50
    cfg = compose_train(["experiment=cifar10_fast", "trainer.epochs=7"])
    validate_train_config(cfg)
    assert cfg.trainer.val_every_epochs == cfg.trainer.checkpoint_every_epochs == 7
    assert compose_train(["experiment=cifar10_fast", "trainer.val_every_epochs=1"]).trainer.val_every_epochs == 1


@pytest.mark.parametrize("depth,att", list(itertools.product([18, 34, 50, 101], ["none", "SE", "CBAM", "BAM", "cbam"])))
def test_model_choices_validate(depth, att):
    validate_train_config(compose_train([f"model.depth={depth}", f"model.att_type={att}"]))


@pytest.mark.parametrize(
    "override,needle,choice",
    [
        ("model.depth=42", "model.depth=42", "101"),
        ("model.att_type=XYZ", "model.att_type='XYZ'", "CBAM"),
        ("trainer.precision=fp8", "trainer.precision='fp8'", "bf16"),
        ("optim.name=adagrad", "optim.name='adagrad'", "lion"),
        ("model.init=xavier", "model.init='xavier'", "torchvision"),
        ("model.att_placement=middle", "model.att_placement='middle'", "post_add"),
        ("data.batch_size=0", "data.batch_size=0", "positive"),
        ("data.num_workers=-1", "data.num_workers=-1", "non-negative"),
        ("data.val_split=1.5", "data.val_split=1.5", "integer"),
        ("trainer.epochs=2.5", "trainer.epochs=2.5", "integer"),
        ("trainer.device=gpu", "trainer.device='gpu'", "cuda:N"),
        ("trainer.compile_mode=fastest", "trainer.compile_mode='fastest'", "reduce-overhead"),
        ("trainer.eval_precision=16", "trainer.eval_precision=16", "same"),
        ("data.loader=gpu", "data.loader='gpu'", "workers"),
        ("trainer.label_smoothing=1.5", "trainer.label_smoothing=1.5", "[0, 1)"),
        ("trainer.val_every_epochs=0", "trainer.val_every_epochs=0", "positive integer"),
        ("trainer.checkpoint_every_epochs=2.5", "trainer.checkpoint_every_epochs=2.5", "positive integer"),
        ("trainer.compile_eval=sometimes", "trainer.compile_eval='sometimes'", "true or false"),
        ("trainer.resume=/no/such/file.pt", "trainer.resume", "no such file"),
    ],
)
def test_bad_values_name_the_key_and_the_choices(override, needle, choice):
    with pytest.raises(ConfigError) as error:
        validate_train_config(compose_train([override]))
    assert needle in str(error.value) and choice in str(error.value)


@pytest.mark.parametrize(
    "overrides,needles",
    [
        (["model.att_type=CBAM", "++model.kernel_size=4"], ["model.kernel_size=4", "odd"]),
        (["model.att_type=SE", "++model.kernel_size=3"], ["'model.kernel_size'", "the SE block takes model.reduction"]),
        (["model.att_type=CBAM", "++model.kernel_sise=3"], ["Did you mean model.kernel_size?"]),
        (["model.att_type=none", "model.att_placement=head"], ["att_type=none places nothing"]),
        (["model.att_type=SE", "++model.reduction=0"], ["model.reduction=0", "reduction"]),
    ],
)
def test_block_options_and_placements_are_checked_against_the_block(overrides, needles):
    with pytest.raises(ConfigError) as error:
        validate_train_config(compose_train(overrides))
    assert all(needle in str(error.value) for needle in needles), str(error.value)


def test_block_options_reach_the_model_spec():
    from attn_resnet.build import build_model, model_spec

    cfg = compose_train(["model.att_type=CBAM", "++model.kernel_size=3", "++model.reduction=8",
                         "model.att_placement=head"])
    validate_train_config(cfg)
    spec = model_spec(OmegaConf.to_container(cfg.model), "CIFAR10", 10)
    assert spec["kernel_size"] == 3 and spec["reduction"] == 8 and spec["att_placement"] == "head"
    model = build_model(spec)
    (name, block), = model.attention_blocks()
    assert name == "head_attn" and block.spatial_gate.conv.kernel_size == (3, 3)
    assert block.channel_gate.mlp[0].out_features == 512 // 8


def test_block_option_overrides_need_no_plus(tmp_path):
    from attn_resnet.commands.hydra_app import block_option_overrides

    argv = ["train.py", "model.att_type=CBAM", "model.kernel_size=3", "model.depth=50", "++model.reduction=8",
            "data.batch_size=4", "--multirun", "model.groups=4,8"]
    assert block_option_overrides(argv) == ["train.py", "model.att_type=CBAM", "++model.kernel_size=3",
                                            "model.depth=50", "++model.reduction=8", "data.batch_size=4",
                                            "--multirun", "++model.groups=4,8"]


@pytest.mark.parametrize(
    "override,key,nearest",
    [
        ("+model.att=CBAM", "model.att", "model.att_type"),
        ("+trainer.epoch=3", "trainer.epoch", "trainer.epochs"),
        ("+optim.learning_rate=0.1", "optim.learning_rate", "optim.lr"),
        ("+seeed=1", "seeed", "seed"),
        # a key of another data set's options is unknown for this one
        ("+data.val_fraction=0.1", "data.val_fraction", "data.val_"),
    ],
)
def test_unknown_keys_fail_naming_the_key_and_the_nearest_valid_ones(override, key, nearest):
    with pytest.raises(ConfigError) as error:
        validate_train_config(compose_train([override]))
    message = str(error.value)
    assert f"Unknown config key {key!r}" in message and nearest in message


def test_config_checks_import_no_torch_and_set_the_cublas_workspace_first():
    # CUBLAS_WORKSPACE_CONFIG must be in the environment before anything can initialise CUDA,
    # for every job of a sweep: the entry points set it on import, before torch is imported.
    code = ("import os, sys, attn_resnet.commands.hydra_app, attn_resnet.config.preflight, attn_resnet.config.validate; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]; "
            "assert os.environ['CUBLAS_WORKSPACE_CONFIG'] == ':4096:8'")
    env = {k: v for k, v in os.environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"}
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, env=env)


@pytest.mark.parametrize("args,needles", [
    (["model.depth=42"], ["model.depth=42", "18, 34, 50, 101"]),
    (["+model.att=CBAM"], ["model.att", "model.att_type"]),
])
def test_cli_bad_config_fails_before_any_folder_or_import(tmp_path, args, needles):
    run_dir = tmp_path / "run"
    result = run_script("train.py", args + [f"data.root={tmp_path / 'nothing'}", f"hydra.run.dir={run_dir}"])
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert all(needle in output for needle in needles), output
    assert "Traceback" not in output and "cifar-10-batches-py" not in output
    assert not run_dir.exists()  # no folder is left behind by a run that never started


def test_cli_unknown_dataset_lists_choices(tmp_path):
    result = run_script("train.py", ["data=mnist", f"hydra.run.dir={tmp_path}"])
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "mnist" in output and "cifar10" in output and "digits" in output


def test_cfg_job_resolve_prints_the_resolved_config():
    result = run_script("train.py", ["--cfg", "job", "--resolve", "model.att_type=cbam", "data=cifar100"])
    assert result.returncode == 0, result.stderr
    assert "att_type: cbam" in result.stdout and "name: cifar100" in result.stdout
    assert "stem: cifar" in result.stdout
    assert "name: cifar100_resnet18_CBAM" in result.stdout and "${" not in result.stdout


@pytest.mark.parametrize("args", [[], ["hparams_search=optuna_lr_wd"]])
def test_cfg_hydra_resolve_prints_hydras_config(args):
    # --cfg hydra shows the hydra node alone: the run name it interpolates is not there to resolve.
    result = run_script("train.py", ["--cfg", "hydra", "--resolve", *args])
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"^    dir: outputs/<name>/\d{4}-\d\d-\d\d_", result.stdout, re.MULTILINE), result.stdout[:500]
    assert "${" not in result.stdout
    # A run's own folder is still named after the run.
    folder = str(compose_train(["model.att_type=cbam"], return_hydra_config=True).hydra.run.dir)
    assert folder.startswith("outputs/cifar10_resnet18_CBAM/"), folder


def test_run_name_uses_the_canonical_block_spelling():
    assert compose_train(["model.att_type=cbam"]).name == "cifar10_resnet18_CBAM"
    assert compose_train(["model.att_type=NONE", "model.depth=50"]).name == "cifar10_resnet50_none"


def test_run_and_sweep_folders_differ_for_configs_composed_in_the_same_second():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        first = compose(config_name="train", return_hydra_config=True)
        second = compose(config_name="train", return_hydra_config=True)
    dirs = [(str(c.hydra.run.dir), str(c.hydra.sweep.dir)) for c in (first, second)]
    assert dirs[0][0] != dirs[1][0] and dirs[0][1] != dirs[1][1]
    # within one config the token is drawn once: run and sweep folders agree, re-resolving is stable
    assert str(first.hydra.run.dir) == dirs[0][0]
    assert dirs[0][0].rsplit("_", 1)[1] == dirs[0][1].rsplit("_", 1)[1]


# ------------------------------------------- keys and options Hydra would refuse, checked before it runs
@pytest.mark.parametrize("script,args,needles", [
    # A key of another group: the project's error at once, naming where the key lives.
    ("train.py", ["trainer.mixup=0.2"], ["Unknown config key 'trainer.mixup'", "Did you mean aug.mixup?",
                                         "Valid keys of trainer:", "epochs", "e.g. aug.mixup=0.2"]),
    # An option without a file: the group's choices and the nearest one.
    ("train.py", ["optim=adamm"], ["Invalid config choice optim=adamm", "Did you mean optim=adamw?",
                                   "Valid choices of optim: adamw, lamb, lion, sgd"]),
    ("train.py", ["data=cifar"], ["data=cifar", "Did you mean data=cifar10 or data=cifar100?", "digits"]),
    # A sweep is checked value by value, before any job starts.
    ("train.py", ["--multirun", "optim=sgd,adamm"], ["Invalid config choice optim=adamm"]),
    ("train.py", ["-m", "trainer.epoch=1,2"], ["Unknown config key 'trainer.epoch'", "Did you mean trainer.epochs?"]),
    ("train.py", ["model.reduction=8"], ["Unknown config key 'model.reduction'", "option of the SE, CBAM",
                                         "model.att_type=none takes no such option"]),
    ("evaluate.py", ["checkpoint=x.pt", "data.rooot=/data"], ["Unknown config key 'data.rooot'",
                                                             "Did you mean data.root?"]),
    ("evaluate.py", ["checkpoint=x.pt", "data=cifar"], ["Invalid config choice data=cifar", "cifar10"]),
    ("evaluate.py", ["checkpoint=x.pt", "trainer.epochs=3"], ["Unknown config key 'trainer.epochs'",
                                                             "evaluate.py's config has no such top-level key"]),
])
def test_keys_and_options_hydra_would_refuse_get_the_projects_error(tmp_path, script, args, needles):
    folder = tmp_path / "run"
    result = run_script(script, [*args, f"hydra.run.dir={folder}", f"hydra.sweep.dir={folder}"])
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert result.stderr.startswith("Error: ") and len(result.stderr.strip().splitlines()) == 1, output
    assert all(needle in output for needle in needles), output
    assert "Could not" not in output and "Traceback" not in output and "search path" not in output
    assert not folder.exists()


def test_the_command_line_check_imports_no_torch():
    code = ("import sys; from pathlib import Path; from attn_resnet.config.command_line import check_overrides; "
            "from attn_resnet.config.validate import ConfigError\n"
            "for args in (['trainer.mixup=0.2'], ['optim=adamm'], ['model.att_type=CBAM', 'model.kernel_sise=3']):\n"
            "    try: check_overrides(['train.py', *args], 'train', Path('conf'))\n"
            "    except ConfigError: pass\n"
            "    else: raise SystemExit(f'{args} passed')\n"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


@pytest.mark.parametrize("config_name,args", [
    ("train", ["+trainer.mixup=0.2", "++model.whatever=1"]),  # '+' and '++' are deliberate: validation's business
    ("train", ["~aug.mixup", "~experiment"]),  # deletions of keys that exist
    ("train", ["hydra.run.dir=x", "hydra/launcher=slurm", "hydra.job.chdir=true", "hydra.launcher.nodes=2"]),
    ("train", ["-m", "model.att_type=SE,CBAM", "model.kernel_size=3"]),  # a block of the sweep takes it
    ("train", ["model.att_type=cbam", "model.reduction=8", "model.kernel_size=3"]),
    ("train", ["experiment=attention_cifar10", "seeds=3"]),  # a key the experiment adds
    ("train", ["experiment=digits", "data.val_fraction=0.1"]),  # the experiment chooses data=digits
    ("train", ["-m", "data=cifar10,digits", "data.val_fraction=0.1"]),  # a key of one option of the sweep
    ("train", ["-m", "data=glob(*)", "data.train_size=10"]),
    ("train", ["-m", "experiment=attention_zoo_cifar10", "model.groups=8"]),  # the experiment sweeps blocks
    ("train", ["trainer=debug", "trainer.limit_train_batches=2", "seed=range(0,3)", "optim=adamw",
               "optim.betas=[0.9,0.99]"]),
    ("train", ["--cfg", "job", "--resolve", "-p", "model", "data=synthetic", "data.train_size=10"]),
    ("train", ["--config-name", "mine", "whatever=1"]),  # another config: Hydra's to check
    ("train", ["hparams_search=optuna_lr_wd", "data=null", "optimized_metric=val_loss"]),
    ("evaluate", ["checkpoint=x.pt", "checkpoint_format=official", "model.depth=50", "model.att_type=CBAM",
                  "data=imagenet", "data.root=/data", "data.val_subset=100", "tta=flip"]),
])
def test_valid_command_lines_pass_the_check(config_name, args):
    from attn_resnet.config.command_line import check_overrides

    check_overrides([f"{config_name}.py", *args], config_name, CONF)


# ------------------------------------------------------------------------------- --help
def test_train_help_lists_every_groups_options_with_a_line_each_and_the_blocks():
    result = run_script("train.py", ["--help"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    listed: dict[str, dict[str, str]] = {}  # group -> option -> its line
    for line in lines[lines.index("== Config groups =="):lines.index("== Attention blocks ==")]:
        if re.match(r"^[a-z_/]+:", line):
            group = listed.setdefault(line.split(":")[0], {})
        elif line.startswith("  "):
            group[line.split()[0]] = line
    for name in ("model", "data", "optim", "sched", "trainer", "aug", "recipe", "ablation", "experiment",
                 "hparams_search", "hydra/launcher"):
        assert sorted(listed[name]) == sorted(path.stem for path in (CONF / name).glob("*.yaml")), name
        assert all(len(line.split()) > 3 for line in listed[name].values()), listed[name]  # each with its line
    assert any(line.split()[:2] == ["sgd", "*"] and "SGD with momentum" in line for line in lines)  # the default
    cbam = next(line for line in lines if line.split()[:1] == ["CBAM"])
    assert ("Placement: residual; options: reduction=16, kernel_size=7, channel_pool='avgmax', spatial='avgmax', "
            "arrangement='channel_first'.") in cbam
    assert "Could not" not in result.stdout + result.stderr


def test_evaluate_help_lists_only_what_evaluate_uses():
    result = run_script("evaluate.py", ["--help"])
    assert result.returncode == 0, result.stderr
    groups = [line.split(":")[0] for line in result.stdout.splitlines() if re.match(r"^[a-z_/]+:\s*(\(.*\))?$", line)]
    assert "model" in groups and "data" in groups
    assert not {"optim", "sched", "trainer", "aug", "recipe", "experiment", "hparams_search"} & set(groups), groups
    assert "checkpoint: null" in result.stdout and "CBAM" in result.stdout


@pytest.mark.parametrize("args,needles", [
    # The sgd group's momentum given to Lion: the error names the option, what Lion takes and the group to choose.
    (["optim.name=lion"], ["optim.momentum is not an option of timm.optim.lion.Lion", "betas (default (0.9, 0.99))",
                           "optim=lion"]),
    (["sched.name=onecycle", "sched.warmup_epochs=2"], ["sched.warmup_start_factor is not an option of",
                                                         "one_cycle_scheduler", "div_factor (default 25.0)",
                                                         "sched=onecycle"]),
    (["trainer.resume=/no/such/last.pt"], ["trainer.resume='/no/such/last.pt': no such file"]),
])
def test_value_errors_are_found_before_torch_is_imported(tmp_path, args, needles):
    code = ("import runpy, sys\n"
            f"sys.argv = ['train.py', *{args!r}, 'hydra.run.dir={tmp_path / 'run'}']\n"
            "try:\n    runpy.run_path('train.py', run_name='__main__')\n"
            "finally:\n    assert not {'torch', 'timm'} & set(sys.modules), "
            "[m for m in sys.modules if 'torch' in m][:5]")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1 and "AssertionError" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.startswith("Error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert all(needle in result.stderr for needle in needles), result.stderr
    assert not (tmp_path / "run").exists()


def test_help_imports_no_torch():
    code = ("import runpy, sys\nsys.argv = ['train.py', '--help']\ntry:\n    runpy.run_path('train.py', "
            "run_name='__main__')\nfinally:\n    assert 'torch' not in sys.modules, [m for m in sys.modules if "
            "'torch' in m][:5]")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0 and "== Attention blocks ==" in result.stdout, result.stderr[-2000:]
