"""Recipes (recipe=paper|modern) and the blocks x recipes table (paper_table.py --by recipe)."""

import json

import pytest
from omegaconf import OmegaConf

from attn_resnet import reporting
from attn_resnet.config.validate import validate_train_config

from helpers import FAST, compose_train, run_script, write_run_results

# The knobs recipe=modern turns on, with the values the recipe study asks for.
MODERN = {"aug.policy": "trivialaugment", "aug.cutout": 16, "aug.random_erasing": 0.0, "aug.mixup": 0.2,
          "aug.cutmix": 1.0, "trainer.label_smoothing": 0.1, "trainer.ema_decay": 0.999, "trainer.ema_warmup": True,
          "trainer.tta": "flip", "model.drop_path": 0.05, "optim.exempt_bn_and_bias": True,
          "sched.warmup_epochs": 5}


# ------------------------------------------------------------------------- the recipe files
def test_recipe_paper_is_the_plain_default_run():
    plain = OmegaConf.to_container(compose_train([]))
    paper = OmegaConf.to_container(compose_train(["recipe=paper"]))
    assert (plain.pop("recipe_name"), paper.pop("recipe_name")) == (None, "paper")
    assert paper == plain
    assert (paper["optim"]["name"], paper["optim"]["momentum"], paper["optim"]["weight_decay"],
            paper["sched"]["name"], paper["trainer"]["label_smoothing"]) == ("sgd", 0.9, 5e-4, "cosine", 0.0)


def test_recipe_modern_sets_each_knob_and_only_those():
    plain, modern = compose_train([]), compose_train(["recipe=modern"])
    assert modern.recipe_name == "modern"
    for key, value in MODERN.items():
        assert OmegaConf.select(modern, key) == value, key
    changed = {f"{group}.{key}" for group in ("model", "data", "optim", "sched", "trainer", "aug")
               for key in plain[group] if plain[group][key] != modern[group][key]}
    assert changed == {key for key, value in MODERN.items() if OmegaConf.select(plain, key) != value}


@pytest.mark.parametrize("overrides", [["recipe=paper"], ["recipe=modern"],
                                       ["experiment=recipe_study_cifar10", "recipe=modern"],
                                       ["experiment=cifar10_fast", "recipe=modern"]])
def test_the_config_validation_accepts_the_recipes(overrides):
    config = compose_train(overrides, return_hydra_config=True)
    choices = {key: value for key, value in OmegaConf.to_container(config.hydra.runtime.choices).items()
               if value is not None}
    task = OmegaConf.masked_copy(config, [key for key in config if key != "hydra"])
    validate_train_config(task, choices)
    if not overrides[0].startswith("experiment="):  # an experiment's own keys (seeds) need that record
        validate_train_config(compose_train(overrides))  # composed without Hydra's record of the choices


def test_an_experiment_composes_after_the_recipe():
    fast = compose_train(["experiment=cifar10_fast", "recipe=modern"])
    assert (fast.recipe_name, fast.aug.cutout, fast.aug.policy) == ("modern", 12, "trivialaugment")


def test_the_recipe_study_launches_blocks_x_recipes_x_seeds():
    overrides = ["experiment=recipe_study_cifar10"]
    config = compose_train(overrides, return_hydra_config=True)
    config.hydra.overrides.task = overrides
    jobs = reporting.sweep_jobs(config)
    assert len(jobs) == 5 * 2 * 3 == len({tuple(sorted(job)) for job in jobs})
    assert {option for job in jobs for option in job if option.startswith("recipe=")} == {"recipe=paper",
                                                                                        "recipe=modern"}
    assert {option for job in jobs for option in job if option.startswith("model.att_type=")} == {
        f"model.att_type={name}" for name in ("none", "SE", "CBAM", "BAM", "ECA")}
    study = compose_train(overrides)
    assert (study.data.name, study.model.depth, study.optim.lr, study.trainer.epochs) == ("cifar10", 18, 0.1, 200)


