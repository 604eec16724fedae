"""Paper tables: sweep -> results.json -> table beside the published numbers; complexity columns."""

import csv
import io
import json
import math
import shutil

import pytest

from attn_resnet import reporting
from attn_resnet.models.attention import ATTENTION_BLOCKS
from attn_resnet.reporting.runs import _canonical_att

from helpers import run_script


@pytest.fixture(scope="module")
def sweep(module_tmp):
    """A real 2x2 multirun: ResNet-18/34 x none/BAM, 1 epoch on tiny data, batch size 1.

    BAM cannot train with batch size 1 (its BatchNorm1d), so both BAM jobs fail for real;
    then one successful job's folder is deleted.
    """
    sweep_dir = module_tmp("sweep")
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
    assert len(rows) == len(paper["rows"]) == 24  # ResNet-18/34/50/101, WideResNet-18 x2, ResNeXt-50/101
    for row in rows:
        assert row.printed("params_m", row.params_m) == row.paper["params_m"], row.label
        assert row.printed("gflops", row.gflops) == row.paper["gflops"], row.label
    result = run_script("scripts/paper_table.py", ["--complexity-only", "--paper", "cbam_table4"])
    assert result.returncode == 0 and result.stdout.count("| yes |") == 24 and "NO" not in result.stdout


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


# ------------------------------------------------------------------ command-line sweeps
def _real_multirun(sweep_dir, *sweep):
    """``train.py --multirun`` with the FAST settings and ``sweep`` (e.g. ``model.att_type=none,SE``)."""
    from helpers import FAST

    return run_script("train.py", ["--multirun", *FAST, *sweep, f"hydra.sweep.dir={sweep_dir}"], timeout=600)


def _job_results(sweep_dir) -> dict:
    """{folder name: results.json} of every job folder of a sweep."""
    return {path.parent.name: json.loads(path.read_text()) for path in sorted(sweep_dir.glob("*/results.json"))}


def _md_rows(text: str) -> dict:
    """{model label: cells} of a Markdown table printed by paper_table.py."""
    return {cells[0]: cells for cells in (line.strip("| ").split(" | ") for line in text.splitlines()
                                          if line.startswith("| ResNet"))}


@pytest.fixture(scope="module")
def cli_sweep(module_tmp):
    """A real command-line sweep (``hydra.sweeper.params: null``): ResNet-18 x none/SE, both complete."""
    sweep_dir = module_tmp("cli_sweep")
    result = _real_multirun(sweep_dir, "model.att_type=none,SE")
    assert result.returncode == 0, result.stderr[-2000:]
    return sweep_dir


@pytest.fixture(scope="module")
def cli_sweep_with_failure(module_tmp):
    """A real command-line sweep whose second job (ResNet-42, no such model) fails."""
    sweep_dir = module_tmp("cli_sweep_failure")
    result = _real_multirun(sweep_dir, "model.depth=18,42")
    assert result.returncode != 0  # Hydra runs every job, then reports the failed one
    return sweep_dir


def test_command_line_sweep_records_no_sweeper_params(cli_sweep):
    from omegaconf import OmegaConf

    saved = OmegaConf.load(cli_sweep / "multirun.yaml")
    assert saved.hydra.sweeper.params is None  # what used to crash the table builder
    jobs = reporting.expected_jobs(cli_sweep / "multirun.yaml")
    assert [(number, run.dataset, run.depth, run.att_type, run.seed) for number, run in jobs] == [
        (0, "synthetic", 18, "none", 0), (1, "synthetic", 18, "SE", 0)]


