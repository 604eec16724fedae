"""Bring your own block: a package made here, outside the repository, adds a block, a callback, a dataset and an
optimizer through the same registries as the built-in ones (import path, entry point, register_*), and they
work through the real entry points: train.py, evaluate.py, predict.py, sweeps, paper_table.py, the complexity
table, --help; a broken contract, a missing module, a bad option and a checkpoint whose package is gone are each
named in one paragraph."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from attn_resnet.engine.checkpoint import load_training_checkpoint

from helpers import REPO, kill_mid_epoch

def _readme_example_block() -> str:
    """The block of the README's section "Bring your own block", as the user copies it."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Bring your own block"):]
    code = section[section.index("# mygates/mygates/attention.py\n"):]
    return textwrap.indent(code[:code.index("```")].strip(), " " * 8)


README_BLOCK = _readme_example_block()
PACKAGE = {
    "mygates/__init__.py": '"""A researcher\'s own attention blocks, callbacks, data and optimizer."""\n',
    # The README's example block ("Bring your own block"), then blocks that break the contract.
    "mygates/attention.py": README_BLOCK + '''


        class Untapped(nn.Module):
            """A channel gain with no AttentionMap tap."""

            placement = "residual"

            def __init__(self, channels: int) -> None:
                super().__init__()
                self.gain = nn.Parameter(torch.zeros(channels))

            def forward(self, x):
                return x * self.gain.sigmoid()[None, :, None, None]


        class Shrinks(nn.Module):
            """Breaks the contract: halves the resolution."""

            placement = "residual"

            def __init__(self, channels: int) -> None:
                super().__init__()

            def forward(self, x):
                return x[:, :, ::2, ::2]


        class NoChannels(nn.Module):
            """Breaks the contract: its constructor does not take channels first."""

            placement = "residual"

            def __init__(self, width: int = 4) -> None:
                super().__init__()

            def forward(self, x):
                return x


        class Nowhere(nn.Module):
            """Breaks the contract: a placement that does not exist."""

            placement = "inside_the_stem"

            def __init__(self, channels: int) -> None:
                super().__init__()

            def forward(self, x):
                return x
        ''',
    "mygates/callbacks.py": '''
        from attn_resnet import Callback


        class StepLog(Callback):
            """Counts optimizer steps from ``start`` and keeps the lr of each: state a resume must restore."""

            def __init__(self, start: int = 0) -> None:
                self.steps = start
                self.lrs = []

            def on_optimizer_step(self, trainer):
                self.steps += 1
                self.lrs.append(trainer.optimizer.param_groups[0]["lr"])

            def state_dict(self):
                return {"steps": self.steps, "lrs": list(self.lrs)}

            def load_state_dict(self, state):
                if state is not None:
                    self.steps, self.lrs = state["steps"], list(state["lrs"])
        ''',
    "mygates/optim.py": '''
        import torch


        class HalfSGD(torch.optim.SGD):
            """SGD whose every step is scaled by ``factor``: an optimizer of one's own."""

            def __init__(self, params, lr: float = 0.1, momentum: float = 0.0, weight_decay: float = 0.0,
                         factor: float = 0.5) -> None:
                super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
                self.factor = factor

            @torch.no_grad()
            def step(self, closure=None):
                for group in self.param_groups:
                    for p in group["params"]:
                        if p.grad is not None:
                            p.grad.mul_(self.factor)
                return super().step(closure)
        ''',
    "mygates/data.py": '''
        from dataclasses import replace

        import torch

        from attn_resnet.data import Splits
        from attn_resnet.data.common import TensorImageDataset, data_info, normalization
        from attn_resnet.dataset_registry import DatasetEntry


        def build(*, size: int = 32, num_classes: int = 3, mean=None, std=None) -> Splits:
            """Class-coloured 8x8 images."""
            mean, std = normalization("shades", mean, std)
            generator = torch.Generator().manual_seed(0)
            labels = torch.arange(size) % num_classes
            colours = torch.linspace(30, 220, num_classes).round().to(torch.uint8)
            noise = torch.randint(0, 20, (size, 3, 8, 8), generator=generator, dtype=torch.uint8)
            images = colours[labels].view(-1, 1, 1, 1).expand(-1, 3, 8, 8) + noise
            classes = [f"shade_{k}" for k in range(num_classes)]
            train_set = TensorImageDataset(images, labels, classes, mean, std, train=True, pad=1, flip=True)
            test_set = TensorImageDataset(images, labels, classes, mean, std, train=False)
            return Splits(train_set, None, test_set, data_info("shades", test_set, (8, 8), train_set))


        def build_eval(*, size: int = 32, num_classes: int = 3, mean=None, std=None):
            splits = build(size=size, num_classes=num_classes, mean=mean, std=std)
            return splits.test, replace(splits.info, train_size=None)


        SHADES = DatasetEntry("mygates.data:build", "mygates.data:build_eval", stem="cifar", mean=(0.5,) * 3,
                              std=(0.25,) * 3)
        ''',
    "mygates/conf/data/shades.yaml": '''
        # Class-coloured 8x8 images from the mygates package.
        name: shades
        stem: cifar
        network_type: null
        size: 32
        num_classes: 3
        mean: null
        std: null
        loader: auto
        batch_size: 8
        val_batch_size: 16
        num_workers: 0
        pin_memory: false
        persistent_workers: false
        ''',
    "mygates/conf/optim/half_sgd.yaml": '''
        # SGD at half steps, from the mygates package.
        name: half_sgd
        lr: 0.05
        weight_decay: 0.0
        momentum: 0.0
        factor: 0.5
        exempt_bn_and_bias: false
        reference_batch_size: null
        layer_decay: null
        head_lr_scale: 1.0
        ''',
    "mygates/conf/experiment/mygate_shades.yaml": '''
        # @package _global_
        # MyGate on the shades data set, trained with HalfSGD.
        defaults:
          - override /data: shades
          - override /optim: half_sgd
        model:
          att_type: MyGate
        ''',
    "mygates-0.1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: mygates\nVersion: 0.1.0\n",
    "mygates-0.1.0.dist-info/top_level.txt": "mygates\n",
    "mygates-0.1.0.dist-info/entry_points.txt": '''
        [attn_resnet.blocks]
        MyGate = mygates.attention:MyGate

        [attn_resnet.datasets]
        shades = mygates.data:SHADES

        [attn_resnet.optimizers]
        half_sgd = mygates.optim:HalfSGD
        ''',
}

