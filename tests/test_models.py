"""Architecture, parameter counts, MACs, init and numerics of ResidualNet."""

import math

import pytest
import torch
from torch import nn

from attn_resnet.complexity import count_params, measure
from attn_resnet.models import ATTENTION_BLOCKS, DEPTHS, ResidualNet, attention_choices, build_attention
from attn_resnet.models.attention import CBAM, PLACEMENTS, canonical_name

NETWORK_TYPES = ["ImageNet", "CIFAR10", "CIFAR100"]
ATT_TYPES = attention_choices()  # "none" + every registered block

# Exact counts of the authors' reference code (SE placed like CBAM).
REFERENCE_PARAMS = {
    ("ImageNet", 18): {"none": 11_689_512, "SE": 11_778_592, "CBAM": 11_779_392, "BAM": 11_712_503},
    ("ImageNet", 34): {"none": 21_797_672, "SE": 21_958_868, "CBAM": 21_960_468, "BAM": 21_820_663},
    ("ImageNet", 50): {"none": 25_557_032, "SE": 28_088_024, "CBAM": 28_089_624, "BAM": 25_915_099},
    ("ImageNet", 101): {"none": 44_549_160, "SE": 49_326_872, "CBAM": 49_330_172, "BAM": 44_907_227},
    ("CIFAR10", 18): {"none": 11_173_962, "CBAM": 11_263_842},
    ("CIFAR100", 50): {"BAM": 24_063_319},
}
# GMACs per 224x224 image (conv + linear) of the reference code.
REFERENCE_GMACS = {
    18: {"none": 1.8141, "CBAM": 1.8151, "BAM": 1.8192},
    34: {"none": 3.6638, "CBAM": 3.6654, "BAM": 3.6689},
    50: {"none": 4.0892, "CBAM": 4.0956, "BAM": 4.1713},
    101: {"none": 7.8014, "CBAM": 7.8126, "BAM": 7.8836},
}


def build_on_meta(*args, **kwargs):
    with torch.device("meta"):
        return ResidualNet(*args, **kwargs)


PAPER_BLOCKS = ("none", "SE", "CBAM", "BAM")


def model_grid():
    """Every (network type, depth, block), the cells that add nothing new marked slow.

    The default run builds every block into both residual-block types (depths 18 and 50) under
    both stems (ImageNet, CIFAR10), and the papers' blocks at every depth; the deeper variants
    of the other blocks (the same classes, more of them) and CIFAR100 (CIFAR10's stem with
    another head) run with ``-m slow``.
    """
    cells = []
    for network_type in NETWORK_TYPES:
        for depth in sorted(DEPTHS):
            for att_type in ATT_TYPES:
                default = network_type != "CIFAR100" and (
                    depth in (18, 50) or (network_type == "ImageNet" and att_type in PAPER_BLOCKS))
                marks = () if default else (pytest.mark.slow,)
                cells.append(pytest.param(network_type, depth, att_type, marks=marks,
                                          id=f"{network_type}-{depth}-{att_type}"))
    return cells


@pytest.mark.parametrize("network_type,depth,att_type", model_grid())
def test_forward_backward_every_combination(network_type, depth, att_type):
    torch.manual_seed(0)
    num_classes = {"ImageNet": 7, "CIFAR10": 10, "CIFAR100": 100}[network_type]
    model = ResidualNet(network_type, depth, num_classes, att_type)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    no_grad = [name for name, p in model.named_parameters() if p.grad is None]
    assert no_grad == []


@pytest.mark.parametrize(
    "network_type,depth,att_type,expected",
    [(nt, d, a, n) for (nt, d), row in REFERENCE_PARAMS.items() for a, n in row.items()],
)
def test_parameter_counts_match_reference(network_type, depth, att_type, expected):
    assert count_params(build_on_meta(network_type, depth, None, att_type)) == expected


@pytest.mark.parametrize(
    "depth,att_type,expected", [(d, a, g) for d, row in REFERENCE_GMACS.items() for a, g in row.items()]
)
def test_gmacs_match_reference_at_224(depth, att_type, expected):
    result = measure(build_on_meta("ImageNet", depth, 1000, att_type), (3, 224, 224))
    assert round(result.gflops, 4) == expected


def test_stride_in_1x1_gives_cbam_paper_flops():
    # The CBAM paper's Table 4 lists 3.858 / 7.57 GFLOPs for plain ResNet-50 / 101.
    assert round(measure(build_on_meta("ImageNet", 50, 1000, "none", stride_in_1x1=True)).gflops, 3) == 3.858
    assert round(measure(build_on_meta("ImageNet", 101, 1000, "none", stride_in_1x1=True)).gflops, 2) == 7.57
    # Moving the stride changes MACs, never parameters.
    assert count_params(build_on_meta("ImageNet", 50, 1000, "CBAM", stride_in_1x1=True)) == 28_089_624