def test_table_of_a_command_line_sweep(cli_sweep):
    results = _job_results(cli_sweep)
    assert len(results) == 2 and all(r["status"] == "completed" for r in results.values())
    acc1 = {_canonical_att(r["config"]["model"]["att_type"]): r["final"]["acc1"] for r in results.values()}
    assert set(acc1) == {"none", "SE"}

    runs = reporting.collect_runs(cli_sweep)
    assert len(runs) == 2 and all(run.status == "completed" for run in runs)  # nothing counted twice as missing
    rows = reporting.build_rows(runs)
    assert [(row.dataset, row.depth, row.att_type, len(row.completed), len(row.runs)) for row in rows] == [
        ("synthetic", 18, "none", 1, 1), ("synthetic", 18, "SE", 1, 1)]
    for row in rows:
        assert row.err("err1") == (pytest.approx(100 - acc1[row.att_type]), None)
    assert reporting.problems(rows) == []

    result = run_script("scripts/paper_table.py", [str(cli_sweep), "--format", "md"])
    assert result.returncode == 0, result.stderr
    table = _md_rows(result.stdout)
    assert list(table) == ["ResNet-18", "ResNet-18 + SE"]
    for label, att_type in (("ResNet-18", "none"), ("ResNet-18 + SE", "SE")):
        assert table[label][1] == "synthetic" and table[label][6] == "1"
        assert table[label][4] == f"{100 - acc1[att_type]:.2f}"
    assert "Runs not completed" not in result.stdout

    result = run_script("scripts/paper_table.py", [str(cli_sweep), "--format", "csv"])
    assert result.returncode == 0, result.stderr
    records = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["model"], r["seeds_completed"], float(r["err1_mean"])) for r in records] == [
        ("ResNet-18", "1", pytest.approx(100 - acc1["none"])), ("ResNet-18 + SE", "1", pytest.approx(100 - acc1["SE"]))]
    result = run_script("scripts/paper_table.py", [str(cli_sweep), "--format", "latex"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(r"\\") == 3 and "not completed" not in result.stdout


def test_table_of_a_command_line_sweep_with_a_failed_job(cli_sweep_with_failure):
    results = _job_results(cli_sweep_with_failure)
    completed = [r for r in results.values() if r["status"] == "completed"]
    assert len(completed) == 1 and completed[0]["config"]["model"]["depth"] == 18

    result = run_script("scripts/paper_table.py", [str(cli_sweep_with_failure), "--format", "md"])
    assert result.returncode == 0, result.stderr
    table = _md_rows(result.stdout)
    assert list(table) == ["ResNet-18", "ResNet-42"]
    assert table["ResNet-18"][6] == "1" and table["ResNet-18"][4] == f"{100 - completed[0]['final']['acc1']:.2f}"
    assert table["ResNet-42"][6] == "0/1" and table["ResNet-42"][4] == "–"
    table_end = max(result.stdout.index(f"| {label} |") for label in table)
    notes = result.stdout[table_end:]
    assert "Runs not completed:" in notes
    failed = [line for line in notes.splitlines() if line.startswith("- ")]
    assert len(failed) == 1 and failed[0].startswith("- ResNet-42 (synthetic, seed 0): ")
    assert str(cli_sweep_with_failure / "1_") in failed[0]  # where to look


# ------------------------------------------------ multirun.yaml composed as Hydra does it
def _hydra_multirun_yaml(sweep_dir, overrides: list[str]):
    """Write ``sweep_dir/multirun.yaml`` as ``train.py --multirun <overrides>`` would, without running a job.

    Mirrors ``Hydra.multirun``: the sweep's config is composed in MULTIRUN mode from the
    command line, and the basic sweeper saves it unresolved. Hydra's public ``compose`` cannot:
    it composes in RUN mode, which refuses sweep overrides (``model.att_type=none,SE``).
    """
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from helpers import CONF

    GlobalHydra.instance().clear()
    try:
        hydra = Hydra.create_main_hydra2("train", create_config_search_path(str(CONF)))
        config = hydra.compose_config("train", [*overrides, "hydra.mode=MULTIRUN", f"hydra.sweep.dir={sweep_dir}"],
                                      run_mode=RunMode.MULTIRUN)
    finally:
        GlobalHydra.instance().clear()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")
    return sweep_dir / "multirun.yaml"


def test_hydra_composed_multirun_yaml_matches_a_real_one(cli_sweep, tmp_path):
    from omegaconf import OmegaConf

    from helpers import FAST

    real = OmegaConf.load(cli_sweep / "multirun.yaml")
    composed = OmegaConf.load(_hydra_multirun_yaml(tmp_path, [*FAST, "model.att_type=none,SE"]))
    assert list(composed.hydra.overrides.task) == list(real.hydra.overrides.task)
    assert composed.hydra.sweeper == real.hydra.sweeper
    assert OmegaConf.masked_copy(composed, [k for k in composed if k != "hydra"]) == OmegaConf.masked_copy(
        real, [k for k in real if k != "hydra"])


@pytest.mark.parametrize(
    "overrides,expected",
    [
        # group choice + plain keys (top-level and nested), one swept key
        (["data=synthetic", "seed=3", "name=mine", "trainer.epochs=2", "model.att_type=none,SE"],
         [("synthetic", 18, "none", 3), ("synthetic", 18, "SE", 3)]),
        # a swept group choice: the data set's name follows the option
        (["data=synthetic,digits", "model.depth=34"], [("synthetic", 34, "none", 0), ("digits", 34, "none", 0)]),
        # +key (new) and ++key (forced) sweeps
        (["+note=a,b", "++seed=1,2", "model.att_type=cbam"],
         [("cifar10", 18, "CBAM", 1), ("cifar10", 18, "CBAM", 2), ("cifar10", 18, "CBAM", 1),
          ("cifar10", 18, "CBAM", 2)]),
        (["+model.extra=1,2", "~model.stride_in_1x1", "data=synthetic"],
         [("synthetic", 18, "none", 0), ("synthetic", 18, "none", 0)]),
        # blocks x placements: a block at its own place is the block; elsewhere it is block@placement
        (["model.att_type=CBAM,BAM", "model.att_placement=residual,stage,head"],
         [("cifar10", 18, "CBAM", 0), ("cifar10", 18, "CBAM@stage", 0), ("cifar10", 18, "CBAM@head", 0),
          ("cifar10", 18, "BAM@residual", 0), ("cifar10", 18, "BAM", 0), ("cifar10", 18, "BAM@head", 0)]),
        # a block option swept: never averaged together as seeds
        (["model.att_type=SA", "++model.groups=4,8", "model.att_placement=head"],
         [("cifar10", 18, "SA(groups=4)@head", 0), ("cifar10", 18, "SA(groups=8)@head", 0)]),
        # the attention zoo: every registered block (${att_blocks:}) at every placement
        (["experiment=attention_zoo_cifar10"],
         [("cifar10", 18, name if placement == ATTENTION_BLOCKS[name].placement else f"{name}@{placement}", 0)
          for name in ATTENTION_BLOCKS for placement in ("residual", "post_add", "stage", "head")]),
        # an experiment's sweeper params, with the command line winning for model.depth
        (["experiment=attention_cifar10", "seeds=2", "model.depth=34"],
         [("cifar10", 34, att, seed) for att in ("none", "SE", "CBAM", "BAM") for seed in (0, 1)]),
    ],
)
def test_expected_jobs_of_hydra_composed_sweeps(tmp_path, overrides, expected):
    multirun_yaml = _hydra_multirun_yaml(tmp_path / "sweep", overrides)
    jobs = reporting.expected_jobs(multirun_yaml)
    assert [number for number, _ in jobs] == list(range(len(expected)))
    assert [(run.dataset, run.depth, run.att_type, run.seed) for _, run in jobs] == expected
    # No job left a results.json: every one is listed as missing, and the table still builds.
    rows = reporting.build_rows(reporting.collect_runs(tmp_path / "sweep"))
    assert sum(len(row.runs) for row in rows) == len(expected)
    for fmt in reporting.FORMATS:
        reporting.render(rows, fmt)
    assert len(reporting.problems(rows)) == len(expected)


def test_a_job_rejected_before_its_config_was_recorded_keeps_its_identity(tmp_path):
    """A job whose config fails validation writes a failed results.json with no ``config``."""
    from helpers import FAST

    sweep_dir = tmp_path / "sweep"
    _hydra_multirun_yaml(sweep_dir, [*FAST, "model.depth=18,42", "model.att_type=SE"])
    overrides = [*FAST, "model.depth=42", "model.att_type=SE"]
    for folder, number in ((sweep_dir / "1_synthetic_resnet42_SE", 1), (tmp_path / "single" / "run", None)):
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps({
            "status": "failed", "job": {"num": number, "overrides": overrides},
            "error": "ConfigError: Invalid config value model.depth=42."}))

    runs = reporting.collect_runs(sweep_dir)  # identity from the sweep's record of job 1
    assert sorted((run.status, run.dataset, run.depth, run.att_type, run.seed) for run in runs) == [
        ("failed", "synthetic", 42, "SE", 0), ("missing", "synthetic", 18, "SE", 0)]
    lines = reporting.problems(reporting.build_rows(runs))
    assert any(line.startswith("ResNet-42 + SE (synthetic, seed 0): failed") and "model.depth=42" in line
               for line in lines)

    (run,) = reporting.collect_runs(tmp_path / "single")  # no sweep record: from its own overrides
    assert (run.status, run.dataset, run.depth, run.att_type) == ("failed", "synthetic", 42, "SE")


def test_an_unreadable_multirun_yaml_does_not_hide_finished_runs(tmp_path):
    _write_results(tmp_path / "0_run", err1=20.0, err5=5.0)
    (tmp_path / "multirun.yaml").write_text("hydra: {sweeper: {params: null}}\n")  # no overrides, no config
    with pytest.warns(UserWarning, match="multirun.yaml"):
        runs = reporting.collect_runs(tmp_path)
    assert [(run.status, run.err1) for run in runs] == [("completed", 20.0)]


# ------------------------------------------------------------ hand-written results.json
def _write_results(folder, *, err1=None, err5=None, seed=0, depth=18, att_type="none", dataset="digits",
                   final=None, **extra):
    folder.mkdir(parents=True)
    results = {"status": "completed",
               "config": {"seed": seed, "model": {"depth": depth, "att_type": att_type}, "data": {"name": dataset}},
               "final": final if final is not None else {"acc1": None if err1 is None else 100 - err1,
                                                         "acc5": None if err5 is None else 100 - err5,
                                                         "err1": err1, "err5": err5},
               "params": 11_000_000, "gflops": 0.5, **extra}
    (folder / "results.json").write_text(json.dumps(results))


def test_top5_undefined_is_not_averaged_and_renders_in_every_format(tmp_path):
    # Three classes: top-5 is undefined, results.json has acc5/err5 null.
    for seed, err1 in enumerate([20.0, 30.0]):
        _write_results(tmp_path / f"{seed}_few_classes", err1=err1, err5=None, seed=seed)
    # Mixed: one seed with top-5, one without (e.g. an older results.json); the None is skipped, not a 0.
    _write_results(tmp_path / "2_mixed", err1=10.0, err5=4.0, seed=0, att_type="SE")
    _write_results(tmp_path / "3_mixed", err1=12.0, err5=None, seed=1, att_type="SE")
    # err5 absent, acc5 given: derived.
    _write_results(tmp_path / "4_derived", seed=0, att_type="CBAM", final={"acc1": 75.0, "acc5": 96.0})

    rows = {row.att_type: row for row in reporting.build_rows(reporting.collect_runs(tmp_path))}
    assert rows["none"].err("err1") == pytest.approx((25.0, 7.0710678))
    assert rows["none"].err("err5") == (None, None) and rows["none"].undefined("err5")
    assert rows["SE"].err("err5") == (4.0, None) and not rows["SE"].undefined("err5")
    assert rows["CBAM"].err("err1") == (25.0, None) and rows["CBAM"].err("err5") == pytest.approx((4.0, None))

    cells = reporting.table_cells(rows["none"])
    assert cells[4] == "25.00 ± 7.07" and cells[5] == "n/a" and cells[6] == "2" and cells[10] == "–"
    assert reporting.table_cells(rows["SE"])[5] == "4.00"

    md = reporting.render(list(rows.values()), "md")
    assert "n/a" in md and "None" not in md and "nan" not in md.lower()
    latex = reporting.render(list(rows.values()), "latex")
    assert "n/a" in latex and "None" not in latex and latex.count(r"\\") == len(rows) + 1
    records = {r["att_type"]: r for r in csv.DictReader(io.StringIO(reporting.render(list(rows.values()), "csv")))}
    assert (records["none"]["err5_mean"], records["none"]["err5_std"], records["none"]["delta_err5"]) == ("", "", "")
    assert float(records["none"]["err1_mean"]) == 25.0 and float(records["SE"]["err5_mean"]) == 4.0

    for fmt in reporting.FORMATS:
        result = run_script("scripts/paper_table.py", [str(tmp_path), "--format", fmt])
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        assert "None" not in result.stdout


def test_the_table_reports_the_test_set_final_not_final_val(tmp_path):
    _write_results(tmp_path / "0_run", err1=30.0, err5=10.0, dataset="synthetic",
                   final_val={"acc1": 95.0, "acc5": 99.0, "err1": 5.0, "err5": 1.0})
    (run,) = reporting.collect_runs(tmp_path)
    assert (run.err1, run.err5) == (30.0, 10.0)
    (row,) = reporting.build_rows([run])
    assert reporting.table_cells(row)[4:6] == ["30.00", "10.00"]


def test_placement_pivot_puts_blocks_in_rows_and_placements_in_columns():
    def run(att, seed, err1, status="completed"):
        return reporting.Run(f"r/{att}/{seed}", status, "cifar10", 18, att, seed, err1=err1, err5=1.0)

    runs = [run("none", 0, 30.0), run("none", 1, 32.0),
            run("CBAM", 0, 25.0), run("CBAM", 1, 27.0), run("CBAM@head", 0, 29.0), run("CBAM@head", 1, 29.0),
            run("CBAM@stage", 0, 20.0), run("CBAM@post_add", 0, None, status="failed"),
            run("BAM", 0, 28.0), run("BAM@residual", 0, 31.0)]
    text = reporting.placement_pivot(reporting.build_rows(runs), caption="tiny budget")
    lines = text.splitlines()
    assert lines[2] == "| Block | residual | post_add | stage | head | best |"
    none = next(line for line in lines if line.startswith("| none"))
    assert "31.00 ± 1.41 (2)" in none
    cbam = next(line for line in lines if line.startswith("| CBAM"))
    cells = [cell.strip() for cell in cbam.strip("|").split("|")]
    assert cells == ["CBAM", "26.00 ± 1.41 (2) †", "–", "**20.00** (1)", "29.00 ± 0.00 (2)", "stage"]
    bam = next(line for line in lines if line.startswith("| BAM"))
    assert "| **28.00** (1) † |" in bam and bam.rstrip().endswith("| stage |")
    assert lines.index(none) < lines.index(cbam) < lines.index(bam)
    assert "tiny budget" in text and "Runs not completed:" in text and "CBAM @ post_add" in text


# ------------------------------------------------- paired differences from the plain network
# A hand-worked example, three seeds paired (0, 1, 2). Differences are the block's top-1 accuracy
# minus the plain network's, i.e. the plain error minus the block's error:
#   CBAM: 1.9, 2.0, 2.1     mean 2.0, sd 0.1  -> half width t * 0.1 / sqrt(3) = 0.248413771...
#   SE:   1.0, 2.0, 3.0     mean 2.0, sd 1.0  -> half width t * 1.0 / sqrt(3) = 2.484137711...
#   ECA: -1.0, -1.2, -0.8   mean -1.0, sd 0.2 -> half width t * 0.2 / sqrt(3) = 0.496827542...
# with t = t_{0.975, 2} = 0.95 / sqrt(2 * 0.975 * 0.025) = 4.3026527297... (for 2 degrees of
# freedom the t quantile has the closed form (2p - 1) / sqrt(2 p (1 - p))).
T_975_DF2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)
PLAIN_ERR1 = {0: 10.0, 1: 12.0, 2: 11.0, 5: 30.0}  # seed 5: no block ran it, it pairs with nothing
BLOCK_ERR1 = {
    "CBAM": {0: 8.1, 1: 10.0, 2: 8.9, 3: 1.0},  # seed 3: the plain network never ran it
    "SE": {0: 9.0, 1: 10.0, 2: 8.0},
    "ECA": {0: 11.0, 1: 13.2, 2: 11.8},
    "BAM": {0: 5.0, 4: 5.0},  # one pair only
}