# A small, fast training run on the digits data set.
DIGITS = ["experiment=digits", "trainer.epochs=1", "trainer.limit_train_batches=3", "trainer.progress=false",
          "trainer.deterministic=true", "data.batch_size=32"]
SHADES_RUN = ["trainer.epochs=2", "trainer.progress=false", "trainer.deterministic=true",
              "trainer.checkpoint_every_steps=1"]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A folder holding the user's package ``mygates`` as pip installs one (its code and its dist-info, with the
    entry points), outside the repository; put on PYTHONPATH it is an installed package."""
    root = tmp_path_factory.mktemp("site")
    for name, text in PACKAGE.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


@pytest.fixture
def installed(site, monkeypatch):
    """The package importable and its entry points visible in this process too."""
    monkeypatch.syspath_prepend(str(site))
    yield site
    for name in [name for name in sys.modules if name == "mygates" or name.startswith("mygates.")]:
        del sys.modules[name]


def read_results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def run(site: Path | None, args: list[str], cwd: Path = REPO, timeout: float = 300) -> subprocess.CompletedProcess:
    """A command in a new process, with the user's package installed (``site`` on PYTHONPATH) or not (None)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    env.pop("PYTHONPATH", None)
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _png_images(folder: Path, count: int = 4) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(1)
    paths = []
    for index in range(count):
        pixels = torch.randint(0, 256, (16, 16, 3), generator=generator, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"image_{index}.png")
        paths.append(folder / f"image_{index}.png")
    return paths


