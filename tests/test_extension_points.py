"""Extension points: a placement and a block are each declared once, in the registry, and a new one
reaches validation, --help, the model, the visualiser, the zoo sweep, the complexity table and the
reports without other edits (the dataset registry has its own test, test_dataset_registry.py)."""

import sys

import pytest
import torch
from torch import nn

from attn_resnet import attention_registry
from attn_resnet.attention_registry import Placement

from helpers import CONF, REPO, compose_train

# A dummy placement in an existing slot (the one before the pooling), registered last.
LATE = Placement("head_attn", "network", "a test placement: once, before the pooling")


@pytest.fixture
def late(monkeypatch):
    monkeypatch.setitem(attention_registry.PLACEMENTS, "late", LATE)
    return "late"


def test_a_registered_placement_is_a_valid_choice(late):
    from attn_resnet.config.help import config_help
    from attn_resnet.config.validate import ConfigError, validate_train_config

    validate_train_config(compose_train(["model.att_type=CBAM", f"model.att_placement={late}"]))
    assert f"model.att_placement=residual|post_add|stage|head|{late}" in config_help("train", CONF)
    with pytest.raises(ConfigError, match=f"Valid choices: default, residual, post_add, stage, head, {late}"):
        validate_train_config(compose_train(["model.att_type=CBAM", "model.att_placement=early"]))


def test_the_model_fills_the_registered_slot_and_the_visualiser_names_it(late):
    from attn_resnet.models import ResidualNet
    from attn_resnet.visualize import AttentionRecorder, block_of

    model = ResidualNet("CIFAR10", 18, 10, "CBAM", att_placement=late).eval()
    assert [name for name, _ in model.attention_blocks()] == ["head_attn"]
    with AttentionRecorder(model) as recorder, torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    assert recorder.maps and {block_of(item.name) for item in recorder.maps} == {"head_attn"}
    assert {item.stage for item in recorder.maps} == {"head"}  # the first placement in this slot names it


def test_a_placement_whose_slot_the_network_lacks_is_refused(monkeypatch):
    from attn_resnet.models import ResidualNet
    from attn_resnet.models.attention import AttentionConfigError

    monkeypatch.setitem(attention_registry.PLACEMENTS, "inside_stem", Placement("stem_attn", "network", "nowhere"))
    with pytest.raises(AttentionConfigError, match="fills the slot 'stem_attn', which this ResNet does not have"):
        ResidualNet("CIFAR10", 18, 10, "CBAM", att_placement="inside_stem")


def test_the_zoo_sweeps_over_it(late, tmp_path):
    from omegaconf import OmegaConf

    from attn_resnet.config.resolvers import register

    register()
    config = compose_train(["experiment=attention_zoo_cifar10"], return_hydra_config=True)
    params = OmegaConf.to_container(config.hydra.sweeper.params, resolve=True)
    assert params["model.att_placement"] == f"residual,post_add,stage,head,{late}"


def test_the_complexity_table_has_its_column(late):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import block_complexity
    finally:
        sys.path.remove(str(REPO / "scripts"))
    text = block_complexity.render(18, "CIFAR10", 32)
    assert f"| Block | residual | post_add | stage | head | {late} |" in text
    se = next(line for line in text.splitlines() if line.startswith("| SE | +"))
    cells = [cell.strip() for cell in se.strip("|").split("|")]
    assert cells[4] == cells[5] != "—"  # late fills head's slot: the same cost


def test_reports_order_and_pivot_it(late):
    from attn_resnet import reporting

    def run(att, seed, err1):
        return reporting.Run(f"r/{att}/{seed}", "completed", "cifar10", 18, att, seed, err1=err1, err5=1.0)

    runs = [run("none", 0, 30.0), run(f"CBAM@{late}", 0, 24.0), run("CBAM@head", 0, 29.0), run("CBAM", 0, 25.0)]
    rows = reporting.build_rows(runs)
    assert [row.att_type for row in rows] == ["none", "CBAM", "CBAM@head", f"CBAM@{late}"]
    lines = reporting.placement_pivot(rows).splitlines()
    assert lines[2] == f"| Block | residual | post_add | stage | head | {late} | best |"
    cbam = next(line for line in lines if line.startswith("| CBAM"))
    assert [cell.strip() for cell in cbam.strip("|").split("|")][-2:] == ["**24.00** (1)", late]


class Gain(nn.Module):
    """A test block: a learned per-channel gain, sigmoid-squashed (goes on the residual branch)."""

    placement = "residual"

    def __init__(self, channels: int, start: float = 0.0) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.full((channels,), start))

    def forward(self, x):
        return x * self.gain.sigmoid()[None, :, None, None]


@pytest.fixture
def gain(monkeypatch):
    # What attn_resnet.register_block("Gain", Gain) does, undone after the test.
    monkeypatch.setitem(attention_registry.BLOCKS, "Gain", Gain)
    return "Gain"


def test_a_registered_block_is_a_choice_everywhere(gain, late):
    from omegaconf import OmegaConf

    from attn_resnet import reporting
    from attn_resnet.config.help import config_help
    from attn_resnet.config.validate import validate_train_config
    from attn_resnet.models import ResidualNet

    validate_train_config(compose_train([f"model.att_type={gain.lower()}", "model.att_placement=post_add"]))
    assert "\n  Gain" in config_help("train", CONF)
    model = ResidualNet("CIFAR10", 18, 10, gain, start=2.0, att_placement=late)
    assert [type(block) for _, block in model.attention_blocks()] == [Gain]
    assert torch.all(model.head_attn.gain == 2.0)
    config = compose_train(["experiment=attention_zoo_cifar10"], return_hydra_config=True)
    assert OmegaConf.to_container(config.hydra.sweeper.params, resolve=True)["model.att_type"].endswith(",Gain")

    def run(att, err1):
        return reporting.Run(f"r/{att}", "completed", "cifar10", 18, att, 0, err1=err1, err5=1.0)

    rows = reporting.build_rows([run(f"{gain}@{late}", 20.0), run(gain, 21.0), run("SE", 22.0), run("none", 23.0)])
    assert [row.att_type for row in rows] == ["none", "SE", gain, f"{gain}@{late}"]