def _paired_runs() -> list:
    runs = [reporting.Run(f"r/none/{seed}", "completed", "cifar10", 18, "none", seed, err1=err1, err5=1.0)
            for seed, err1 in PLAIN_ERR1.items()]
    for att_type, errors in BLOCK_ERR1.items():
        runs += [reporting.Run(f"r/{att_type}/{seed}", "completed", "cifar10", 18, att_type, seed, err1=err1,
                               err5=1.0) for seed, err1 in errors.items()]
    return runs


def test_t_quantiles():
    assert T_975_DF2 == pytest.approx(4.302652729749462, rel=1e-12)
    assert reporting.t_quantile_975(1) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-9)  # Cauchy
    assert reporting.t_quantile_975(2) == pytest.approx(T_975_DF2, rel=1e-9)
    assert 1.959963984540054 < reporting.t_quantile_975(10_000) < 1.9603  # tends to the normal's quantile
    assert reporting.t_quantile_975(30) > reporting.t_quantile_975(31) > reporting.t_quantile_975(40) > 1.96
    with pytest.raises(ValueError):
        reporting.t_quantile_975(0)


def test_t_quantiles_equal_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in [*range(1, 31), 31, 35, 40, 60, 120, 1000]:
        assert reporting.t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df), rel=0, abs=3e-8), df


