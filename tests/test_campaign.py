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
