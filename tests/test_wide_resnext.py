"""Widened and grouped ResNets (the CBAM paper's WideResNet-18 and ResNeXt rows): shapes, names, stems,
torchvision's ResNeXt weights, the config keys and their errors, and resuming older checkpoints."""

from __future__ import annotations

import pytest
import torch
import torchvision
from omegaconf import OmegaConf

from attn_resnet import create_model, list_models
from attn_resnet.api import parse_model_name
from attn_resnet.build import build_model, describe_spec, model_spec
from attn_resnet.config.validate import ConfigError, validate_train_config
from attn_resnet.models import ResidualNet
from attn_resnet.models.transfer import load_pretrained

from helpers import compose_train


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def test_width_widens_every_stage_but_not_the_stem():
    with torch.device("meta"):
        model = ResidualNet("ImageNet", 18, 10, "SE", width=1.5)
    assert model.conv1.out_channels == 64  # the stem keeps its width
    assert [stage[-1].conv2.out_channels for stage in (model.layer1, model.layer2, model.layer3, model.layer4)] == [
        96, 192, 384, 768]
    assert model.layer1[0].downsample is not None  # 64 -> 96: the first block projects its shortcut
    assert model.layer1[0].downsample[0].weight.shape == (96, 64, 1, 1) and model.layer1[1].downsample is None
    assert model.layer1[0].attn.fc1.in_features == 96 and model.layer4[1].attn.fc1.in_features == 768
    assert model.fc.in_features == 768
    with torch.device("meta"):
        wide_bam = ResidualNet("CIFAR10", 50, 10, "BAM", width=2)
    assert [block.channel_gate.fc1.in_features for block in wide_bam.stage_attn] == [512, 1024, 2048]
    assert wide_bam.fc.in_features == 4096


def test_resnext_is_torchvisions_resnext():
    with torch.device("meta"):
        ours = ResidualNet("ImageNet", 50, 1000, cardinality=32, width_per_group=4)
        theirs = torchvision.models.resnext50_32x4d(weights=None)
    assert _shapes(ours) == _shapes(theirs)
    assert ours.layer1[0].conv2.groups == 32 and ours.layer1[0].conv2.out_channels == 128
    assert ours.layer4[0].conv2.stride == (2, 2)  # the stride on the 3x3 conv, as torchvision's


@pytest.fixture(scope="module")
def torchvision_resnext(tmp_path_factory):
    """torchvision's resnext50_32x4d with random weights and BatchNorm statistics, and its file."""
    torch.manual_seed(0)
    model = torchvision.models.resnext50_32x4d(weights=None).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):  # non-trivial, so that a misplaced tensor shows
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
    path = tmp_path_factory.mktemp("tv") / "resnext50_32x4d.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_torchvision_resnext50_weights_give_torchvisions_logits(torchvision_resnext):
    reference, path = torchvision_resnext
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = reference(images)
    model = create_model("resnext50_32x4d", num_classes=1000, pretrained=path).eval()
    assert model.transfer_report.format == "torchvision" and not model.transfer_report.new
    with torch.no_grad():
        torch.testing.assert_close(model(images), expected, rtol=0, atol=1e-5)
    # model=resnext50_32x4d model.init_from=<file>: the network of the config, loaded as a run loads it
    cfg = compose_train(["model=resnext50_32x4d", "data=imagenet"])
    validate_train_config(cfg)
    network = build_model(model_spec(OmegaConf.to_container(cfg.model), "imagenet", 1000))
    report = load_pretrained(network, path)
    assert not report.new and report.head == "fc: loaded"
    with torch.no_grad():
        torch.testing.assert_close(network.eval()(images), expected, rtol=0, atol=1e-5)


def test_a_resnext_cbam_takes_torchvisions_trunk_and_keeps_its_attention(torchvision_resnext):
    _, path = torchvision_resnext
    model = create_model("resnext50_32x4d_cbam", num_classes=7, pretrained=path)
    report = model.transfer_report
    assert report.head == "fc: 1000 -> 7 classes, new"
    assert all(".attn." in key or key.startswith("fc.") for key in report.new)
    assert model.layer2[0].attn.channel_gate.mlp[0].in_features == 512