def test_paired_difference_by_hand():
    cbam = reporting.paired_difference({0: 91.9, 1: 90.0, 2: 91.1, 3: 99.0}, {0: 90.0, 1: 88.0, 2: 89.0, 5: 70.0})
    half = T_975_DF2 * 0.1 / math.sqrt(3)
    assert half == pytest.approx(0.2484137711894836)
    assert (cbam.pairs, cbam.mean, cbam.low, cbam.high) == (3, pytest.approx(2.0), pytest.approx(2.0 - half),
                                                            pytest.approx(2.0 + half))
    assert cbam.excludes_zero
    se = reporting.paired_difference({0: 91.0, 1: 90.0, 2: 92.0}, {0: 90.0, 1: 88.0, 2: 89.0})
    assert (se.mean, se.low, se.high) == (2.0, pytest.approx(2.0 - 2.484137711894836),
                                          pytest.approx(2.0 + 2.484137711894836))
    assert not se.excludes_zero  # -0.48 .. 4.48
    one_pair = reporting.paired_difference({0: 95.0, 4: 95.0}, {0: 90.0, 1: 88.0})
    assert (one_pair.pairs, one_pair.mean, one_pair.low, one_pair.high) == (1, None, None, None)
    assert not one_pair.excludes_zero
    assert reporting.paired_difference({}, {0: 90.0}).pairs == 0