# ---------------------------------------------------------------- through the entry points
def test_a_block_by_import_path_trains_evaluates_and_predicts_in_new_processes(site, tmp_path):
    run_dir = tmp_path / "run"
    trained = run(site, ["train.py", *DIGITS, "model.att_type=mygates.attention:MyGate", "model.reduction=4",
                         f"hydra.run.dir={run_dir}"])
    assert trained.returncode == 0, trained.stderr[-3000:]
    results = read_results(run_dir)
    source = {"target": "mygates.attention:MyGate", "origin": "path", "package": "mygates", "version": "0.1.0"}
    assert results["model"]["att_type"] == "mygates.attention:MyGate" and results["model"]["reduction"] == 4
    assert results["model"]["att_source"] == source
    checkpoint = load_training_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert checkpoint["model_spec"]["att_source"] == source
    assert sum("spatial_map" not in key and ".attn." in key for key in checkpoint["model"]) == 8 * 4  # 2 convs x 8

    evaluated = run(site, ["evaluate.py", f"checkpoint={run_dir / 'checkpoints' / 'last.pt'}",
                           f"hydra.run.dir={tmp_path / 'eval'}"])
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["acc1"] == results["final"]["acc1"]

    images = _png_images(tmp_path / "images")
    output = tmp_path / "predictions.json"
    predicted = run(site, ["scripts/predict.py", str(run_dir / "checkpoints" / "last.pt"), *map(str, images),
                           "--topk", "1", "--output", str(output)])
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    from attn_resnet.api import load_checkpoint
    from attn_resnet.predict import predict, serialise

    sys.path.insert(0, str(site))
    try:  # the same predictions in this process, where the block is imported by the API
        model, info = load_checkpoint(run_dir / "checkpoints" / "last.pt")
        expected = serialise(predict(model, info, images, topk=1), ".json")
        # Fine-tuning's loader (model.init_from, create_model(pretrained=)) reads the block's tensors back.
        import attn_resnet

        tuned = attn_resnet.create_model("cifar_resnet18", num_classes=10, att_type="mygates.attention:MyGate",
                                         reduction=4, pretrained=run_dir / "checkpoints" / "last.pt")
        weights = tuned.state_dict()
        assert all(torch.equal(weights[key], value) for key, value in checkpoint["model"].items())
    finally:
        sys.path.remove(str(site))
        for name in [name for name in sys.modules if name.startswith("mygates")]:
            del sys.modules[name]
    assert output.read_text() == expected and len(json.loads(expected)) == len(images)

    # The visualiser draws the block's map, which passes through the public AttentionMap tap.
    drawn = run(site, ["scripts/visualize_attention.py", str(run_dir / "checkpoints" / "last.pt"), str(images[0]),
                       "--no-gradcam", "--output", str(tmp_path / "figures")])
    assert drawn.returncode == 0, drawn.stderr[-2000:]
    assert (tmp_path / "figures" / "image_0_attention.png").is_file() and "note:" not in drawn.stderr

    # Without the package: one paragraph naming the module and the package (and version) to install.
    for command in (["evaluate.py", f"checkpoint={run_dir / 'checkpoints' / 'last.pt'}",
                     f"hydra.run.dir={tmp_path / 'eval_missing'}"],
                    ["scripts/predict.py", str(run_dir / "checkpoints" / "last.pt"), str(images[0])],
                    ["scripts/visualize_attention.py", str(run_dir / "checkpoints" / "last.pt"), str(images[0]),
                     "--output", str(tmp_path / "figures_missing")]):
        missing = run(None, command)
        said = missing.stdout + missing.stderr  # Hydra's log goes to stdout, the scripts' errors to stderr
        assert missing.returncode != 0
        assert "lives in the module 'mygates.attention'" in said, said[-2000:]
        assert "pip install mygates==0.1.0" in said and "Traceback" not in said


