"""The ledger of committed runs: tables over nested folders, ``where`` conditions, seeds already done."""

import json

import pytest

from attn_resnet import reporting

from helpers import run_script, write_run_results

FAST_CBAM = ["experiment=cifar10_fast", "model.att_type=CBAM"]


def _write(folder, *, seed, att_type, overrides, status="completed", err1=10.0, epochs=30):
    """A results.json as a training run leaves it, with the config and command line of its job."""
    config = {"seed": seed, "model": {"depth": 18, "att_type": att_type}, "data": {"name": "cifar10"},
              "optim": {"weight_decay": 0.0005, "nesterov": True}, "trainer": {"epochs": epochs}}
    write_run_results(folder, config, [*overrides, f"seed={seed}"], status, err1)


@pytest.fixture
def ledger(tmp_path):
    """Runs of two sessions on one card, at different depths of folders.

    cifar10_fast CBAM completed with seeds 0, 1 (twice) and 4 (at 40 epochs); seed 2 failed.
    cifar10_fast none completed with seeds 0 and 1; attention_cifar10 CBAM with seed 3.
    """
    card = tmp_path / "runs" / "nvidia-h200"
    first, second = card / "2026-11-28_campaign", card / "2026-11-29_campaign" / "sweep" / "nested"
    _write(first / "cbam_s0", seed=0, att_type="CBAM", overrides=FAST_CBAM, err1=6.0)
    _write(first / "none_s0", seed=0, att_type="none", overrides=["experiment=cifar10_fast"], err1=7.0)
    _write(second / "cbam_s1", seed=1, att_type="CBAM", overrides=FAST_CBAM, err1=6.2)
    _write(second / "cbam_s1_again", seed=1, att_type="cbam", err1=6.4,
           overrides=["experiment=cifar10_fast", "model.att_type=cbam"])
    _write(second / "none_s1", seed=1, att_type="none", overrides=["experiment=cifar10_fast"], err1=7.5)
    _write(second / "cbam_s2", seed=2, att_type="CBAM", overrides=FAST_CBAM, status="failed")
    _write(second / "cbam_s4_40ep", seed=4, att_type="CBAM", overrides=[*FAST_CBAM, "trainer.epochs=40"], epochs=40)
    _write(card / "zoo" / "cbam_s3", seed=3, att_type="CBAM", overrides=["experiment=attention_cifar10"], err1=20.0)
    return card


def test_count_seeds_counts_distinct_completed_seeds_of_one_configuration(ledger, tmp_path):
    assert reporting.completed_seeds(ledger, {"experiment": "cifar10_fast", "model.att_type": "CBAM"}) == [0, 1, 4]
    assert reporting.count_seeds(ledger, {"experiment": "cifar10_fast", "model.att_type": "CBAM"}) == 3
    # A condition on a value of the resolved config: the 40-epoch run is another configuration.
    assert reporting.count_seeds(ledger, [*FAST_CBAM, "trainer.epochs=30"]) == 2
    assert reporting.count_seeds(ledger, ["experiment=cifar10_fast", "model.att_type=none"]) == 2
    assert reporting.count_seeds(ledger, ["model.att_type=cbam"]) == 4  # any spelling; every experiment
    assert reporting.count_seeds(ledger, ["experiment=cifar10_fast", "model.att_type=SE"]) == 0
    assert reporting.count_seeds(ledger) == 4  # 0, 1, 3, 4 over every configuration; seed 2 only failed
    assert reporting.count_seeds(tmp_path / "no" / "such" / "card", FAST_CBAM) == 0  # a card's first session


def test_run_settings_come_from_the_config_then_the_command_line():
    run = reporting.Run("r", "completed", "cifar10", 18, "CBAM", 0,
                        config={"model": {"att_type": "CBAM", "depth": 18}, "trainer": {"epochs": 30},
                                "optim": {"weight_decay": 0.0005, "nesterov": True}},
                        overrides=["experiment=attention_cifar10", "trainer.epochs=99", "++experiment=cifar10_fast",
                                   "~model.stride_in_1x1"])
    assert reporting.run_setting(run, "trainer.epochs") == 30  # the resolved value, not the command line's
    assert reporting.run_setting(run, "experiment") == "cifar10_fast"  # a group choice: the last override wins
    assert reporting.run_setting(run, "model") is None  # a node, not a value, and no override sets it
    assert reporting.run_setting(run, "model.stride_in_1x1") is None
    assert reporting.run_matches(run, {"optim.weight_decay": "5e-4", "optim.nesterov": "true", "model.depth": "18"})
    assert not reporting.run_matches(run, {"optim.weight_decay": "1e-4"})
    assert not reporting.run_matches(run, {"data.name": "cifar10"})  # a key the run does not have never matches
    assert reporting.unknown_keys([run], {"experiment": "x", "model.att_tpye": "CBAM"}) == ["model.att_tpye"]
    with pytest.raises(ValueError, match="key=value"):
        reporting.parse_where(["experiment"])