def test_table_reports_each_block_against_the_plain_network_paired_by_seed():
    rows = {row.att_type: row for row in reporting.build_rows(_paired_runs())}
    assert rows["none"].vs_plain is None and rows["CBAM"].baseline is rows["none"]
    cells = {att: reporting.table_cells(row) for att, row in rows.items()}
    header = reporting.HEADER
    column, pairs = header.index("Top-1 acc vs plain (95% CI)"), header.index("Pairs")
    # Seeds 3 (CBAM only) and 5 (plain only) are left out: 3 pairs, not 4.
    assert cells["CBAM"][column] == "+2.00 [+1.75, +2.25] *" and cells["CBAM"][pairs] == "3"
    assert cells["SE"][column] == "+2.00 [-0.48, +4.48]" and cells["SE"][pairs] == "3"  # interval holds 0
    assert cells["ECA"][column] == "-1.00 [-1.50, -0.50] *"  # a loss, its interval below 0
    assert cells["BAM"][column] == "n/a" and cells["BAM"][pairs] == "1"
    assert cells["none"][column] == "–" and cells["none"][pairs] == "–"
    assert cells["CBAM"][6] == "4"  # the Seeds column still counts every completed run

    md = reporting.render(list(rows.values()), "md")
    legend = next(line for line in md.splitlines() if line.startswith("Top-1 acc vs plain:"))
    assert "paired by seed" in legend and "* the interval excludes 0" in legend and "n/a: fewer than 2" in legend
    records = {r["att_type"]: r for r in csv.DictReader(io.StringIO(reporting.render(list(rows.values()), "csv")))}
    assert float(records["CBAM"]["acc1_vs_plain"]) == pytest.approx(2.0)
    # as the Markdown table prints them, to 2 decimals
    assert float(records["CBAM"]["acc1_vs_plain_low"]) == round(2.0 - 0.2484137711894836, 2)
    assert float(records["ECA"]["acc1_vs_plain_high"]) == round(-1.0 + 0.4968275423789672, 2)
    assert (records["CBAM"]["pairs"], records["CBAM"]["acc1_vs_plain_excludes_0"]) == ("3", "True")
    assert (records["SE"]["acc1_vs_plain_excludes_0"], records["BAM"]["acc1_vs_plain"], records["BAM"]["pairs"],
            records["none"]["pairs"]) == ("False", "", "1", "")
    latex = reporting.render(list(rows.values()), "latex")
    assert "+2.00 [+1.75, +2.25] *" in latex and r"\caption{Top-1 acc vs plain" in latex