def test_entry_points_bring_a_block_dataset_optimizer_and_a_configured_callback_that_survives_sigkill(site,
                                                                                                      tmp_path):
    """An experiment from the user's config folder (hydra.searchpath) trains MyGate (entry point) on the shades
    data set (entry point) with HalfSGD (entry point) and a configured callback whose state comes back exactly
    after the run is killed with SIGKILL mid-epoch."""
    args = ["hydra.searchpath=[pkg://mygates.conf]", "experiment=mygate_shades", *SHADES_RUN,
            "+callbacks.steps._target_=mygates.callbacks.StepLog", "+callbacks.steps.start=100"]
    reference = run(site, ["train.py", *args, f"hydra.run.dir={tmp_path / 'ref'}"])
    assert reference.returncode == 0, reference.stderr[-3000:]
    results = read_results(tmp_path / "ref")
    assert results["model"]["att_type"] == "MyGate"
    assert results["model"]["att_source"] == {"target": "mygates.attention:MyGate", "origin": "entry point",
                                              "package": "mygates", "version": "0.1.0"}
    assert results["data"]["name"] == "shades" and results["config"]["optim"]["name"] == "half_sgd"
    steps_per_epoch = 32 // 8
    state = load_training_checkpoint(tmp_path / "ref" / "checkpoints" / "last.pt")["callbacks"]["steps"]
    assert state["steps"] == 100 + 2 * steps_per_epoch and len(state["lrs"]) == 2 * steps_per_epoch

    run_dir = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(site), "HYDRA_FULL_ERROR": "0"}
    process = subprocess.Popen([sys.executable, "train.py", *args, f"hydra.run.dir={run_dir}"], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run_dir / "checkpoints" / "last.pt"
    killed_at = kill_mid_epoch(process, run_dir, epoch=1, batch=1)["callbacks"]["steps"]
    assert killed_at["steps"] < state["steps"]
    resumed = run(site, ["train.py", *args, f"hydra.run.dir={run_dir}"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert load_training_checkpoint(last)["callbacks"]["steps"] == state  # the same count and lr list, exactly
    assert read_results(run_dir)["final"] == results["final"]


def test_a_joblib_sweep_runs_the_outside_block_beside_none_and_the_tables_include_it(site, tmp_path):
    sweep = tmp_path / "sweep"
    result = run(site, ["train.py", "--multirun", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *DIGITS,
                        "trainer.limit_val_batches=2", "model.att_type=none,mygates.attention:MyGate",
                        "model.att_placement=default,head", f"hydra.sweep.dir={sweep}"], timeout=600)
    assert result.returncode != 0  # none@head is refused; the other three jobs run
    outcomes = {(r["config"]["model"]["att_type"], r["config"]["model"]["att_placement"]): r["status"]
                for r in map(lambda p: json.loads(p.read_text()), sweep.glob("*/results.json"))}
    assert outcomes == {("none", "default"): "completed", ("none", "head"): "failed",
                        ("mygates.attention:MyGate", "default"): "completed",
                        ("mygates.attention:MyGate", "head"): "completed"}, result.stderr[-3000:]
    assert "joblib" in (sweep / "multirun.yaml").read_text()

    table = run(site, ["scripts/paper_table.py", str(sweep), "--by-placement"])
    assert table.returncode == 0, table.stderr[-2000:]
    row = next(line for line in table.stdout.splitlines() if line.startswith("| mygates.attention:MyGate"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] != "—" and cells[4] != "—"  # its runs at residual (its own place) and head are in the table
    plain = run(site, ["scripts/paper_table.py", str(sweep)])
    assert "| ResNet-18 + mygates.attention:MyGate | digits |" in plain.stdout
    assert "| ResNet-18 + mygates.attention:MyGate @ head | digits |" in plain.stdout


TINY = ["data=synthetic", "data.image_size=8", "data.train_size=32", "data.val_size=16", "data.batch_size=8",
        "trainer.epochs=1", "trainer.device=cpu", "trainer.progress=false"]


def _launch(site: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    from helpers import launch_env

    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**launch_env(), "PYTHONPATH": str(site)})


def test_submitit_jobs_build_the_entry_point_block(site, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    result = _launch(site, ["--multirun", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                            "model.att_type=none,MyGate", *TINY, f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = [json.loads(path.read_text()) for path in sorted((tmp_path / "sweep").glob("*/results.json"))]
    assert [(run["status"], run["model"]["att_type"]) for run in runs] == [("completed", "none"),
                                                                            ("completed", "MyGate")]
    assert runs[1]["model"]["att_source"]["package"] == "mygates"
    assert runs[1]["params"] > runs[0]["params"]  # the gate's convolutions were built


def test_optuna_trials_build_the_import_path_block(site, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    result = _launch(site, ["hparams_search=optuna_lr_wd", "hydra.sweeper.n_trials=2", *TINY,
                            "data.val_split=10", "model.att_type=mygates.attention:MyGate",
                            'hydra.sweeper.params={optim.lr:"choice(0.05,0.1)",optim.weight_decay:"choice(0.0005)",'
                            'trainer.label_smoothing:"choice(0.0)"}', "hydra.sweeper.sampler.seed=1",
                            f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = [json.loads(path.read_text()) for path in sorted((tmp_path / "sweep").glob("*/results.json"))]
    assert len(runs) == 2 and all(run["status"] == "completed" for run in runs)
    assert {run["model"]["att_source"]["target"] for run in runs} == {"mygates.attention:MyGate"}


def test_help_lists_entry_point_blocks_with_their_package_and_the_complexity_table_counts_them(site, tmp_path):
    helped = run(site, ["train.py", "--help"])
    assert helped.returncode == 0
    line = next(line for line in helped.stdout.splitlines() if line.strip().startswith("MyGate"))
    assert "[from mygates 0.1.0: mygates.attention:MyGate]" in line and "options: reduction=8" in line
    table = run(site, ["scripts/block_complexity.py", "--depth", "18", "--network", "CIFAR10", "--size", "32",
                       "--block", "mygates.attention:Untapped", "--output", "-"])
    assert table.returncode == 0, table.stderr[-2000:]
    mine = next(line for line in table.stdout.splitlines() if line.startswith("| MyGate |"))
    assert "| residual |" in mine
    # 2 blocks per stage of ResNet-18, each two 1x1 convs with biases: c -> c/8 (c*c/8 + c/8), c/8 -> 1 (c/8 + 1)
    added = sum(2 * (c * (c // 8) + c // 8 + c // 8 + 1) for c in (64, 128, 256, 512)) / 1e6
    assert f"| {added:.3f} |" in mine
    assert any(line.startswith("| mygates.attention:Untapped |") for line in table.stdout.splitlines())


# ---------------------------------------------------------------- errors, each named
@pytest.mark.parametrize("block, rule", [
    ("mygates.attention:Shrinks", "it changed the output shape, (2, 64, 8, 8) in and (2, 64, 4, 4) out"),
    ("mygates.attention:NoChannels", "must take the number of channels first"),
    ("mygates.attention:Nowhere", "'placement' (where it goes by default) must be one of residual, post_add"),
])
def test_a_block_that_breaks_the_contract_is_refused_before_any_run_folder(site, tmp_path, block, rule):
    result = run(site, ["train.py", *DIGITS, f"model.att_type={block}", f"hydra.run.dir={tmp_path / 'run'}"])
    assert result.returncode == 1
    assert "breaks the block contract" in result.stderr and rule in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def test_a_missing_module_a_bad_option_and_a_bad_callback_are_refused_at_once(site, tmp_path):
    started = time.perf_counter()
    missing = run(site, ["train.py", "model.att_type=mygatez.attention:MyGate", f"hydra.run.dir={tmp_path / 'a'}"])
    assert missing.returncode == 1 and "the module 'mygatez.attention'" in missing.stderr
    assert "cannot be imported here" in missing.stderr and "Traceback" not in missing.stderr
    assert "import torch" not in missing.stderr and not (tmp_path / "a").exists()
    assert time.perf_counter() - started < 60  # refused before torch: see docs/results/config_errors.md

    option = run(site, ["train.py", "model.att_type=MyGate", "model.reductoin=4", f"hydra.run.dir={tmp_path / 'b'}"])
    assert option.returncode == 1 and "Did you mean model.reduction?" in option.stderr, option.stderr[-2000:]

    callback = run(site, ["train.py", *DIGITS, "+callbacks.log._target_=mygates.callbacks.StepLogg",
                          f"hydra.run.dir={tmp_path / 'c'}"])
    assert callback.returncode == 1 and "has no 'StepLogg'" in callback.stderr, callback.stderr[-2000:]
    arguments = run(site, ["train.py", *DIGITS, "+callbacks.log._target_=mygates.callbacks.StepLog",
                           "+callbacks.log.stat=3", f"hydra.run.dir={tmp_path / 'd'}"])
    assert arguments.returncode == 1 and "does not take these arguments" in arguments.stderr
    assert "callbacks.log.stat=3" in arguments.stderr
    assert not any((tmp_path / name).exists() for name in "bcd")


# ---------------------------------------------------------------- the Python API
def test_register_block_create_model_and_a_class_as_att_type(installed):
    import attn_resnet
    from attn_resnet.attention_registry import BLOCKS
    from attn_resnet.models import ResidualNet
    from attn_resnet.models.attention import AttentionConfigError
    from attn_resnet.registry import RegistryError
    from mygates.attention import MyGate, Shrinks

    model = attn_resnet.create_model("cifar_resnet18", num_classes=3, att_type=MyGate, reduction=4)
    assert model.att_type == "mygates.attention:MyGate"
    assert [type(block) for _, block in model.attention_blocks()] == [MyGate] * 8
    assert model.layer1[0].attn.reduce.out_channels == 16
    with pytest.raises(ValueError, match="names two blocks"):
        attn_resnet.create_model("cifar_resnet18_cbam", att_type=MyGate)
    with pytest.raises(AttentionConfigError, match="changed the output shape"):
        ResidualNet("CIFAR10", 18, 10, Shrinks)
    try:
        attn_resnet.register_block("Gate2", MyGate)
        assert ResidualNet("CIFAR10", 18, 10, "gate2").att_type == "Gate2"  # names match in any case
        with pytest.raises(RegistryError, match="The attention block name 'Gate2' is taken"):
            attn_resnet.register_block("gate2", Shrinks)
    finally:
        BLOCKS.unregister("Gate2")


def test_an_outside_dataset_must_be_a_dataset_entry(installed):
    from attn_resnet import dataset_registry
    from attn_resnet.registry import RegistryError

    assert dataset_registry.entry("shades").stem == "cifar"  # the entry point
    assert dataset_registry.entry("mygates.data:SHADES").mean == (0.5,) * 3  # the import path
    with pytest.raises(RegistryError, match="is a function, not a DatasetEntry"):
        dataset_registry.entry("mygates.data:build")


# ---------------------------------------------------------------- the installable tool
def test_the_wheel_carries_the_configs_and_attn_resnet_train_runs_from_an_empty_folder(tmp_path):
    import shutil
    import zipfile

    source = tmp_path / "source"  # a copy, so that the build's own folders stay out of the checkout
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "outputs", "multirun", "runs", "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    # Where this environment cannot build a wheel itself, pip builds in an isolated one (fetching setuptools).
    isolation = ["--no-build-isolation"] if _can_build_wheels() else []
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation,
                            "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("attn_resnet-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(name.removeprefix("attn_resnet/conf/") for name in names if name.startswith("attn_resnet/conf/"))
    assert shipped == sorted(str(path.relative_to(REPO / "conf")) for path in (REPO / "conf").rglob("*.yaml"))
    assert "attn_resnet/py.typed" in names and any(name.endswith("/LICENSE") for name in names)
    assert any("entry_points.txt" in name and "attn-resnet = attn_resnet.commands:main"
               in zipfile.ZipFile(wheel).read(name).decode() for name in names)

    target = tmp_path / "installed"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                                str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-2000:]
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "HYDRA_FULL_ERROR": "0"}
    where = subprocess.run([sys.executable, "-c", "import attn_resnet; print(attn_resnet.__file__)"], cwd=empty,
                           env=env, capture_output=True, text=True)
    assert where.stdout.strip() == str(target / "attn_resnet" / "__init__.py")  # the wheel's copy, not the checkout
    result = subprocess.run([str(target / "bin" / "attn-resnet"), "train", "experiment=digits", "trainer.epochs=1",
                             "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.progress=false"],
                            cwd=empty, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((empty / "outputs" / "digits_resnet18_none").glob("*/results.json"))
    assert len(runs) == 1 and read_results(runs[0].parent)["status"] == "completed"
    assert (runs[0].parent / "train.log").is_file()  # the job is named "train", as under python train.py
    hydra = (runs[0].parent / ".hydra" / "hydra.yaml").read_text()
    assert str(target / "attn_resnet" / "conf") in hydra  # composed from the wheel's configs
    assert sorted(path.name for path in empty.iterdir()) == ["outputs"]


def _can_build_wheels() -> bool:
    """Whether this environment's setuptools builds wheels: 70.1 and later do, earlier ones need ``wheel``."""
    import importlib.metadata
    import importlib.util

    try:
        version = tuple(int(part) for part in importlib.metadata.version("setuptools").split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False
    return version >= (70, 1) or (version >= (64, 0) and importlib.util.find_spec("wheel") is not None)


def test_the_visualiser_says_when_a_block_has_no_attention_map_tap(installed, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from attn_resnet.app import train
    from attn_resnet.commands import visualize

    from helpers import FAST, compose_train

    train(compose_train([*FAST, "model.att_type=mygates.attention:Untapped"]), tmp_path / "run")
    image = _png_images(tmp_path / "images", count=1)[0]
    assert visualize.main([str(tmp_path / "run" / "checkpoints" / "last.pt"), str(image), "--no-gradcam",
                           "--output", str(tmp_path / "figures")]) == 0
    said = capsys.readouterr().err
    assert "its block mygates.attention:Untapped has no AttentionMap tap" in said
    assert (tmp_path / "figures" / "image_0_attention.png").is_file()  # the input alone is still drawn
