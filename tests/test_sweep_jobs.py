"""A sweep's job list, rebuilt on Hydra's public override API, equals the one Hydra's basic sweeper launches.

``reporting.sweeps.sweep_combinations`` re-implements ``BasicSweeper.split_arguments`` (a private
class of Hydra) with the public methods of parsed overrides. These tests pin the two together:
same jobs, same order, same spelling. They import the private class on purpose, as the reference.
"""

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf

from attn_resnet.reporting.sweeps import sweep_combinations, sweep_jobs

from helpers import CONF, compose_train


def basic_sweeper_jobs(overrides, max_batch_size=None) -> list[list[str]]:
    """The jobs Hydra's basic sweeper launches for ``overrides``, its batches joined."""
    return [job for batch in BasicSweeper.split_arguments(overrides, max_batch_size) for job in batch]


SWEEPS = [
    [],  # no override: one job with none
    ["model.depth=18"],
    # choice sweeps, and the Cartesian product's order (the last key varies fastest)
    ["model.att_type=none,SE,CBAM", "model.depth=18,34", "seed=0"],
    ["seed=choice(0,1,2)", "model.att_type=choice(SE,CBAM)"],
    ["model.att_type=sort(SE,CBAM,BAM)", "seed=sort(2,0,1,reverse=true)"],
    # ranges: integer, with a step, and floats (spelt as Hydra spells them)
    ["seed=range(0,3)", "model.depth=range(18,60,16)"],
    ["optim.lr=range(0.1,0.4,0.1)", "seed=range(3)"],
    # params + command line: the later override of a key replaces the earlier one, in the earlier one's place
    ["model.att_type=none,SE", "seed=range(0,2)", "model.depth=18", "model.att_type=CBAM,BAM", "model.depth=34"],
    ["seed=range(0,2)", "seed=5"],
    # quoted and escaped values, lists, dicts, a sweep over lists
    ["model.att_type='SE','CBAM'", "name='a,b'", 'note="x y"', r"tag=a\,b", r"tag2='it\'s'"],
    ["sched.milestones=[1,2]", "+extra={a:1,b:[2,3]}", "sched.milestones=[1,2],[3,4]"],
    ["name=", "note=''", "+x=null", "+y=1e-4", "+z=true,false"],
    # config-group choices, a package, new (+), forced (++) and deleted (~) keys
    ["data=cifar10,synthetic", "model.att_type=SE"],
    ["experiment=cifar10_fast,attention_cifar10", "+experiment=x", "data@foo=cifar10,synthetic"],
    ["+note=a,b", "++seed=1,2", "~model.stride_in_1x1", "~model.zero_init_residual=true", "+model.extra=1"],
    ["hydra.sweep.dir=somewhere", "model.att_type=SE,CBAM"],
]


@pytest.mark.parametrize("arguments", SWEEPS, ids=lambda arguments: " ".join(arguments) or "(none)")
def test_sweep_combinations_equal_the_basic_sweepers_jobs(arguments):
    overrides = OverridesParser.create().parse_overrides(arguments)
    expected = basic_sweeper_jobs(overrides)
    assert sweep_combinations(overrides) == expected
    assert basic_sweeper_jobs(overrides, max_batch_size=2) == expected  # batches only cut the same list


@pytest.mark.parametrize("arguments", [["data=glob(*)"], ["data=glob(*,exclude=synthetic)", "seed=0,1"],
                                       ["optim=glob([s*,a*])", "sched=glob(*,exclude=[step,cosine])"],
                                       ["model.att_type=glob(*)"]])
def test_glob_sweeps_equal_the_basic_sweepers_jobs(arguments):
    """``glob`` lists a config group's options, so it needs Hydra's config loader."""
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
        overrides = parser.parse_overrides(arguments)
        expected = basic_sweeper_jobs(overrides)
        assert sweep_combinations(overrides) == expected
    if arguments[0].startswith("data="):  # the options of conf/data/, one job each (times the seeds)
        data_sets = {job[0] for job in expected}
        assert {"data=cifar10", "data=digits"} <= data_sets
        assert ("data=synthetic" in data_sets) == ("exclude=synthetic" not in arguments[0])


def test_a_glob_sweep_without_a_config_loader_fails_as_in_hydra():
    """A multirun.yaml of a ``glob`` sweep cannot be rebuilt without Hydra's config loader, as before."""
    overrides = OverridesParser.create().parse_overrides(["data=glob(*)"])
    with pytest.raises(HydraException, match="ConfigLoader is not set"):
        basic_sweeper_jobs(overrides)
    with pytest.raises(HydraException, match="ConfigLoader is not set"):
        sweep_combinations(overrides)


def test_an_interval_sweep_is_refused_with_hydras_message():
    overrides = OverridesParser.create().parse_overrides(["optim.lr=interval(0.01,0.1)"])
    with pytest.raises(HydraException) as hydra_error:
        basic_sweeper_jobs(overrides)
    with pytest.raises(HydraException) as our_error:
        sweep_combinations(overrides)
    assert str(our_error.value) == str(hydra_error.value)


@pytest.mark.parametrize("experiment", sorted(path.stem for path in (CONF / "experiment").glob("*.yaml")))
def test_sweep_jobs_of_every_experiment_with_the_command_line_overlapping(experiment):
    """``hydra.sweeper.params`` then the command line, which wins for a key given in both."""
    task = [f"experiment={experiment}", "++seeds=2", "model.depth=34", "seed=7,8", "data.batch_size=16"]
    config = compose_train([f"experiment={experiment}", "++seeds=2"], return_hydra_config=True)
    config.hydra.overrides.task = task
    params = OmegaConf.to_container(config.hydra.sweeper.params, resolve=True) if config.hydra.sweeper.params else {}
    arguments = [f"{key}={value}" for key, value in params.items()] + task
    expected = basic_sweeper_jobs(OverridesParser.create().parse_overrides(arguments))
    assert sweep_jobs(config) == expected
    assert all("seed=7" in job or "seed=8" in job for job in expected) and len(expected) % 2 == 0
