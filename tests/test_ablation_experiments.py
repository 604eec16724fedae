"""The ablation experiments (CBAM Tables 1-4, BAM's axes): each sweeps exactly the rows of its published table,
trains, and its sweep's table prints each measured row beside its published one; the complexity table."""

from __future__ import annotations

import json
import shutil

import pytest
from omegaconf import OmegaConf

from attn_resnet import reporting
from attn_resnet.reporting.aggregate import published_key
from attn_resnet.reporting.runs import _attention_identity, network_identity

from helpers import REPO, compose_train, run_script, write_imagefolder
from test_data import make_cifar100
from test_paper_table import _hydra_multirun_yaml

# experiment -> the published table its runs sit beside
EXPERIMENTS = {
    "cbam_ablation_channel": "cbam_table1",
    "cbam_ablation_spatial": "cbam_table2",
    "cbam_ablation_arrangement": "cbam_table3",
    "cbam_ablation_channel_cifar100": "cbam_table1",
    "cbam_ablation_spatial_cifar100": "cbam_table2",
    "cbam_ablation_arrangement_cifar100": "cbam_table3",
    "cbam_table4_wide_resnext": "cbam_table4",
    "bam_ablation_cifar100": "bam_ablation_cifar100",
}


def _jobs(experiment: str) -> list[list[str]]:
    overrides = [f"experiment={experiment}"]
    config = compose_train(overrides, return_hydra_config=True)
    config.hydra.overrides.task = overrides
    return reporting.sweep_jobs(config)


def _model_key(model) -> tuple:
    """A composed job's (depth, network, attention), as a table keys its runs."""
    model = OmegaConf.to_container(model)
    return (model["depth"], network_identity(model),
            _attention_identity(model["att_type"], model.get("att_placement"), model))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_each_experiment_sweeps_the_rows_of_its_published_table(experiment):
    paper = reporting.paper_table(EXPERIMENTS[experiment])
    configs = [compose_train(job) for job in _jobs(experiment)]
    assert configs[0].paper_table == EXPERIMENTS[experiment]
    assert {config.data.name for config in configs} == {
        "cifar100" if experiment.endswith("cifar100") else paper["dataset"]}
    swept = [_model_key(config.model) for config in configs]
    published = [published_key(paper, row)[1:] for row in paper["rows"]]
    if experiment == "cbam_table4_wide_resnext":  # the 12 rows beside the ResNets of experiment=cbam_imagenet
        published = [key for key in published if key[1] is not None]
    assert sorted(swept, key=str) == sorted(published, key=str)  # one job per row, and every row has a job


def test_every_command_line_of_the_page_and_the_experiments_passes_the_check():
    import re
    import shlex

    from attn_resnet.config.command_line import check_overrides

    from helpers import CONF

    texts = [(REPO / "docs" / "ablations.md").read_text(),
             *((CONF / "experiment" / f"{name}.yaml").read_text() for name in EXPERIMENTS)]
    checked = 0
    for text in texts:
        for match in re.finditer(r"python train\.py([^\n`|]*)", text.replace("\\\n", " ")):
            args = [arg for arg in shlex.split(match.group(1).split("#")[0])
                    if not arg.startswith(("<", "[")) and "..." not in arg]  # placeholders of the prose
            check_overrides(["train.py", *args], "train", CONF)
            checked += 1
    assert checked >= 8 + 8


@pytest.fixture(scope="module")
def tiny_data(module_tmp):
    """A tiny ImageNet-layout tree (3 classes) and a tiny CIFAR-100."""
    root = module_tmp("data")
    write_imagefolder(root / "imagenet", classes=3, per_class=4, size=40)
    make_cifar100(root, train_size=12, test_size=6)
    return root


