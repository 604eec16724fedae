"""scripts/gpu_campaign.sh: its CPU dry run composes and runs every command of the recipe stage."""

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_campaign_dry_run_trains_evaluates_and_packs_the_runs(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(["bash", "scripts/gpu_campaign.sh", "dry"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "failed: none" in summary and summary.count("| completed |") == 8
    with tarfile.open(tmp_path / "out" / "runs.tar.gz") as packed:
        names = packed.getnames()
    assert sum(name.endswith("results.json") for name in names) == 8
    assert not any(name.endswith(".pt") for name in names)  # never checkpoints
    evaluations = json.loads((tmp_path / "out" / "sweeps" / "grid.evaluations.json").read_text())
    # Six runs, each with trained and averaged weights, each without TTA, with flip and flip+translate.
    assert len(evaluations) == 6 * 2 * 3
    assert {(e["weights"], e["tta"]) for e in evaluations} == {(w, t) for w in ("model", "ema")
                                                                for t in ("none", "flip", "flip_translate")}


@pytest.mark.slow
def test_the_attention_stage_runs_only_the_seeds_the_ledger_lacks(tmp_path):
    from helpers import write_run_results

    ledger = tmp_path / "ledger"
    recipe = {"trainer": {"epochs": 50, "tta": "flip_translate"}, "aug": {"cutout": 12}, "data": {"name": "cifar10"}}
    done = [("none", 0), ("none", 1), ("SE", 0)]
    for att, seed in done:
        config = {**recipe, "seed": seed, "model": {"depth": 18, "att_type": att}}
        write_run_results(ledger / f"{att}_{seed}", config, ["experiment=cifar10_fast", f"seed={seed}"])
    # An earlier variant (30 epochs) of CBAM does not count as the recipe's.
    write_run_results(ledger / "cbam_old", {**recipe, "seed": 0, "trainer": {"epochs": 30, "tta": "none"},
                                            "model": {"depth": 18, "att_type": "CBAM"}}, ["experiment=cifar10_fast"])
    env = {**os.environ, "OUT": str(tmp_path / "out"), "OMP_NUM_THREADS": "1", "LEDGER": str(ledger)}
    result = subprocess.run(["bash", "scripts/gpu_campaign.sh", "dry-attention"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "attention none: 2 seeds" in summary
    ran = sorted((path.parent.parent.name, json.loads(path.read_text())["config"]["seed"])
                 for path in (tmp_path / "out" / "sweeps").glob("*/*/results.json"))
    assert ran == [("attention_CBAM", 0), ("attention_SE", 1)]  # two jobs at most: SE's missing seed, then CBAM's first
