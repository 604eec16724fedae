"""Loading the CBAM/BAM authors' checkpoints: key mapping, wrappers, clear errors, safety."""

import os
import pickle
import re

import pytest
import torch

from attn_resnet.models import ResidualNet
from attn_resnet.models.official import CheckpointError, load_official, official_to_ours

from conftest import read_reference_keys
from helpers import ours_to_official

CASES = [
    ("official_keys_CIFAR10_resnet18_CBAM.txt", ("CIFAR10", 18, 10, "CBAM")),
    ("official_keys_ImageNet_resnet50_CBAM.txt", ("ImageNet", 50, 1000, "CBAM")),
    ("official_keys_ImageNet_resnet50_BAM.txt", ("ImageNet", 50, 1000, "BAM")),
]


# The authors' module -> ours, written out by hand for every module family (a module of the stem or the
# head, or a module kind repeated in each block or BAM stage) of each released layout; each tensor of a
# module keeps its own name (weight, bias, running_mean, ...). Written out rather than derived from the
# mapping under test: a map that swaps two modules of one shape (BAM's two dilated convolutions, or their
# BatchNorms) still loads every tensor, so only pairs fixed here tell it from the right one.
TRUNK_PAIRS = [("conv1", "conv1"), ("bn1", "bn1"), ("fc", "fc"), ("layer1.0.conv1", "layer1.0.conv1"),
               ("layer1.0.bn1", "layer1.0.bn1"), ("layer2.1.conv2", "layer2.1.conv2"), ("layer2.1.bn2", "layer2.1.bn2")]
BOTTLENECK_PAIRS = [("layer1.0.downsample.0", "layer1.0.downsample.0"),
                    ("layer1.0.downsample.1", "layer1.0.downsample.1"),
                    ("layer4.2.conv3", "layer4.2.conv3"), ("layer4.2.bn3", "layer4.2.bn3")]
CBAM_PAIRS = [("layer3.1.cbam.ChannelGate.mlp.1", "layer3.1.attn.channel_gate.mlp.0"),
              ("layer3.1.cbam.ChannelGate.mlp.3", "layer3.1.attn.channel_gate.mlp.2"),
              ("layer4.0.cbam.SpatialGate.spatial.conv", "layer4.0.attn.spatial_gate.conv"),
              ("layer4.0.cbam.SpatialGate.spatial.bn", "layer4.0.attn.spatial_gate.bn")]
BAM_PAIRS = [("bam1.channel_att.gate_c.gate_c_fc_0", "stage_attn.0.channel_gate.fc1"),
             ("bam1.channel_att.gate_c.gate_c_bn_1", "stage_attn.0.channel_gate.bn"),
             ("bam1.channel_att.gate_c.gate_c_fc_final", "stage_attn.0.channel_gate.fc2"),
             ("bam2.spatial_att.gate_s.gate_s_conv_reduce0", "stage_attn.1.spatial_gate.conv_reduce"),
             ("bam2.spatial_att.gate_s.gate_s_bn_reduce0", "stage_attn.1.spatial_gate.bn_reduce"),
             ("bam3.spatial_att.gate_s.gate_s_conv_di_0", "stage_attn.2.spatial_gate.conv_dilated.0"),
             ("bam3.spatial_att.gate_s.gate_s_bn_di_0", "stage_attn.2.spatial_gate.bn_dilated.0"),
             ("bam3.spatial_att.gate_s.gate_s_conv_di_1", "stage_attn.2.spatial_gate.conv_dilated.1"),
             ("bam3.spatial_att.gate_s.gate_s_bn_di_1", "stage_attn.2.spatial_gate.bn_dilated.1"),
             ("bam1.spatial_att.gate_s.gate_s_conv_final", "stage_attn.0.spatial_gate.conv_final")]
KEY_PAIRS = {
    "official_keys_CIFAR10_resnet18_CBAM.txt": TRUNK_PAIRS + CBAM_PAIRS + [
        ("layer2.0.downsample.0", "layer2.0.downsample.0"), ("layer2.0.downsample.1", "layer2.0.downsample.1")],
    "official_keys_ImageNet_resnet50_CBAM.txt": TRUNK_PAIRS + BOTTLENECK_PAIRS + CBAM_PAIRS,
    "official_keys_ImageNet_resnet50_BAM.txt": TRUNK_PAIRS + BOTTLENECK_PAIRS + BAM_PAIRS,
}


def _module_family(module: str) -> str:
    """``module`` with the block and BAM stage numbers left out: ``layer*.*.bn1``, ``bam*.spatial_att...``."""
    return re.sub(r"^bam\d\.", "bam*.", re.sub(r"^layer\d+\.\d+\.", "layer*.*.", module))


