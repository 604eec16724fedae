"""Generic tests over every registered attention block and every placement it takes.

Nothing here names a block: a block added to the registry is tested by these without edits.
"""

import inspect

import pytest
import torch
from torch import nn

from attn_resnet import attention_registry
from attn_resnet.models import ResidualNet
from attn_resnet.models.attention import (ATTENTION_BLOCKS, PLACEMENTS, AttentionConfigError, AttentionMap,
                                          block_options, block_placements, build_attention, resolve_placement)

BLOCKS = sorted(ATTENTION_BLOCKS)
WIDTHS = (64, 128, 256, 512, 1024, 2048)  # every ResNet stage width, basic and bottleneck


def block_and_placements():
    return [(name, placement) for name in BLOCKS for placement in block_placements(name)]


@pytest.mark.parametrize("name", BLOCKS)
def test_block_declares_its_place_options_and_paper(name):
    block = ATTENTION_BLOCKS[name]
    assert block.placement in PLACEMENTS and block.placement in block_placements(name)
    assert set(block_placements(name)) <= set(PLACEMENTS)
    module_doc = inspect.getmodule(block).__doc__
    assert module_doc and any(str(year) in module_doc for year in range(2015, 2030)), "cite the paper"
    assert block.__doc__
    signature = list(inspect.signature(block).parameters)
    assert signature[0] == "channels"
    assert all(value is not inspect.Parameter.empty for value in block_options(name).values()), "defaults"


@pytest.mark.parametrize("name", BLOCKS)
@pytest.mark.parametrize("channels", WIDTHS)
def test_block_keeps_shape_at_every_stage_width(name, channels):
    torch.manual_seed(0)
    block = build_attention(name, channels)
    for size in ((2, 1), (5, 3)):
        x = torch.randn(2, channels, *size)
        assert block(x).shape == x.shape


@pytest.mark.parametrize("name", BLOCKS)
def test_block_gradients_reach_every_parameter_and_the_input(name):
    torch.manual_seed(0)
    block = build_attention(name, 64)
    x = torch.randn(3, 64, 9, 7, requires_grad=True)
    block(x).square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, param in block.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), pname