def test_macs_scale_with_input_and_are_measured_on_real_models():
    model = ResidualNet("CIFAR10", 18, 10, "CBAM")
    small, large = measure(model, (3, 32, 32)), measure(model, (3, 64, 64))
    assert 3.9 < large.macs / small.macs < 4.01
    assert model.training  # measuring restores the mode


def test_block_placement_matches_reference_design():
    cbam = ResidualNet("ImageNet", 50, 1000, "CBAM")
    blocks = [m for m in cbam.modules() if hasattr(m, "attn")]
    assert len(blocks) == 16 and all(isinstance(b.attn, CBAM) for b in blocks)
    assert all(isinstance(m, nn.Identity) for m in cbam.stage_attn)
    assert not any(isinstance(m, nn.MaxPool2d) for m in ResidualNet("CIFAR10", 18).modules())
    bam = ResidualNet("CIFAR100", 50, 100, "BAM")
    assert [type(m).__name__ for m in bam.stage_attn] == ["BAM", "BAM", "BAM"]
    assert [m.channel_gate.fc1.in_features for m in bam.stage_attn] == [256, 512, 1024]
    assert all(isinstance(b.attn, nn.Identity) for b in bam.modules() if hasattr(b, "attn"))


def test_cbam_is_applied_before_the_shortcut_addition():
    torch.manual_seed(0)
    model = ResidualNet("CIFAR10", 18, 10, "CBAM").eval()
    block = model.layer1[0]
    seen = {}
    block.attn.register_forward_hook(lambda m, i, o: seen.update(inp=i[0].clone(), out=o.clone()))
    x = torch.randn(2, 64, 8, 8)
    y = block(x)
    branch = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))
    torch.testing.assert_close(seen["inp"], branch)
    torch.testing.assert_close(y, torch.relu(seen["out"] + x))


def test_spatial_gate_pools_max_then_mean_and_bam_product_vs_sum():
    torch.manual_seed(0)
    gate = CBAM(16).spatial_gate.eval()
    x = torch.randn(2, 16, 5, 5)
    pooled = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)
    torch.testing.assert_close(gate(x), x * torch.sigmoid(gate.bn(gate.conv(pooled))))
    bam_p = build_attention("BAM", 32, combine="product").eval()
    bam_s = build_attention("BAM", 32, combine="sum").eval()
    bam_s.load_state_dict(bam_p.state_dict())
    x = torch.randn(2, 32, 6, 9)  # not square on purpose
    mc, ms = bam_p.channel_gate(x), bam_p.spatial_gate(x)
    torch.testing.assert_close(bam_p(x), x * (1 + torch.sigmoid(mc * ms)))
    torch.testing.assert_close(bam_s(x), x * (1 + torch.sigmoid(mc + ms)))


def test_reference_init():
    torch.manual_seed(0)
    model = ResidualNet("ImageNet", 50, 1000, "CBAM")
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            assert torch.all(p == 0), name
    for module in model.modules():
        if isinstance(module, CBAM):
            assert torch.all(module.spatial_gate.bn.weight == 0)
    assert torch.all(model.layer1[0].bn1.weight == 1)
    # kaiming normal, fan_out: std = sqrt(2 / (out_channels * k * k))
    w = model.layer3[0].conv2.weight  # 256 x 256 x 3 x 3
    assert w.std().item() == pytest.approx(math.sqrt(2 / (256 * 9)), rel=0.03)
    fc = model.fc.weight  # kaiming normal, fan_in
    assert fc.std().item() == pytest.approx(math.sqrt(2 / 2048), rel=0.03)
    # Downsample convs keep PyTorch's default (kaiming uniform, a=sqrt(5)) as in the reference:
    # uniform on +-1/sqrt(fan_in), std = 1/sqrt(3 * fan_in).
    ds = model.layer3[0].downsample[0].weight  # 1024 x 512 x 1 x 1
    assert ds.std().item() == pytest.approx(1 / math.sqrt(3 * 512), rel=0.03)


def test_torchvision_init_and_zero_init_residual():
    model = ResidualNet("ImageNet", 18, 1000, "CBAM", init="torchvision", zero_init_residual=True)
    ds = model.layer3[0].downsample[0].weight  # torchvision: every conv kaiming fan_out
    assert ds.std().item() == pytest.approx(math.sqrt(2 / 256), rel=0.05)
    assert all(torch.all(b.bn2.weight == 0) for b in model.modules() if hasattr(b, "bn2") and hasattr(b, "attn"))
    assert all(torch.all(m.spatial_gate.bn.weight == 1) for m in model.modules() if isinstance(m, CBAM))