def test_a_run_records_its_recipe(tmp_path):
    """A real run with recipe=modern: its results.json names the recipe, and the table reads it."""
    result = run_script("train.py", [*FAST, "recipe=modern", "trainer.limit_train_batches=2",
                                     "trainer.limit_val_batches=1", f"hydra.run.dir={tmp_path / 'run'}"])
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["config"]["recipe_name"] == "modern" and results["tta"] == "flip"
    (run,) = reporting.collect_runs(tmp_path)
    assert reporting.run_recipe(run) == "modern"


# ------------------------------------------------------------------- the blocks x recipes table
# Hand-worked: top-1 accuracy = 100 - err1. Paired differences are the block's accuracy minus the plain
# network's of the same recipe and seed; t_{0.975, 2} = 4.302652729749462, t_{0.975, 1} = 12.70620474.
#   paper  none  80.0 78.0 79.0   mean 79.00, sd 1.00
#   paper  SE    81.9 80.0 81.1   mean 81.00, sd sqrt(1.82 / 2) = 0.954; vs plain 1.9 2.0 2.1: mean 2.00, sd 0.1,
#                                 half width 4.3027 * 0.1 / sqrt(3) = 0.248 -> [+1.75, +2.25], excludes 0
#   paper  CBAM  81.0 80.0 82.0   mean 81.00, sd 1.00;  vs plain 1.0 2.0 3.0: half width 2.484 -> [-0.48, +4.48]
#   modern none  90.0 88.0 89.0   mean 89.00, sd 1.00
#   modern SE    89.0 86.8 88.2   mean 88.00, sd sqrt(2.48 / 2) = 1.114; vs plain -1.0 -1.2 -0.8: mean -1.00,
#                                 sd 0.2, half width 0.497 -> [-1.50, -0.50], excludes 0 (a loss)
#   modern CBAM  91.0 (seed 0; seed 1 failed)   one pair: n/a
#   modern ECA   91.0 90.0        mean 90.50, sd 0.707; vs plain 1.0 2.0: mean 1.50, sd 0.707,
#                                 half width 12.7062 * 0.7071 / sqrt(2) = 6.353 -> [-4.85, +7.85]
#   no recipe: a plain run at 70.0
ACC1 = {
    "paper": {"none": [80.0, 78.0, 79.0], "SE": [81.9, 80.0, 81.1], "CBAM": [81.0, 80.0, 82.0]},
    "modern": {"none": [90.0, 88.0, 89.0], "SE": [89.0, 86.8, 88.2], "CBAM": [91.0], "ECA": [91.0, 90.0]},
}


def _write(folder, *, recipe, att_type, seed, acc1=None, status="completed"):
    """A results.json as a run of the recipe study leaves it (recipe None: a run that chose none)."""
    config = {"seed": seed, "model": {"depth": 18, "att_type": att_type}, "data": {"name": "cifar10"}}
    overrides = ["experiment=recipe_study_cifar10", f"model.att_type={att_type}", f"seed={seed}"]
    if recipe is not None:
        config["recipe_name"] = recipe
        overrides.insert(1, f"recipe={recipe}")
    write_run_results(folder, config, overrides, status, None if acc1 is None else 100 - acc1,
                      "NonFiniteLossError: loss is nan")


@pytest.fixture
def study(tmp_path):
    for recipe, blocks in ACC1.items():
        for att_type, accuracies in blocks.items():
            for seed, acc1 in enumerate(accuracies):
                _write(tmp_path / recipe / f"{att_type}_{seed}", recipe=recipe, att_type=att_type, seed=seed,
                       acc1=acc1)
    _write(tmp_path / "modern" / "CBAM_1", recipe="modern", att_type="CBAM", seed=1, status="failed")
    _write(tmp_path / "older" / "none_0", recipe=None, att_type="none", seed=0, acc1=70.0)
    return tmp_path