def official_state_dict(key_file, seed=0):
    """A state_dict in the authors' key names and shapes, filled with random values."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in read_reference_keys(key_file).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        else:
            state[key] = torch.randn(shape, generator=generator)
    return state


@pytest.mark.parametrize("key_file,args", CASES)
def test_key_mapping_is_a_bijection_with_matching_shapes(key_file, args):
    reference = read_reference_keys(key_file)
    with torch.device("meta"):
        ours = ResidualNet(*args).state_dict()
    assert {official_to_ours(k) for k in reference} == set(ours)
    assert all(tuple(ours[official_to_ours(k)].shape) == shape for k, shape in reference.items())
    assert {ours_to_official(k) for k in ours} == set(reference)


@pytest.mark.parametrize("key_file", KEY_PAIRS)
def test_every_module_family_maps_to_the_module_written_here(key_file):
    keys = list(read_reference_keys(key_file))
    pairs = KEY_PAIRS[key_file]
    assert {_module_family(official) for official, _ in pairs} == {_module_family(key.rsplit(".", 1)[0])
                                                                   for key in keys}
    for official, ours in pairs:
        tensors = [key for key in keys if key.startswith(official + ".")]
        assert tensors, official
        for key in tensors:
            assert official_to_ours(f"module.{key}") == ours + key[len(official):]


@pytest.mark.parametrize("key_file,args", CASES)
def test_reference_init_follows_the_authors_rule_on_their_names(key_file, args):
    # The authors initialise by key name over *their* state_dict. Apply that rule to the
    # official name of each of our parameters and check our initialised values obey it.
    def expected_init(official):
        leaf = official.rsplit(".", 1)[-1]
        if official == "fc.weight":
            return "kaiming_fan_in"
        if leaf == "bias":
            return "zero"
        if "conv" in official:
            return "kaiming_fan_out"
        if "bn" in official:
            return "zero" if "SpatialGate" in official else "one"
        return "pytorch_default"

    torch.manual_seed(0)
    model = ResidualNet(*args)
    checked = set()
    for key, param in model.named_parameters():
        rule = expected_init(ours_to_official(key))
        checked.add(rule)
        if rule == "zero":
            assert torch.all(param == 0), key
        elif rule == "one":
            assert torch.all(param == 1), key
        elif param.dim() >= 2 and param.numel() >= 2000:
            fan_out, fan_in = param.shape[0] * param[0, 0].numel(), param[0].numel()
            std = {
                "kaiming_fan_out": (2 / fan_out) ** 0.5,
                "kaiming_fan_in": (2 / fan_in) ** 0.5,
                "pytorch_default": (1 / (3 * fan_in)) ** 0.5,  # kaiming_uniform(a=sqrt(5))
            }[rule]
            assert param.std().item() == pytest.approx(std, rel=0.15), (key, rule)
    assert {"zero", "one", "kaiming_fan_out", "kaiming_fan_in", "pytorch_default"} <= checked


@pytest.mark.parametrize("wrap", ["train_imagenet", "bare_prefixed", "bare"])
def test_round_trip_from_file(tmp_path, wrap):
    key_file, args = CASES[0]
    state = official_state_dict(key_file)
    if wrap == "train_imagenet":
        payload = {
            "epoch": 100,
            "arch": "resnet",
            "state_dict": {f"module.{k}": v for k, v in state.items()},
            "best_prec1": torch.tensor(77.6),
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.001, "momentum": 0.9, "params": [0, 1]}]},
        }
    elif wrap == "bare_prefixed":
        payload = {f"module.{k}": v for k, v in state.items()}
    else:
        payload = state
    path = tmp_path / "checkpoint.pth.tar"
    torch.save(payload, path)
    model = load_official(ResidualNet(*args), path)
    ours = model.state_dict()
    for key, value in state.items():
        torch.testing.assert_close(ours[official_to_ours(key)], value)
    # and the loaded model runs
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_loaded_object_accepted_too():
    key_file, args = CASES[2]
    state = official_state_dict(key_file)
    model = load_official(ResidualNet(*args), {"state_dict": state})
    expected = state["bam2.channel_att.gate_c.gate_c_fc_0.weight"]
    torch.testing.assert_close(model.stage_attn[1].channel_gate.fc1.weight, expected)
    # The two dilated convolutions (and their BatchNorms) have one shape: only the order tells them apart.
    for stage, attention in enumerate(model.stage_attn):
        for index, (conv, bn) in enumerate(zip(attention.spatial_gate.conv_dilated, attention.spatial_gate.bn_dilated)):
            official = f"bam{stage + 1}.spatial_att.gate_s.gate_s_"
            assert torch.equal(conv.weight, state[f"{official}conv_di_{index}.weight"])
            assert torch.equal(bn.running_mean, state[f"{official}bn_di_{index}.running_mean"])
            assert torch.equal(bn.weight, state[f"{official}bn_di_{index}.weight"])


@pytest.mark.parametrize(
    "key_file,model_args,found,wanted",
    [
        (CASES[1][0], ("ImageNet", 50, 1000, "BAM"), "att_type=CBAM", "att_type=BAM"),
        (CASES[1][0], ("ImageNet", 101, 1000, "CBAM"), "depth 50", "depth 101"),
        (CASES[0][0], ("CIFAR10", 18, 100, "CBAM"), "10 classes", "100 classes"),
        (CASES[0][0], ("ImageNet", 18, 10, "CBAM"), "CIFAR stem", "ImageNet stem"),
    ],
)
def test_wrong_checkpoint_says_what_it_looks_like(key_file, model_args, found, wanted):
    with pytest.raises(CheckpointError) as error:
        load_official(ResidualNet(*model_args), official_state_dict(key_file))
    message = str(error.value)
    assert "looks like" in message
    before, after = message.split("but the model is")
    assert found in before and wanted in after
    assert len(message) < 1000  # a sentence, not a dump of 400 keys


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_foreign_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth.tar"
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": {"conv1.weight": torch.zeros(1)}, "payload": Exploit()}, handle)
    with pytest.raises(CheckpointError, match="could run arbitrary code") as error:
        load_official(ResidualNet("CIFAR10", 18, 10, "CBAM"), path)
    assert f"{os.system.__module__}.system" in str(error.value)
    assert "weights_only=False" not in str(error.value)
    assert not marker.exists()


def test_corrupt_and_missing_files(tmp_path):
    key_file, args = CASES[0]
    path = tmp_path / "ckpt.pt"
    torch.save(official_state_dict(key_file), path)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: 1000])
    with pytest.raises(CheckpointError, match="corrupt or\\s+truncated"):
        load_official(ResidualNet(*args), truncated)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_official(ResidualNet(*args), tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="not a state_dict"):
        load_official(ResidualNet(*args), [1, 2, 3])
