"""The CBAM and BAM options of the papers' ablations, each against a formula written out here.

The references below are written from the papers (CBAM Tables 1-3, BAM's ablation axes) with
plain functional ops, reading only the block's parameters: pools over the whole map, a mean and
a max over the channels, one MLP call per descriptor, the gates composed in the variant's
order. Outputs and the gradients of the input and of every parameter must agree in float64,
in train and eval mode. The defaults must stay exactly the blocks published (and fused) before.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attn_resnet.models.attention import BAM, CBAM
from attn_resnet.models.attention import cbam as cbam_module


def randomize_(block: nn.Module) -> nn.Module:
    """Random parameters and running statistics, so that no term of a formula hides behind an init."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param in block.parameters():
            param.copy_(0.5 * torch.randn(param.shape, generator=generator, dtype=param.dtype))
        for module in block.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=generator,
                                                            dtype=module.running_mean.dtype))
                module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=generator,
                                                          dtype=module.running_var.dtype))
    return block


def batch_norm(x, bn):
    return F.batch_norm(x, bn.running_mean.clone(), bn.running_var.clone(), bn.weight, bn.bias, bn.training,
                        bn.momentum, bn.eps)


# ----------------------------------------------------------------------------- CBAM
def reference_cbam(block, x, channel_pool="avgmax", spatial="avgmax", kernel_size=7, arrangement="channel_first"):
    fc1, fc2 = block.channel_gate.mlp[0], block.channel_gate.mlp[2]

    def mlp(descriptor):
        return F.linear(F.relu(F.linear(descriptor, fc1.weight, fc1.bias)), fc2.weight, fc2.bias)

    def channel_logits(t):  # (N, C, 1, 1)
        average = F.avg_pool2d(t, t.shape[2:]).flatten(1)
        maximum = F.max_pool2d(t, t.shape[2:]).flatten(1)
        logits = {"avg": mlp(average), "max": mlp(maximum), "avgmax": mlp(average) + mlp(maximum)}[channel_pool]
        return logits[:, :, None, None]

    def spatial_logits(t):  # (N, 1, H, W)
        gate = block.spatial_gate
        if spatial == "avgmax":
            descriptor = torch.cat([t.amax(dim=1, keepdim=True), t.mean(dim=1, keepdim=True)], dim=1)
        else:  # conv: a learned 1x1 convolution C -> 1
            descriptor = F.conv2d(t, gate.conv_reduce.weight)
        assert gate.conv.weight.shape[-1] == kernel_size
        return batch_norm(F.conv2d(descriptor, gate.conv.weight, padding=kernel_size // 2), gate.bn)

    if spatial == "none":
        return x * torch.sigmoid(channel_logits(x))
    if arrangement == "channel_first":
        y = x * torch.sigmoid(channel_logits(x))
        return y * torch.sigmoid(spatial_logits(y))
    if arrangement == "spatial_first":
        y = x * torch.sigmoid(spatial_logits(x))
        return y * torch.sigmoid(channel_logits(y))
    return x * torch.sigmoid(channel_logits(x) + spatial_logits(x))  # parallel: summed, then one sigmoid


CBAM_VARIANTS = [
    # Table 1: the channel gate's pooling, without a spatial gate
    dict(channel_pool="avg", spatial="none"),
    dict(channel_pool="max", spatial="none"),
    dict(channel_pool="avgmax", spatial="none"),
    # Table 2: the spatial descriptor and kernel
    dict(spatial="conv", kernel_size=3),
    dict(spatial="conv", kernel_size=7),
    dict(spatial="avgmax", kernel_size=3),
    dict(),  # CBAM as published: avgmax, k = 7, channel first
    # Table 3: the arrangement
    dict(arrangement="spatial_first"),
    dict(arrangement="parallel"),
    # the axes together
    dict(channel_pool="max", spatial="conv", kernel_size=5, arrangement="parallel"),
    dict(channel_pool="avg", spatial="avgmax", arrangement="spatial_first"),
]


def _outputs_and_grads(forward, block, x, upstream):
    x = x.detach().requires_grad_()
    y = forward(x)
    names = [name for name, _ in block.named_parameters()]
    grads = torch.autograd.grad((y * upstream).sum(), [x, *(p for _, p in block.named_parameters())])
    return y, dict(zip(["input", *names], grads))


def _check_against_reference(block, reference, train):
    generator = torch.Generator().manual_seed(0)
    block = randomize_(block.double()).train(train)
    x = torch.randn(3, 32, 7, 5, generator=generator, dtype=torch.float64)  # not square on purpose
    upstream = torch.randn(x.shape, generator=generator, dtype=torch.float64)
    expected, expected_grads = _outputs_and_grads(lambda inp: reference(block, inp), block, x, upstream)
    got, got_grads = _outputs_and_grads(block, block, x, upstream)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    assert got_grads.keys() == expected_grads.keys()
    for name in expected_grads:
        torch.testing.assert_close(got_grads[name], expected_grads[name], rtol=1e-9, atol=1e-11, msg=name)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("options", CBAM_VARIANTS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "CBAM")
def test_cbam_variant_equals_its_formula(options, train):
    _check_against_reference(CBAM(32, reduction=4, **options), lambda b, x: reference_cbam(b, x, **options), train)


def test_cbam_variants_have_the_parameters_their_formula_reads():
    def keys(**options):
        return sorted(CBAM(64, **options).state_dict())

    channel = ["channel_gate.mlp.0.bias", "channel_gate.mlp.0.weight", "channel_gate.mlp.2.bias",
               "channel_gate.mlp.2.weight"]
    spatial = ["spatial_gate.bn.bias", "spatial_gate.bn.num_batches_tracked", "spatial_gate.bn.running_mean",
               "spatial_gate.bn.running_var", "spatial_gate.bn.weight", "spatial_gate.conv.weight"]
    assert keys() == channel + spatial  # today's keys, the authors' once mapped (tests/test_official.py)
    assert keys(spatial="none") == keys(spatial="none", channel_pool="avg") == channel
    assert keys(spatial="conv") == sorted(channel + spatial + ["spatial_gate.conv_reduce.weight"])
    assert CBAM(64).spatial_gate.conv.weight.shape == (1, 2, 7, 7)
    assert CBAM(64, spatial="conv", kernel_size=3).spatial_gate.conv.weight.shape == (1, 1, 3, 3)
    assert CBAM(64, spatial="conv").spatial_gate.conv_reduce.weight.shape == (1, 64, 1, 1)


def test_the_average_pooled_channel_gate_alone_is_se():
    """Table 1's "+ AvgPool (SE)" row: the same parameters and, with SE's weights, SE's output."""
    from attn_resnet.models.attention import SE

    gate, se = randomize_(CBAM(32, reduction=4, channel_pool="avg", spatial="none")), SE(32, reduction=4)
    with torch.no_grad():
        for ours, theirs in ((gate.channel_gate.mlp[0], se.fc1), (gate.channel_gate.mlp[2], se.fc2)):
            theirs.weight.copy_(ours.weight)
            theirs.bias.copy_(ours.bias)
    x = torch.randn(2, 32, 5, 6, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(gate(x), se(x))
    assert sum(p.numel() for p in gate.parameters()) == sum(p.numel() for p in se.parameters())


def test_default_cbam_is_the_published_block_bit_for_bit():
    """The default forward is the composition the fused kernels implement: the channel gate's ``scale`` of
    both pools, then the spatial gate's ``gate`` of [max, mean] over the channels."""
    from attn_resnet.models.attention.se import global_avg_pool, mean_by_sum

    block = randomize_(CBAM(32, reduction=4)).train()
    x = torch.randn(2, 32, 6, 5, generator=torch.Generator().manual_seed(1))
    bn_state = {key: value.clone() for key, value in block.state_dict().items()}
    y = x * block.channel_gate.scale(global_avg_pool(x), cbam_module.global_max_pool(x))[:, :, None, None]
    pooled = torch.cat([y.max(dim=1, keepdim=True).values, mean_by_sum(y, (1,), keepdim=True)], dim=1)
    expected = y * block.spatial_gate.gate(pooled)
    block.load_state_dict(bn_state)  # the running statistics as they were before the reference's pass
    assert torch.equal(block(x), expected)


def test_only_cbam_as_published_runs_the_fused_kernels(monkeypatch):
    calls = []
    monkeypatch.setattr(cbam_module, "use_fused", lambda mode, x: True)
    monkeypatch.setattr(cbam_module, "cbam_gates", lambda x, block: calls.append(block) or x)
    x = torch.randn(2, 32, 4, 4)
    published = [CBAM(32), CBAM(32, kernel_size=3, reduction=8)]  # any kernel: the kernels run the gate's conv
    assert all(block(x) is x for block in published) and calls == published
    published_options = dict(channel_pool="avgmax", spatial="avgmax", arrangement="channel_first")
    variants = [options for options in CBAM_VARIANTS
                if any(options.get(key, value) != value for key, value in published_options.items())]
    assert len(variants) == 9
    for options in variants:
        assert CBAM(32, **options)(x) is not x, options  # the eager formula
    assert calls == published


def test_reference_init_of_the_variants():
    for options in ({}, dict(spatial="conv"), dict(arrangement="parallel")):
        block = randomize_(CBAM(64, **options))
        block.init_weights("reference")
        assert torch.all(block.spatial_gate.bn.weight == 0)  # every spatial gate starts at sigmoid(0) = 0.5
        assert torch.all(block.channel_gate.mlp[0].bias == 0)
    torch.manual_seed(0)
    block = CBAM(512, spatial="conv")
    block.init_weights("reference")
    # kaiming normal, fan_out: std sqrt(2 / (1 * 1 * 1)), the authors' rule for every weight named "conv"
    assert block.spatial_gate.conv_reduce.weight.std().item() == pytest.approx(2 ** 0.5, rel=0.15)
    block = randomize_(CBAM(64, spatial="none"))
    block.init_weights("reference")  # no spatial gate, no BN to zero
    assert torch.all(block.channel_gate.mlp[2].bias == 0)


@pytest.mark.parametrize("options,needles", [
    (dict(channel_pool="mean"), ["channel_pool='mean'", "avgmax, avg, max"]),
    (dict(spatial="max"), ["spatial='max'", "avgmax, conv, none"]),
    (dict(arrangement="sequential"), ["arrangement='sequential'", "channel_first, spatial_first, parallel"]),
    (dict(spatial="none", arrangement="parallel"), ["arrangement='parallel' needs a spatial gate"]),
    (dict(spatial="none", kernel_size=3), ["kernel_size=3 needs a spatial gate"]),
    (dict(kernel_size=4), ["kernel_size must be a positive odd integer"]),
])
def test_bad_cbam_options(options, needles):
    with pytest.raises(ValueError) as error:
        CBAM(64, **options)
    assert all(needle in str(error.value) for needle in needles), str(error.value)
    assert "\n" not in str(error.value)


# ----------------------------------------------------------------------------- BAM
def reference_bam(block, x, combine="product", branches="both", dilation=4):
    def channel():  # (N, C, 1, 1)
        gate = block.channel_gate
        hidden = F.linear(F.avg_pool2d(x, x.shape[2:]).flatten(1), gate.fc1.weight, gate.fc1.bias)
        return F.linear(F.relu(batch_norm(hidden, gate.bn)), gate.fc2.weight, gate.fc2.bias)[:, :, None, None]

    def spatial():  # (N, 1, H, W)
        gate = block.spatial_gate
        s = F.relu(batch_norm(F.conv2d(x, gate.conv_reduce.weight, gate.conv_reduce.bias), gate.bn_reduce))
        for conv, bn in zip(gate.conv_dilated, gate.bn_dilated):
            assert conv.dilation == (dilation, dilation)
            s = F.relu(batch_norm(F.conv2d(s, conv.weight, conv.bias, padding=dilation, dilation=dilation), bn))
        return F.conv2d(s, gate.conv_final.weight, gate.conv_final.bias)

    if branches == "channel":
        attention = channel().expand_as(x)
    elif branches == "spatial":
        attention = spatial().expand_as(x)
    else:
        mc, ms = channel().expand_as(x), spatial().expand_as(x)
        attention = {"product": mc * ms, "sum": mc + ms, "max": torch.where(mc >= ms, mc, ms)}[combine]
    return x + x * torch.sigmoid(attention)


BAM_VARIANTS = [dict(), dict(combine="sum"), dict(combine="max"), dict(branches="channel"),
                dict(branches="spatial"), dict(branches="spatial", dilation=2), dict(combine="max", dilation=1)]


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("options", BAM_VARIANTS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "BAM")
def test_bam_variant_equals_its_formula(options, train):
    _check_against_reference(BAM(32, reduction=4, **options), lambda b, x: reference_bam(b, x, **options), train)


def test_bam_branches_hold_only_their_parameters():
    both = set(BAM(64).state_dict())
    channel, spatial = set(BAM(64, branches="channel").state_dict()), set(BAM(64, branches="spatial").state_dict())
    assert channel == {key for key in both if key.startswith("channel_gate.")}
    assert spatial == {key for key in both if key.startswith("spatial_gate.")}
    assert channel | spatial == both
    # only the channel branch has BatchNorm1d: the spatial one alone trains on a batch of one
    BAM(64, branches="spatial").train()(torch.randn(1, 64, 8, 8))
    with pytest.raises(ValueError, match="batch size of at least 2"):
        BAM(64, branches="channel").train()(torch.randn(1, 64, 8, 8))


@pytest.mark.parametrize("options,needles", [
    (dict(combine="mean"), ["combine='mean'", "product, sum, max"]),
    (dict(branches="all"), ["branches='all'", "both, channel, spatial"]),
    (dict(branches="channel", combine="sum"), ["combine='sum' has no effect with branches='channel'"]),
    (dict(branches="channel", dilation=2), ["dilation=2 has no effect with branches='channel'"]),
])
def test_bad_bam_options(options, needles):
    with pytest.raises(ValueError) as error:
        BAM(64, **options)
    assert all(needle in str(error.value) for needle in needles), str(error.value)
    assert "\n" not in str(error.value)


# ----------------------------------------------------------------------------- through the config
@pytest.mark.parametrize("overrides,needles", [
    (["model.att_type=CBAM", "++model.channel_pool=mean"], ["model.channel_pool='mean'", "avgmax, avg, max"]),
    (["model.att_type=CBAM", "++model.spatial=pool"], ["model.spatial='pool'", "avgmax, conv, none"]),
    (["model.att_type=CBAM", "++model.arrangement=both"], ["model.arrangement='both'", "parallel"]),
    (["model.att_type=CBAM", "++model.arangement=parallel"], ["Did you mean model.arrangement"]),
    (["model.att_type=BAM", "++model.combine=min"], ["model.combine='min'", "product, sum, max"]),
    (["model.att_type=BAM", "++model.branches=channels"], ["model.branches='channels'", "both, channel, spatial"]),
    (["model.att_type=SE", "++model.channel_pool=avg"], ["model.channel_pool", "the SE block takes model.reduction"]),
])
def test_bad_options_in_the_config_get_one_paragraph(overrides, needles):
    from attn_resnet.config.validate import ConfigError, validate_train_config

    from helpers import compose_train

    with pytest.raises(ConfigError) as error:
        validate_train_config(compose_train(overrides))
    message = str(error.value)
    assert all(needle in message for needle in needles), message
    assert "\n" not in message


def test_options_reach_the_blocks_of_the_network():
    from attn_resnet.models import ResidualNet

    model = ResidualNet("CIFAR10", 18, 10, "CBAM", channel_pool="max", spatial="conv", kernel_size=3,
                        arrangement="parallel")
    blocks = [block for _, block in model.attention_blocks()]
    assert len(blocks) == 8 and all(
        block.channel_gate.pool == "max" and block.spatial_gate.descriptor == "conv"
        and block.spatial_gate.conv.kernel_size == (3, 3) and block.arrangement == "parallel" for block in blocks)
    model = ResidualNet("CIFAR100", 50, 100, "BAM", combine="max", branches="both", dilation=2)
    assert [block.combine for _, block in model.attention_blocks()] == ["max"] * 3