def test_paired_difference_counts_a_seed_run_twice_once_and_needs_the_same_architecture():
    runs = _paired_runs()
    # CBAM seed 0 run again (a ledger may hold both): its accuracy is the mean of 91.9 and 92.1, 92.0,
    # so the differences become 2.0, 2.0, 2.1 (mean 2.0333..., sd 0.057735...).
    runs.append(reporting.Run("r/CBAM/0-again", "completed", "cifar10", 18, "CBAM", 0, err1=7.9, err5=1.0))
    # A plain network of another depth is no baseline for ResNet-18's blocks, nor is one of another data set.
    runs += [reporting.Run("r/r34", "completed", "cifar10", 34, "SE", 0, err1=1.0),
             reporting.Run("r/c100", "completed", "cifar100", 18, "none", 0, err1=50.0)]
    rows = {(row.dataset, row.depth, row.att_type): row for row in reporting.build_rows(runs)}
    cbam = rows[("cifar10", 18, "CBAM")].vs_plain
    half = T_975_DF2 * (0.1 / math.sqrt(3)) / math.sqrt(3)  # sd of 2.0, 2.0, 2.1 is 0.1 / sqrt(3)
    assert (cbam.pairs, cbam.mean, cbam.high) == (3, pytest.approx(6.1 / 3), pytest.approx(6.1 / 3 + half))
    assert rows[("cifar10", 34, "SE")].vs_plain is None
    assert reporting.table_cells(rows[("cifar10", 34, "SE")])[-2:] == ["–", "–"]