def _tiny(experiment: str, root) -> list[str]:
    # CIFAR's 32x32 images resized to 16x16 and the ImageNet tree cropped to 32x32, small for either stem. At
    # 8x8, two steps leave ResNet-50's BatchNorm statistics such that its evaluation overflows (NaN).
    data = ([f"data.root={root}", "data.image_size=16"] if experiment.endswith("cifar100")
            else [f"data.root={root / 'imagenet'}", "data.image_size=32"])
    # lr 0.01 rather than the recipes' 0.1 on batches of 4, for the same reason: the runs check the wiring.
    return [*data, "data.batch_size=4", "data.val_batch_size=6", "data.num_workers=0", "data.loader=workers",
            "optim.lr=0.01", "trainer.epochs=1", "trainer.limit_train_batches=2", "trainer.progress=false"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_each_experiment_composes_and_trains_two_steps(experiment, tiny_data, tmp_path):
    """The last row of each sweep (an ablation variant, or ResNeXt-101 + CBAM) on tiny data, for two steps."""
    from attn_resnet.app import train

    job = [override for override in _jobs(experiment)[-1] if not override.startswith("seed=")]
    config = compose_train([*job, *_tiny(experiment, tiny_data)], return_hydra_config=True)
    choices = {key: value for key, value in OmegaConf.to_container(config.hydra.runtime.choices).items()
               if value is not None}
    task = OmegaConf.masked_copy(config, [key for key in config if key != "hydra"])
    train(task, tmp_path / "run", group_choices=choices)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "completed" and results["global_step"] == 2
    model = OmegaConf.to_container(task.model)
    assert {key: results["model"][key] for key in model if key in results["model"]} == {
        key: value for key, value in model.items() if key in results["model"]}  # the row's options were built


# --------------------------------------------------------- a real sweep, its table beside the paper's
@pytest.fixture(scope="module")
def spatial_sweep(module_tmp, tiny_data):
    """``train.py -m experiment=cbam_ablation_spatial`` on the tiny ImageNet tree: Table 2's six rows."""
    sweep_dir = module_tmp("spatial_sweep")
    result = run_script("train.py", ["--multirun", "experiment=cbam_ablation_spatial",
                                     *_tiny("cbam_ablation_spatial", tiny_data), f"hydra.sweep.dir={sweep_dir}"],
                        timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir


def _rows(text: str) -> dict[str, list[str]]:
    return {cells[0]: cells for cells in (line.strip("| ").split(" | ") for line in text.splitlines()
                                          if line.startswith("| ResNet-50"))}


def test_the_spatial_ablation_sweep_prints_each_row_beside_its_published_row(spatial_sweep):
    result = run_script("scripts/paper_table.py", [str(spatial_sweep), "--paper", "cbam_table2"])
    assert result.returncode == 0, result.stderr
    rows = _rows(result.stdout)
    published = {"ResNet-50 + SE": "23.14", "ResNet-50 + CBAM(spatial=none)": "22.80",
                 "ResNet-50 + CBAM(kernel_size=3, spatial=conv)": "22.96", "ResNet-50 + CBAM(spatial=conv)": "22.90",
                 "ResNet-50 + CBAM(kernel_size=3)": "22.68", "ResNet-50 + CBAM": "22.66"}
    assert set(rows) == set(published)
    for label, cells in rows.items():
        assert cells[6] == "1", label  # one measured run in the row ...
        assert float(cells[4]) >= 0 and cells[7] == published[label], label  # ... beside its published error
        assert cells[8] != "–"  # and the difference between them
    assert "Runs not completed" not in result.stdout
    # Without --paper: the table the experiment names (paper_table: cbam_table2).
    named = run_script("scripts/paper_table.py", [str(spatial_sweep)])
    assert named.returncode == 0 and _rows(named.stdout) == rows and "--paper cbam_table2" in named.stdout


def test_a_missing_job_of_an_ablation_sweep_keeps_its_row(spatial_sweep, tmp_path):
    copy = tmp_path / "sweep"
    shutil.copytree(spatial_sweep, copy)
    folder = next(path.parent for path in copy.glob("*/results.json")
                  if json.loads(path.read_text())["model"].get("spatial") == "conv"
                  and json.loads(path.read_text())["model"].get("kernel_size") == 3)
    shutil.rmtree(folder)
    runs = reporting.collect_runs(copy)
    (missing,) = [run for run in runs if run.status == "missing"]
    assert (missing.dataset, missing.depth, missing.att_type) == ("imagenet", 50, "CBAM(kernel_size=3, spatial=conv)")
    lines = reporting.problems(reporting.build_rows(runs, reporting.paper_table("cbam_table2")))
    assert lines == [line for line in lines if "CBAM(kernel_size=3, spatial=conv) (imagenet, seed 0): missing" in line]


def test_the_missing_jobs_of_the_table4_sweep_keep_their_networks(tmp_path):
    multirun_yaml = _hydra_multirun_yaml(tmp_path / "sweep", ["experiment=cbam_table4_wide_resnext"])
    jobs = [run for _, run in reporting.expected_jobs(multirun_yaml)]
    paper = reporting.paper_table("cbam_table4")
    assert sorted((run.dataset, run.depth, run.network, run.att_type) for run in jobs) == sorted(
        published_key(paper, row) for row in paper["rows"] if published_key(paper, row)[2] is not None)


# --------------------------------------------------------- the complexity table
@pytest.fixture(scope="module")
def complexity():
    """The measured rows of CBAM Tables 1, 2 and 4 (models built on the meta device)."""
    return {name: reporting.complexity_rows(reporting.paper_table(name))
            for name in ("cbam_table1", "cbam_table2", "cbam_table4")}


def test_the_committed_complexity_table_is_what_the_counter_prints(complexity):
    text = (REPO / "docs" / "results" / "cbam_ablations_complexity.md").read_text()
    for name, rows in complexity.items():
        assert all(row.accounted_for for row in rows), name
        for row in rows:
            assert f"| {' | '.join(reporting.complexity_cells(row))} |" in text, (name, row.label)
        for note in reporting.complexity_notes(rows):
            assert note in text


def test_sizes_of_tables_2_and_4_are_reproduced_or_explained(complexity, capsys):
    from attn_resnet.commands.table import main

    for name in ("cbam_table2", "cbam_table4"):
        for row in complexity[name]:
            reproduced = row.printed("params_m", row.params_m) == row.paper["params_m"] and \
                row.printed("gflops", row.gflops) == row.paper["gflops"]
            assert reproduced == row.matches
            assert reproduced or row.paper.get("size_note"), row.label
    assert sum(not row.matches for row in complexity["cbam_table4"]) == 0
    table2 = {row.label: row for row in complexity["cbam_table2"]}
    assert [label for label, row in table2.items() if not row.matches] == [
        "ResNet-50 + CBAM(spatial=none)", "ResNet-50 + CBAM(kernel_size=3, spatial=conv)"]
    # the counts the notes give for the two rows not reproduced
    channel, conv3 = table2["ResNet-50 + CBAM(spatial=none)"], table2["ResNet-50 + CBAM(kernel_size=3, spatial=conv)"]
    assert channel.printed("gflops", channel.gflops) == "3.863" and conv3.printed("gflops", conv3.gflops) == "3.869"
    assert conv3.printed("params_m", conv3.params_m) == "28.10"
    table1 = complexity["cbam_table1"]
    assert [row.match_text.split(";")[0] for row in table1] == ["yes", "no", "no", "NO (reason below)"]
    assert all(f"{row.params_m:.2f}" == "28.09" for row in table1[1:])  # Tables 2 and 4's size, not Table 1's 25.92
    assert main(["--complexity-only", "--paper", "cbam_table2"]) == 0
    assert "We count 3.869 GFLOPs" in capsys.readouterr().out