def _pivot(text: str) -> tuple[list[str], dict[str, list[str]]]:
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| Block"))
    rows = {cells[0]: cells for cells in (line.strip("| ").split(" | ") for line in lines[lines.index(header) + 2:]
                                          if line.startswith("| "))}
    return header.strip("| ").split(" | "), rows


def test_the_recipe_of_a_run_comes_from_its_config_then_its_command_line():
    def run(config, overrides=()):
        return reporting.Run("r", "failed", None, None, None, config=config, overrides=list(overrides))

    assert reporting.run_recipe(run({"recipe_name": "modern"}, ["recipe=paper"])) == "modern"
    assert reporting.run_recipe(run({}, ["experiment=recipe_study_cifar10", "recipe=modern"])) == "modern"
    assert reporting.run_recipe(run({"recipe_name": None}, ["recipe=paper"])) == "paper"  # rebuilt from a sweep
    assert reporting.run_recipe(run({"seed": 0})) == reporting.NO_RECIPE


def test_table_by_recipe_by_hand(study):
    header, rows = _pivot(reporting.recipe_pivot(reporting.collect_runs(study), caption="tiny budget"))
    assert header == ["Block", "paper", "modern", "(no recipe)", "paper: vs plain (95% CI)",
                      "modern: vs plain (95% CI)", "(no recipe): vs plain (95% CI)"]
    assert list(rows) == ["none (plain)", "SE", "CBAM", "ECA"]  # the plain network first, then the registry's order
    assert rows["none (plain)"][1:] == ["79.00 ± 1.00 (3)", "89.00 ± 1.00 (3)", "70.00 (1)", "–", "–", "–"]
    assert rows["SE"][1:] == ["81.00 ± 0.95 (3)", "88.00 ± 1.11 (3)", "—", "+2.00 [+1.75, +2.25] * (n=3)",
                              "-1.00 [-1.50, -0.50] * (n=3)", "—"]
    assert rows["CBAM"][1:] == ["81.00 ± 1.00 (3)", "91.00 (1)", "—", "+2.00 [-0.48, +4.48] (n=3)", "n/a", "—"]
    assert rows["ECA"][1:] == ["—", "90.50 ± 0.71 (2)", "—", "—", "+1.50 [-4.85, +7.85] (n=2)", "—"]


def test_paper_table_by_recipe_command(study, tmp_path):
    out = tmp_path / "table.md"
    result = run_script("scripts/paper_table.py", [str(study), "--by", "recipe", "--caption", "tiny budget",
                                                   "--output", str(out)])
    assert result.returncode == 0, result.stderr
    assert out.read_text() == result.stdout
    _, rows = _pivot(result.stdout)
    assert rows["SE"][4:6] == ["+2.00 [+1.75, +2.25] * (n=3)", "-1.00 [-1.50, -0.50] * (n=3)"]
    text = result.stdout
    assert "**cifar10, ResNet-18**" in text and "tiny budget" in text and "paired by seed" in text
    assert "Runs not completed:" in text and "modern: ResNet-18 + CBAM (cifar10, seed 1): failed" in text

    result = run_script("scripts/paper_table.py", [str(study), "--by", "recipe", "--where", "recipe_name=modern"])
    assert result.returncode == 0, result.stderr
    header, rows = _pivot(result.stdout)
    assert header == ["Block", "modern", "modern: vs plain (95% CI)"] and rows["SE"][1] == "88.00 ± 1.11 (3)"


def test_the_architecture_table_says_when_a_row_mixes_recipes(study):
    result = run_script("scripts/paper_table.py", [str(study)])
    assert result.returncode == 0, result.stderr
    assert "ResNet-18 + SE (cifar10) mixes runs of several recipes (modern, paper)" in result.stdout
    assert "ResNet-18 (cifar10) mixes runs of several recipes ((no recipe), modern, paper)" in result.stdout
    result = run_script("scripts/paper_table.py", [str(study), "--where", "recipe_name=paper"])
    assert result.returncode == 0 and "mixes runs" not in result.stdout