def test_no_legend_without_a_plain_row():
    runs = [reporting.Run("r/se", "completed", "cifar10", 18, "SE", seed, err1=10.0 + seed) for seed in range(2)]
    assert "Top-1 acc vs plain:" not in reporting.render(reporting.build_rows(runs), "md")


def test_paired_column_from_results_files(tmp_path):
    for att_type, errors in {"none": PLAIN_ERR1, **BLOCK_ERR1}.items():
        for seed, err1 in errors.items():
            _write_results(tmp_path / f"{att_type}_{seed}", err1=err1, err5=1.0, seed=seed, att_type=att_type,
                           dataset="cifar10")
    result = run_script("scripts/paper_table.py", [str(tmp_path), "--format", "md"])
    assert result.returncode == 0, result.stderr
    table = _md_rows(result.stdout)
    assert table["ResNet-18 + CBAM"][-2:] == ["+2.00 [+1.75, +2.25] *", "3"]
    assert table["ResNet-18 + SE"][-2:] == ["+2.00 [-0.48, +4.48]", "3"]
    assert table["ResNet-18 + BAM"][-2:] == ["n/a", "1"]


# ------------------------------------------------- what the table says without being asked
def _cifar_runs(root, budgets=((2, 1000),), err1=29.700000000000003):
    """Plain and SE ResNet-18 on CIFAR-10, seeds 0 and 1; each seed's budget (epochs, training images) in turn."""
    from helpers import write_run_results

    for seed in (0, 1):
        epochs, train_size = budgets[seed % len(budgets)]
        for att_type in ("none", "SE"):
            config = {"seed": seed, "model": {"depth": 18, "att_type": att_type}, "data": {"name": "cifar10"},
                      "trainer": {"epochs": epochs}}
            write_run_results(root / f"{att_type}_{seed}", config, [f"model.att_type={att_type}", f"seed={seed}"],
                              err1=err1 + seed, epochs=epochs, data={"name": "cifar10", "train_size": train_size})
    return root