def test_count_seeds_command(ledger, tmp_path):
    result = run_script("scripts/paper_table.py", ["--count-seeds", str(ledger), "--where", *FAST_CBAM])
    assert (result.returncode, result.stdout) == (0, "3\n"), result.stderr
    assert "0, 1, 4" in result.stderr
    result = run_script("scripts/paper_table.py", ["--count-seeds", str(tmp_path / "new_card"), "--where", *FAST_CBAM])
    assert (result.returncode, result.stdout) == (0, "0\n")
    result = run_script("scripts/paper_table.py", ["--count-seeds", str(ledger), "--where", "model.att_tpye=CBAM"])
    assert result.returncode == 2 and result.stdout == "" and "model.att_tpye" in result.stderr
    result = run_script("scripts/paper_table.py", ["--count-seeds", str(ledger), "--where", "experiment"])
    assert result.returncode == 2 and "key=value" in result.stderr


def test_table_over_a_ledger_selects_one_recipe(ledger):
    result = run_script("scripts/paper_table.py", [str(ledger), "--where", "experiment=cifar10_fast",
                                                   "trainer.epochs=30"])
    assert result.returncode == 0, result.stderr
    rows = {cells[0]: cells for cells in (line.strip("| ").split(" | ") for line in result.stdout.splitlines()
                                          if line.startswith("| ResNet"))}
    assert list(rows) == ["ResNet-18", "ResNet-18 + CBAM"]
    # none: seeds 0 and 1 (7.0, 7.5); CBAM: seed 0 (6.0), seed 1 twice (6.2, 6.4), seed 2 failed.
    assert rows["ResNet-18"][4:7] == ["7.25 ± 0.35", "1.00 ± 0.00", "2"]
    assert rows["ResNet-18 + CBAM"][6] == "3/4"
    # Paired by seed, seed 1's two CBAM runs as one (6.3): differences 1.0 and 1.2, mean 1.1, sd 0.1414,
    # half width t_{0.975,1} * 0.1414 / sqrt(2) = 12.7062 * 0.1 = 1.2706.
    assert rows["ResNet-18 + CBAM"][-2:] == ["+1.10 [-0.17, +2.37]", "2"]
    assert "mixes runs" not in result.stdout and "Runs not completed:" in result.stdout and "cbam_s2" in result.stdout

    result = run_script("scripts/paper_table.py", [str(ledger)])  # every recipe together: said under the table
    assert result.returncode == 0, result.stderr
    assert "ResNet-18 + CBAM (cifar10) mixes runs of several experiments (attention_cifar10, cifar10_fast)" in (
        result.stdout)
    result = run_script("scripts/paper_table.py", [str(ledger), "--where", "experiment=cbam_imagenet"])
    assert result.returncode == 2 and "experiment=cbam_imagenet" in result.stderr


def test_a_table_says_how_its_runs_were_evaluated(tmp_path):
    card = tmp_path / "card"
    for seed, (tta, ema) in enumerate([("none", 0.0), ("flip_translate", 0.998), ("flip_translate", 0.998)]):
        _write(card / f"run{seed}", seed=seed, att_type="none", overrides=["experiment=cifar10_fast"])
        path = card / f"run{seed}" / "results.json"
        results = json.loads(path.read_text())
        results["config"]["trainer"] |= {"tta": tta, "ema_decay": ema}
        path.write_text(json.dumps(results))
    result = run_script("scripts/paper_table.py", [str(card)])
    assert result.returncode == 0, result.stderr
    assert ("Evaluated with: 2 runs with TTA flip_translate, the weight average (EMA 0.998); 1 run with no TTA, "
            "the trained weights.") in result.stdout
    plain = tmp_path / "plain"
    _write(plain / "run0", seed=0, att_type="none", overrides=[])
    assert "Evaluated with" not in run_script("scripts/paper_table.py", [str(plain)]).stdout  # the default: no line


def test_missing_seeds_lists_what_a_campaign_still_has_to_run(ledger, tmp_path):
    result = run_script("scripts/paper_table.py", ["--count-seeds", str(ledger), "--missing-seeds", "4", "--where",
                                                   *FAST_CBAM, "trainer.epochs=30"])
    assert result.returncode == 0 and result.stdout.strip() == "2,3"  # seeds 0 and 1 done; 2 failed, 4 is 40 epochs
    result = run_script("scripts/paper_table.py", ["--count-seeds", str(tmp_path / "new"), "--missing-seeds", "3"])
    assert result.stdout.strip() == "0,1,2"  # a card's first session: every seed
    result = run_script("scripts/paper_table.py", ["--count-seeds", str(ledger), "--missing-seeds", "2", "--where",
                                                   *FAST_CBAM])
    assert result.returncode == 0 and result.stdout == "\n"  # all done: an empty line
