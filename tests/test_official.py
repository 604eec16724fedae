"""Loading the CBAM/BAM authors' checkpoints: key mapping, wrappers, clear errors, safety."""

import os
import pickle

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