def test_a_paper_on_another_data_set_adds_no_rows_unless_asked(tmp_path):
    sweep = _cifar_runs(tmp_path)
    result = run_script("scripts/paper_table.py", [str(sweep), "--paper", "cbam_table4"])
    assert result.returncode == 0, result.stderr
    assert list(_md_rows(result.stdout)) == ["ResNet-18", "ResNet-18 + SE"]
    assert "imagenet" not in _md_rows(result.stdout)["ResNet-18"] and "no runs" not in result.stdout
    assert "cbam_table4" in result.stdout and "--all-rows" in result.stdout  # says why the paper is not there
    everything = run_script("scripts/paper_table.py", [str(sweep), "--paper", "cbam_table4", "--all-rows"])
    assert everything.returncode == 0, everything.stderr
    rows = [line for line in everything.stdout.splitlines() if line.startswith("| ResNet")]
    # the 12 ResNet rows of Table 4, and its 12 WideResNet and ResNeXt rows, all without runs
    assert len(rows) == 2 + 12 and everything.stdout.count("(imagenet): no runs") == 24
    # A paper of the runs' own data set keeps its rows, with or without runs.
    same = run_script("scripts/paper_table.py", [str(sweep), "--paper", "attention_cifar10"])
    assert "ResNet-18" in _md_rows(same.stdout) and _md_rows(same.stdout)["ResNet-18"][7] != "–"


def test_csv_values_are_rounded_as_in_markdown(tmp_path):
    sweep = _cifar_runs(tmp_path)
    result = run_script("scripts/paper_table.py", [str(sweep), "--format", "csv"])
    assert result.returncode == 0, result.stderr
    records = {r["att_type"]: r for r in csv.DictReader(io.StringIO(result.stdout))}
    assert records["none"]["err1_mean"] == "30.2" and records["none"]["err1_std"] == "0.71"
    for record in records.values():
        for key, value in record.items():
            decimals = value.partition(".")[2] if value.replace(".", "").replace("-", "").isdigit() else ""
            assert len(decimals) <= (3 if key == "gflops" else 2), (key, value)


def test_the_table_says_the_runs_budget(tmp_path):
    result = run_script("scripts/paper_table.py", [str(_cifar_runs(tmp_path / "same"))])
    assert result.returncode == 0, result.stderr
    assert "Runs of 2 epochs on 1,000 training images." in result.stdout.splitlines()
    mixed = run_script("scripts/paper_table.py", [str(_cifar_runs(tmp_path / "mixed", ((2, 1000), (30, 50000))))])
    budget = next(line for line in mixed.stdout.splitlines() if "training images" in line)
    assert "differ" in budget and "2 epochs on 1,000 training images (2 runs)" in budget
    assert "30 epochs on 50,000 training images (2 runs)" in budget
    for by in ("placement", "recipe"):
        pivot = run_script("scripts/paper_table.py", [str(_cifar_runs(tmp_path / by)), "--by", by])
        assert "Runs of 2 epochs on 1,000 training images." in pivot.stdout, pivot.stdout