@pytest.mark.parametrize("name", BLOCKS)
def test_block_gives_the_same_numbers_in_channels_last(name):
    torch.manual_seed(0)
    block = build_attention(name, 64).eval()
    x = torch.randn(2, 64, 8, 6)
    expected = block(x)
    out = block(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", BLOCKS)
def test_block_runs_in_bf16_autocast(name):
    torch.manual_seed(0)
    block = build_attention(name, 64)
    x = torch.randn(2, 64, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = block(x)
    assert out.shape == x.shape and torch.isfinite(out.float()).all()


@pytest.mark.parametrize("name", BLOCKS)
def test_block_taps_its_attention_maps(name):
    torch.manual_seed(0)
    block = build_attention(name, 64).eval()
    taps = [m for m in block.modules() if isinstance(m, AttentionMap)]
    assert taps, f"{name} passes no attention weights through an AttentionMap"
    seen = []
    for tap in taps:
        tap.register_forward_hook(lambda module, inputs, output: seen.append((module.kind, output)))
    x = torch.randn(2, 64, 6, 5)
    block(x)
    assert len(seen) >= len(taps)
    for kind, value in seen:
        assert value.shape[0] == 2 and torch.isfinite(value).all()
        if kind == "channel":
            assert value.shape[1] == 64 and value[0].numel() == 64
        else:  # spatial: broadcastable over (N, C', H, W)
            assert value.dim() == 4 and value.shape[-2] in (1, 6) and value.shape[-1] in (1, 5)


@pytest.mark.parametrize("name,placement", block_and_placements())
def test_every_placement_of_every_block_trains_a_step(name, placement):
    torch.manual_seed(0)
    model = ResidualNet("CIFAR10", 18, 10, name, att_placement=placement, init="torchvision")
    assert model.att_placement == placement and model.attention_blocks()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for _, b in model.attention_blocks() for p in b.parameters()]
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    after = [p for _, b in model.attention_blocks() for p in b.parameters()]
    assert len(before) == len(after) and (not before or any(not torch.equal(a, b) for a, b in zip(after, before)))


def test_placements_put_the_block_in_the_right_slots():
    expected = {"residual": ".attn", "post_add": ".post_attn", "stage": "stage_attn.", "head": "head_attn"}
    name = next(n for n in BLOCKS if set(block_placements(n)) == set(PLACEMENTS))
    for placement, marker in expected.items():
        model = ResidualNet("CIFAR10", 18, 10, name, att_placement=placement)
        names = [n for n, _ in model.attention_blocks()]
        assert names and all(marker in n or n.startswith(marker) for n in names)
        assert len(names) == {"residual": 8, "post_add": 8, "stage": 3, "head": 1}[placement]


def test_default_placement_is_the_blocks_own():
    for name in BLOCKS:
        assert resolve_placement(name, "default") == ATTENTION_BLOCKS[name].placement


def test_invalid_placements_fail_with_a_clear_message():
    with pytest.raises(AttentionConfigError, match="att_type=none places nothing"):
        ResidualNet("CIFAR10", 18, 10, "none", att_placement="head")
    with pytest.raises(AttentionConfigError, match="Unknown att_placement 'middle'"):
        ResidualNet("CIFAR10", 18, 10, BLOCKS[0], att_placement="middle")
    restricted = [n for n in BLOCKS if set(block_placements(n)) != set(PLACEMENTS)]
    for name in restricted:
        bad = next(p for p in PLACEMENTS if p not in block_placements(name))
        with pytest.raises(AttentionConfigError, match=f"cannot go at att_placement={bad}: it goes at"):
            ResidualNet("CIFAR10", 18, 10, name, att_placement=bad)


@pytest.mark.parametrize("name", BLOCKS)
def test_an_option_the_block_does_not_take_names_those_it_does(name):
    with pytest.raises(AttentionConfigError) as error:
        build_attention(name, 64, not_an_option=3)
    message = str(error.value)
    assert f"att_type={name}" in message and "not_an_option" in message
    assert all(option in message for option in block_options(name))
    with pytest.raises(AttentionConfigError, match="not_an_option"):
        ResidualNet("CIFAR10", 18, 10, name, not_an_option=3)


def other_value(block: type, option: str, default):
    """A valid value of ``option`` other than its default, read from the block's own declarations:
    another entry of the module's tuple of choices for a string (the first the block accepts: two
    tuples may share a default, as CBAM's poolings and spatial descriptors share "avgmax"), the
    reverse for a tuple, a smaller (or, when small, larger) integer, the opposite flag, or the
    annotated type's for None."""
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default // 2 if default > 2 else default + 1
    if isinstance(default, tuple):
        assert default[::-1] != default, f"{block.__name__}.{option}: a symmetric tuple default"
        return default[::-1]
    if isinstance(default, str):
        module = inspect.getmodule(block)
        for choices in (value for value in vars(module).values()
                        if isinstance(value, tuple) and default in value and len(value) > 1):
            for choice in (choice for choice in choices if choice != default):
                try:
                    block(64, **{option: choice})
                except ValueError:
                    continue
                return choice
        raise AssertionError(f"{block.__name__}.{option}: no tuple of choices holds another valid value")
    if default is None:
        annotation = str(inspect.signature(block).parameters[option].annotation)
        assert "int" in annotation, f"{block.__name__}.{option}: no way to pick a value for {annotation}"
        return 5
    raise AssertionError(f"{block.__name__}.{option}: no rule for a default of type {type(default).__name__}")


def randomised(model: nn.Module) -> nn.Module:
    """``model`` in eval mode with every parameter and BN statistic drawn at random (seed 1), so no
    zero-initialised layer hides a difference."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                values = torch.rand(tensor.shape, generator=generator) + 0.5 if "running_var" in name else \
                    torch.randn(tensor.shape, generator=generator) * 0.2
                tensor.copy_(values)
    return model.eval()


@pytest.mark.parametrize("name", BLOCKS)
def test_options_reach_the_block(name):
    # Each option set to a value other than its default must change the network: its weights'
    # shapes, or (same shapes, same weights) its output.
    options = block_options(name)
    if not options:
        pytest.skip(f"{name} takes no options")
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    reference = randomised(ResidualNet("CIFAR10", 18, 10, name))
    with torch.no_grad():
        expected = reference(images)
    for option, default in options.items():
        value = other_value(ATTENTION_BLOCKS[name], option, default)
        changed = ResidualNet("CIFAR10", 18, 10, name, **{option: value}).eval()
        shapes = {key: tensor.shape for key, tensor in changed.state_dict().items()}
        if shapes != {key: tensor.shape for key, tensor in reference.state_dict().items()}:
            continue  # the option reached the block: it built other layers
        changed.load_state_dict(reference.state_dict())
        with torch.no_grad():
            output = changed(images)
        assert output.shape == expected.shape
        assert not torch.allclose(output, expected, atol=1e-4), f"{name}: {option}={value!r} changed nothing"


class NamedLikeTheTrunk(nn.Module):
    """A block whose parameter names contain "conv" and "bn": the reference init must leave them alone."""

    placement = "residual"

    def __init__(self, channels: int, scale: float = 0.5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)
        self.bn = nn.BatchNorm2d(channels)
        self.tap = AttentionMap("channel")
        with torch.no_grad():
            self.conv.weight.fill_(scale)
            self.conv.bias.fill_(0.25)
            self.bn.weight.fill_(3.0)

    def forward(self, x):
        return x * self.tap(self.bn(self.conv(x)).mean((2, 3))).sigmoid()[:, :, None, None]


@pytest.mark.parametrize("init", ["reference", "torchvision"])
def test_a_block_owns_its_init(monkeypatch, init):
    monkeypatch.setitem(attention_registry.BLOCKS, "Named", NamedLikeTheTrunk)  # what register_block does
    model = ResidualNet("CIFAR10", 18, 10, "Named", init=init, scale=0.75)
    blocks = model.attention_blocks()
    assert len(blocks) == 8
    for _, block in blocks:
        assert torch.all(block.conv.weight == 0.75) and torch.all(block.conv.bias == 0.25)
        assert torch.all(block.bn.weight == 3.0)
    # ... while the trunk still got the scheme's init
    assert torch.all(model.layer1[0].bn1.weight == 1) and model.layer1[0].conv1.weight.std() > 0


def test_registry_is_torch_free_and_matches_the_classes():
    assert set(attention_registry.BLOCKS) <= set(ATTENTION_BLOCKS)
    assert attention_registry.attention_names()[0] == "none"
    for name, target in attention_registry.BLOCKS.items():
        assert ATTENTION_BLOCKS[name].__name__ == target.split(":")[1]
        assert target.startswith("attn_resnet.models.attention.")


@pytest.mark.slow
@pytest.mark.parametrize("name", BLOCKS)
def test_block_compiles_to_the_eager_numbers(name):
    torch.manual_seed(0)
    block = build_attention(name, 64).eval()
    x = torch.randn(2, 64, 8, 6)
    compiled = torch.compile(block, fullgraph=True)
    torch.testing.assert_close(compiled(x), block(x), rtol=1e-4, atol=1e-4)


def test_block_overheads_count_what_the_blocks_add():
    from attn_resnet.complexity import block_overheads, count_params

    rows = block_overheads(18, "ImageNet", (3, 64, 64))
    assert {(r["att_type"], r["placement"]) for r in rows} == set(block_and_placements())
    for row in rows:
        with torch.device("meta"):
            model = ResidualNet("ImageNet", 18, None, row["att_type"], att_placement=row["placement"])
        in_blocks = sum(count_params(block) for _, block in model.attention_blocks())
        assert row["added_params"] == in_blocks and row["added_gflops"] >= 0
        assert row["default"] == (row["placement"] == ATTENTION_BLOCKS[row["att_type"]].placement)
    # ResNet-50 at 224: SE and CBAM add 2.53M parameters (CBAM paper, Table 4: 28.09M vs 25.56M), BAM 0.36M
    # (BAM paper: 25.92M vs 25.56M)
    big = {(r["att_type"], r["placement"]): r for r in block_overheads(50, placements=("residual", "stage"))}
    assert big[("SE", "residual")]["added_params"] / 1e6 == pytest.approx(2.53, abs=0.01)
    assert big[("CBAM", "residual")]["added_params"] / 1e6 == pytest.approx(2.53, abs=0.01)
    assert big[("BAM", "stage")]["added_params"] / 1e6 == pytest.approx(0.36, abs=0.01)
