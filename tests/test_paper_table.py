"""Paper tables: sweep -> results.json -> table beside the published numbers; complexity columns."""

import csv
import io
import json
import shutil

import pytest

from attn_resnet import reporting

from helpers import run_script


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A real 2x2 multirun: ResNet-18/34 x none/BAM, 1 epoch on tiny data, batch size 1.

    BAM cannot train with batch size 1 (its BatchNorm1d), so both BAM jobs fail for real;
    then one successful job's folder is deleted.
    """
    sweep_dir = tmp_path_factory.mktemp("sweep")
    result = run_script("train.py", [
        "--multirun", "experiment=attention_cifar10", "data=synthetic", "data.image_size=16", "data.train_size=6",
        "data.val_size=4", "data.batch_size=1", "trainer.epochs=1", "trainer.progress=false",
        "model.depth=18,34", "model.att_type=none,BAM", f"hydra.sweep.dir={sweep_dir}"], timeout=600)
    assert result.returncode != 0  # the BAM jobs failed
    folders = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name[0].isdigit())
    assert len(folders) == 4
    deleted = next(p for p in folders if p.name.endswith("resnet34_none"))
    shutil.rmtree(deleted)
    return sweep_dir


def test_table_has_a_row_per_architecture_and_lists_failed_and_missing_runs(sweep):
    result = run_script("scripts/paper_table.py", [str(sweep), "--format", "md"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = lines[0]
    for column in ("Model", "Params (M)", "GFLOPs", "Top-1 err (%)", "Top-5 err (%)", "Seeds", "Paper top-1",
                   "Δ top-1"):
        assert column in header
    rows = [line for line in lines[2:] if line.startswith("| ResNet")]
    assert [row.split(" | ")[0] for row in rows] == ["| ResNet-18", "| ResNet-18 + BAM", "| ResNet-34",
                                                      "| ResNet-34 + BAM"]
    r18 = rows[0].split(" | ")
    assert r18[2] == "11.17" and r18[6] == "1"  # params of the CIFAR ResNet-18 (10 classes), one seed
    assert 0 <= float(r18[4]) <= 100
    assert rows[2].split(" | ")[6] == "0/1"  # the deleted run is counted, not dropped
    text = result.stdout
    assert "Runs not completed:" in text
    assert "ResNet-34 (synthetic, seed 0): missing" in text
    assert "ResNet-18 + BAM (synthetic, seed 0): failed" in text and "batch size of at least 2" in text


def test_csv_and_latex(sweep):
    rows = reporting.build_rows(reporting.collect_runs(sweep), reporting.paper_table("attention_cifar10"))
    records = list(csv.DictReader(io.StringIO(reporting.render(rows, "csv"))))
    assert {"model", "err1_mean", "err1_std", "seeds_completed", "paper_err1", "delta_err1"} <= set(records[0])
    by_model = {(r["model"], r["data"]): r for r in records}
    assert by_model[("ResNet-18", "cifar10")]["paper_err1"] == "5.0"  # published row without runs stays
    assert by_model[("ResNet-18", "cifar10")]["seeds_completed"] == "0"
    latex = reporting.render(rows, "latex", reporting.paper_table("attention_cifar10"))
    assert latex.count(r"\\") == len(rows) + 1 and r"\begin{tabular}" in latex and "% not completed" in latex


def test_mean_and_std_over_seeds(tmp_path):
    for seed, err1 in enumerate([10.0, 12.0, 14.0]):
        folder = tmp_path / f"{seed}_run"
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps({
            "status": "completed", "config": {"seed": seed, "model": {"depth": 50, "att_type": "CBAM"},
                                              "data": {"name": "imagenet"}},
            "final": {"err1": err1, "err5": 1.0}, "params": 28_089_624, "gflops": 4.0956}))
    rows = reporting.build_rows(reporting.collect_runs(tmp_path), reporting.paper_table("cbam_table4"))
    row = next(r for r in rows if r.depth == 50 and r.att_type == "CBAM")
    assert row.err("err1") == pytest.approx((12.0, 2.0))
    cells = reporting.table_cells(row)
    assert cells[4] == "12.00 ± 2.00" and cells[6] == "3" and cells[7] == "22.66" and cells[8] == "-10.66"


def test_complexity_only_reproduces_cbam_table4():
    paper = reporting.paper_table("cbam_table4")
    rows = reporting.complexity_rows(paper)
    assert len(rows) == len(paper["rows"]) == 12
    for row in rows:
        assert row.printed("params_m", row.params_m) == row.paper["params_m"], row.label
        assert row.printed("gflops", row.gflops) == row.paper["gflops"], row.label
    result = run_script("scripts/paper_table.py", ["--complexity-only", "--paper", "cbam_table4"])
    assert result.returncode == 0 and result.stdout.count("| yes |") == 12 and "NO" not in result.stdout


def test_bad_arguments():
    assert run_script("scripts/paper_table.py", ["/no/such/folder"]).returncode == 2
    result = run_script("scripts/paper_table.py", ["--complexity-only"])
    assert result.returncode != 0 and "--paper" in result.stderr
    with pytest.raises(ValueError, match="cbam_table4"):
        reporting.paper_table("nope")


@pytest.mark.parametrize(
    "experiment,seeds,jobs",
    [("cbam_imagenet", 1, 12), ("cbam_imagenet", 3, 36), ("bam_imagenet", 1, 2), ("bam_cifar100", 2, 4),
     ("attention_cifar10", 1, 8)],
)
def test_experiment_sweeps_launch_the_whole_table(experiment, seeds, jobs):
    from hydra import compose, initialize_config_dir

    from helpers import CONF

    overrides = [f"experiment={experiment}", f"seeds={seeds}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        config = compose("train", overrides=overrides, return_hydra_config=True)
    config.hydra.overrides.task = overrides
    grid = reporting.sweep_jobs(config)
    assert len(grid) == jobs
    assert len({tuple(sorted(job)) for job in grid}) == jobs
    assert {f"seed={s}" for s in range(seeds)} == {o for job in grid for o in job if o.startswith("seed=")}


def test_recipes_follow_the_papers():
    from helpers import compose_train

    cbam = compose_train(["experiment=cbam_imagenet"])
    assert (cbam.data.name, cbam.optim.name, cbam.optim.lr, cbam.optim.reference_batch_size) == ("imagenet", "sgd",
                                                                                               0.1, 256)
    assert (cbam.optim.momentum, cbam.optim.weight_decay, cbam.sched.name, cbam.sched.step_size,
            cbam.sched.gamma, cbam.trainer.epochs) == (0.9, 1e-4, "step", 30, 0.1, 90)
    bam = compose_train(["experiment=bam_cifar100"])
    assert (bam.data.name, bam.model.depth, bam.sched.name, list(bam.sched.milestones), bam.trainer.epochs) == (
        "cifar100", 50, "multistep", [150, 225], 300)