@pytest.mark.parametrize("name,size", [("cifar_resnext50_32x4d_cbam", 8), ("resnext50_32x4d_se", 32),
                                       ("cifar_wide_resnet18_1.5_bam", 8), ("wide_resnet18_2_cbam", 32)])
def test_both_stems_train(name, size):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5).train()
    loss = torch.nn.functional.cross_entropy(model(torch.randn(2, 3, size, size)), torch.tensor([0, 3]))
    loss.backward()
    assert model.conv1.kernel_size == ((3, 3) if name.startswith("cifar_") else (7, 7))
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_model_names():
    names = list_models()
    for name in ("resnext50_32x4d_cbam", "resnext101_32x4d", "cifar_wide_resnet18_1.5_se", "wide_resnet18_2_cbam",
                 "resnet50_cbam"):
        assert name in names
    assert len(names) == len(set(names))
    assert parse_model_name("resnext101_32x4d_cbam") == {
        "network_type": "ImageNet", "depth": 101, "cardinality": 32, "width_per_group": 4, "att_type": "CBAM"}
    assert parse_model_name("cifar_wide_resnet18_1.5") == {"network_type": "CIFAR10", "depth": 18, "width": 1.5,
                                                           "att_type": "none"}
    with pytest.raises(ValueError, match="Did you mean resnext50_32x4d_cbam"):
        create_model("resnext50_32x4d_cbma")
    # an option given beside the name wins over the name's
    with torch.device("meta"):
        assert create_model("resnext50_32x4d", width_per_group=8).layer1[0].conv2.out_channels == 256


@pytest.mark.parametrize("kwargs,needle", [
    (dict(depth=18, cardinality=32, width_per_group=4), "built of BasicBlocks, which take neither"),
    (dict(depth=34, width_per_group=128), "built of BasicBlocks"),
    (dict(depth=50, width=1.1), "width=1.1 gives the first stage 70.4 channels"),
    (dict(depth=50, width=0), "must be a positive number"),
    (dict(depth=50, cardinality=0), "cardinality=0 is not valid"),
    (dict(depth=101, width_per_group=2.5), "width_per_group=2.5 is not valid"),
])
def test_bad_shapes_are_refused(kwargs, needle):
    depth = kwargs.pop("depth")
    with pytest.raises(ValueError, match=needle):
        ResidualNet("CIFAR10", depth, 10, **kwargs)
    with pytest.raises(ConfigError) as error:
        validate_train_config(compose_train([f"model.depth={depth}", *(f"model.{k}={v}" for k, v in kwargs.items())]))
    message = str(error.value)
    assert needle in message and f"model.depth={depth}" in message and "\n" not in message


def test_the_spec_records_the_shape_and_describes_the_network():
    cfg = compose_train(["model=wide_resnet18_1.5", "model.att_type=SE"])
    spec = model_spec(OmegaConf.to_container(cfg.model), "cifar", 100)
    assert (spec["width"], spec["cardinality"], spec["width_per_group"]) == (1.5, 1, 64)
    assert describe_spec(spec) == "WideResNet-18 (widen 1.5) + SE (CIFAR100 stem, 100 classes)"
    assert build_model(spec).layer4[0].conv1.out_channels == 768
    older = {key: value for key, value in spec.items() if key not in ("width", "cardinality", "width_per_group")}
    assert build_model(older).layer4[0].conv1.out_channels == 512  # a checkpoint of an earlier release
    resnext = model_spec(OmegaConf.to_container(compose_train(["model=resnext50_32x4d"]).model), "imagenet", 1000)
    assert describe_spec(resnext) == "ResNeXt-50 (32x4d) (ImageNet stem, 1000 classes)"


def test_older_checkpoints_without_the_shape_keys_stay_resumable():
    from attn_resnet.config.resume import trajectory_changes

    current = OmegaConf.to_container(compose_train([]), resolve=False)
    saved = {**current, "model": {key: value for key, value in current["model"].items()
                                  if key not in ("width", "cardinality", "width_per_group")}}
    assert trajectory_changes(saved, current) == {}
    widened = OmegaConf.to_container(compose_train(["model.width=2"]), resolve=False)
    assert trajectory_changes(saved, widened) == {"model.width": (1.0, 2)}