@pytest.mark.parametrize("att_type", ATT_TYPES)
def test_channels_last_matches_contiguous(att_type):
    torch.manual_seed(0)
    model = ResidualNet("CIFAR10", 18, 10, att_type).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        got = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "att_type", [a if a == "CBAM" else pytest.param(a, marks=pytest.mark.slow) for a in ATT_TYPES]
)
def test_compiled_model_matches_eager(att_type):
    torch.manual_seed(0)
    model = ResidualNet("CIFAR10", 18, 10, att_type).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        got = torch.compile(model)(x)
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3)


def test_adaptive_head_equals_fixed_pooling_and_accepts_other_sizes():
    torch.manual_seed(0)
    model = ResidualNet("ImageNet", 18, 10, "BAM").eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape[-2:] == (7, 7)
        fixed = model.fc(torch.flatten(nn.AvgPool2d(7)(features), 1))
        torch.testing.assert_close(model(x), fixed)
        assert model(torch.randn(1, 3, 96, 160)).shape == (1, 10)  # non-square works
    cifar = ResidualNet("CIFAR10", 18, 10, "CBAM").eval()
    with torch.no_grad():
        features = cifar.forward_features(torch.randn(1, 3, 32, 32))
        assert features.shape[-2:] == (4, 4)


@pytest.mark.parametrize(
    "kwargs,needle,choices",
    [
        (dict(network_type="MNIST", depth=18), "network_type 'MNIST'", "ImageNet, CIFAR10, CIFAR100"),
        (dict(network_type="ImageNet", depth=42), "depth 42", "18, 34, 50, 101"),
        (dict(network_type="ImageNet", depth=18, att_type="XYZ"), "att_type 'XYZ'", "none, SE, CBAM, BAM"),
        (dict(network_type="ImageNet", depth=18, init="xavier"), "init 'xavier'", "reference, torchvision"),
        (dict(network_type="ImageNet", depth=18, num_classes=0), "num_classes", "positive integer"),
    ],
)
def test_bad_arguments_name_value_and_choices(kwargs, needle, choices):
    with pytest.raises(ValueError) as error:
        ResidualNet(**kwargs)
    assert needle in str(error.value) and choices in str(error.value)


def test_bad_block_options():
    with pytest.raises(ValueError, match="combine"):
        ResidualNet("CIFAR10", 18, 10, "BAM", combine="mean")
    with pytest.raises(ValueError, match="kernel_size"):
        ResidualNet("CIFAR10", 18, 10, "CBAM", kernel_size=4)
    with pytest.raises(ValueError, match="reduction"):
        ResidualNet("CIFAR10", 18, 10, "SE", reduction=1000)


def test_input_too_small_or_wrong_shape():
    with pytest.raises(ValueError, match="16x16 .*at least 32"):
        ResidualNet("ImageNet", 18, 10)(torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match="at least 8"):
        ResidualNet("CIFAR10", 18, 10)(torch.randn(2, 3, 4, 32))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        ResidualNet("CIFAR10", 18, 10)(torch.randn(2, 1, 32, 32))


def test_bam_batch_of_one_in_training_gives_clear_error():
    model = ResidualNet("CIFAR10", 18, 10, "BAM")
    with pytest.raises(ValueError, match="batch size of at least 2"):
        model(torch.randn(1, 3, 32, 32))
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_att_type_is_case_insensitive_and_none_means_plain():
    assert canonical_name("cbam") == "CBAM" and canonical_name("Se") == "SE"
    assert canonical_name(None) == canonical_name("NONE") == "none"
    assert count_params(build_on_meta("CIFAR10", 18, 10, None)) == 11_173_962
    assert ResidualNet("cifar10", 18, None, "bam").fc.out_features == 10


@pytest.mark.parametrize("name", sorted(ATTENTION_BLOCKS))
def test_every_registered_block_is_shape_preserving_with_docs(name):
    block_class = ATTENTION_BLOCKS[name]
    assert block_class.placement in PLACEMENTS
    assert block_class.__doc__ and block_class.__module__
    module_doc = __import__(block_class.__module__, fromlist=["_"]).__doc__
    assert module_doc and any(str(year) in module_doc for year in range(2015, 2030))  # cites its paper
    block = build_attention(name, 64)
    x = torch.randn(2, 64, 9, 7, requires_grad=True)
    y = block(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert all(p.grad is not None for p in block.parameters())
