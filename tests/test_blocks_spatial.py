"""SK, SA, PSA and Triplet: each block's defining computation, checked against its formula.

The formulas are written here from the papers and the authors' code, reading the block's
own parameters, on small hand-made inputs; plus each option's validation error.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attn_resnet.models.attention import PSA, SA, SK, AttentionMap, Triplet


def randomize_(block: nn.Module) -> nn.Module:
    """Random parameters and BatchNorm running statistics, so that no formula term hides behind an init."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in block.parameters():
            param.copy_(0.5 * torch.randn(param.shape, generator=generator))
        for module in block.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=generator))
    return block


def batch_norm(x: torch.Tensor, bn: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    """``bn`` applied as in its mode, on copies of its running statistics."""
    return F.batch_norm(x, bn.running_mean.clone(), bn.running_var.clone(), bn.weight, bn.bias,
                        bn.training, bn.momentum, bn.eps)


def tapped(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The block's output and what passed through its AttentionMap taps."""
    seen = []
    handles = [m.register_forward_hook(lambda module, inputs, output: seen.append(output))
               for m in block.modules() if isinstance(m, AttentionMap)]
    out = block(x)
    for handle in handles:
        handle.remove()
    return out, seen


def hand_made(n: int, c: int, h: int, w: int) -> torch.Tensor:
    """A deterministic input with distinct values that vary along every dim."""
    index = torch.arange(n * c * h * w, dtype=torch.float32).reshape(n, c, h, w)
    return torch.sin(0.37 * index) + 0.01 * index.remainder(7)


# SK

def sk_formula(block: SK, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Branch i: grouped 3x3 conv with dilation i + 1 -> BN -> ReLU; softmax selection; sum a_i U_i."""
    branches = []
    for index, (conv, bn, _) in enumerate(block.convs):
        dilation = index + 1
        u = F.conv2d(x, conv.weight, padding=dilation, dilation=dilation, groups=conv.groups)
        branches.append(F.relu(batch_norm(u, bn)))
    s = sum(branches).mean(dim=(2, 3))
    z = F.relu(batch_norm(F.linear(s, block.fc.weight), block.bn))
    logits = F.linear(z, block.select.weight).reshape(x.shape[0], len(branches), x.shape[1])
    weights = logits.softmax(dim=1)
    return sum(weights[:, i, :, None, None] * u for i, u in enumerate(branches)), weights


@pytest.mark.parametrize("branches", [2, 3])
@pytest.mark.parametrize("train", [False, True])
def test_sk_output_is_the_softmax_weighted_sum_of_its_branches(branches, train):
    block = randomize_(SK(64, branches=branches, groups=8, reduction=4, min_dim=8)).train(train)
    assert [conv.dilation for conv, _, _ in block.convs] == [(d, d) for d in range(1, branches + 1)]
    assert all(conv.kernel_size == (3, 3) and conv.groups == 8 for conv, _, _ in block.convs)
    assert block.fc.out_features == 16  # max(64 // 4, 8)
    x = hand_made(3, 64, 5, 4)
    expected, weights = sk_formula(block, x)
    out, (tap,) = tapped(block, x)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3, 64))
    assert not torch.allclose(weights, torch.full_like(weights, 1 / branches), atol=1e-3)  # a real selection
    torch.testing.assert_close(tap, weights[:, 0])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_sk_selection_follows_its_logits():
    block = randomize_(SK(64, groups=32)).eval()
    x = hand_made(2, 64, 4, 4)
    branches = [conv(x) for conv in block.convs]
    with torch.no_grad():
        block.select.weight.zero_()  # equal logits: each branch weighs 1/2
    out, (tap,) = tapped(block, x)
    torch.testing.assert_close(tap, torch.full((2, 64), 0.5))
    torch.testing.assert_close(out, (branches[0] + branches[1]) / 2)
    with torch.no_grad():
        block.bn.bias.fill_(10.0)  # z > 0 after the ReLU ...
        block.bn.weight.zero_()
        block.select.weight[:64].fill_(1.0)  # ... so that branch 0's logits are far above branch 1's
    out, (tap,) = tapped(block, x)
    torch.testing.assert_close(tap, torch.ones(2, 64))
    torch.testing.assert_close(out, branches[0])


def test_sk_hidden_width_and_batch_of_two_in_training():
    assert SK(256).fc.out_features == 32  # max(256 // 16, 32): the paper's L = 32
    assert SK(2048).fc.out_features == 128
    block = SK(64).train()
    assert torch.isfinite(block(torch.randn(2, 64, 1, 1))).all()  # the fc's BatchNorm takes a batch of 2


@pytest.mark.parametrize("options, message", [
    ({"branches": 0}, "SK branches must be a positive integer"),
    ({"groups": 0}, "SK groups must be a positive integer"),
    ({"groups": 5}, "SK groups=5 must divide channels=64"),
    ({"reduction": 0}, "SK reduction must be a positive integer"),
    ({"min_dim": 0}, "SK min_dim must be a positive integer"),
])
def test_sk_rejects_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        SK(64, **options)


# SA

@pytest.mark.parametrize("channels, groups, order", [
    (8, 2, [0, 4, 1, 5, 2, 6, 3, 7]),  # G = 2: the even-G path
    (8, 1, [0, 4, 1, 5, 2, 6, 3, 7]),  # G = 1: the odd-G path
    (12, 3, [0, 6, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11]),
])
@pytest.mark.parametrize("channels_last", [False, True])
def test_sa_shuffles_channels_with_two_groups(channels, groups, order, channels_last):
    block = SA(channels, groups=groups)
    # Channel c holds c + 1 everywhere: the spatial half's GroupNorm gives 0 there, and the
    # init (cweight = sweight = 0, cbias = sbias = 1) makes every gate sigmoid(1).
    x = torch.arange(1.0, channels + 1).reshape(1, channels, 1, 1).expand(2, channels, 3, 5).contiguous()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out = block(x)
    expected = torch.tensor(order, dtype=torch.float32) + 1
    torch.testing.assert_close(out, expected.reshape(1, -1, 1, 1).expand_as(x) * torch.sigmoid(torch.tensor(1.0)))
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def test_sa_starts_with_every_gate_at_sigmoid_of_one():
    block = SA(64, groups=8)
    half = 64 // 16
    for name, value in (("cweight", 0.0), ("cbias", 1.0), ("sweight", 0.0), ("sbias", 1.0)):
        torch.testing.assert_close(getattr(block, name), torch.full((1, half, 1, 1), value))
    x = hand_made(2, 64, 5, 3)
    out, (tap,) = tapped(block, x)
    assert tap.shape == (2, 32, 5, 3)
    torch.testing.assert_close(tap, torch.ones_like(tap))  # the logits; the tap applies the sigmoid
    shuffled = x.reshape(2, 2, 32, 5, 3).transpose(1, 2).reshape_as(x)
    torch.testing.assert_close(out, shuffled * torch.sigmoid(torch.tensor(1.0)))


def sa_formula(block: SA, x: torch.Tensor) -> torch.Tensor:
    """Channel by channel: the gate of its half of its group, then the shuffle."""
    n, c, h, w = x.shape
    half = c // (2 * block.groups)
    gated = torch.empty_like(x)
    for channel in range(c):
        k = channel % (2 * half)
        plane = x[:, channel]
        if k < half:  # channel half: sigmoid(cweight * GAP + cbias)
            logit = block.cweight.flatten()[k] * plane.mean(dim=(1, 2), keepdim=True) + block.cbias.flatten()[k]
        else:  # spatial half: sigmoid(sweight * GroupNorm + sbias), one channel per GroupNorm group
            k -= half
            mean = plane.mean(dim=(1, 2), keepdim=True)
            var = plane.var(dim=(1, 2), unbiased=False, keepdim=True)
            normalized = (plane - mean) / torch.sqrt(var + block.gn.eps) * block.gn.weight[k] + block.gn.bias[k]
            logit = block.sweight.flatten()[k] * normalized + block.sbias.flatten()[k]
        gated[:, channel] = plane * torch.sigmoid(logit)
    out = torch.empty_like(x)
    for channel in range(c):
        out[:, channel] = gated[:, (channel % 2) * (c // 2) + channel // 2]
    return out


@pytest.mark.parametrize("channels, groups", [(16, 4), (12, 3), (64, 64)])
def test_sa_gates_each_half_of_each_group(channels, groups):
    block = randomize_(SA(channels, groups=groups))
    x = hand_made(2, channels, 4, 3)
    torch.testing.assert_close(block(x), sa_formula(block, x), rtol=1e-5, atol=1e-5)


def test_sa_group_count_fits_the_width():
    assert SA(64).groups == 32  # ResNet-18's first stage cannot take G = 64
    assert SA(256).groups == 64 and SA(2048).groups == 64
    assert sum(p.numel() for p in SA(256).parameters()) == 6 * 2  # 4 gate params and GroupNorm's 2, K = 2


@pytest.mark.parametrize("channels, options, message", [
    (64, {"groups": 0}, "SA groups must be a positive integer"),
    (72, {"groups": 16}, r"SA needs channels divisible by 2 \* G .* = 16; got channels=72"),
    (3, {}, r"SA needs channels divisible by 2 \* G .* = 1; got channels=3"),
    (1, {}, "SA needs channels divisible by 2"),
])
def test_sa_rejects_bad_options(channels, options, message):
    with pytest.raises(ValueError, match=message):
        SA(channels, **options)


# PSA

def psa_formula(block: PSA, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale i: conv with kernels[i], conv_groups[i]; shared SE weight; softmax across scales; concat."""
    features = [F.conv2d(x, conv.weight, padding=conv.kernel_size[0] // 2, groups=conv.groups)
                for conv in block.convs]
    fc1, fc2 = block.se[0], block.se[2]
    se = [torch.sigmoid(F.linear(F.relu(F.linear(f.mean(dim=(2, 3)), fc1.weight, fc1.bias)), fc2.weight, fc2.bias))
          for f in features]
    weights = torch.stack(se, dim=1).softmax(dim=1)  # (N, S, C/S)
    out = torch.cat([f * weights[:, i, :, None, None] for i, f in enumerate(features)], dim=1)
    return out, weights


@pytest.mark.parametrize("channels, kernels, conv_groups", [
    (64, (3, 5, 7, 9), (1, 4, 8, 16)),
    (12, [3, 1, 5], [1, 2, 4]),  # lists, as Hydra passes them
])
def test_psa_weights_scales_by_a_softmax_of_their_se_weights(channels, kernels, conv_groups):
    block = randomize_(PSA(channels, kernels=kernels, conv_groups=conv_groups))
    scales = len(kernels)
    assert [conv.kernel_size for conv in block.convs] == [(k, k) for k in kernels]
    assert [conv.groups for conv in block.convs] == list(conv_groups)
    assert all(conv.out_channels == channels // scales for conv in block.convs)
    x = hand_made(2, channels, 5, 4)
    expected, weights = psa_formula(block, x)
    out, (tap,) = tapped(block, x)
    torch.testing.assert_close(tap.reshape(2, scales, -1).sum(dim=1), torch.ones(2, channels // scales))
    torch.testing.assert_close(tap, weights.flatten(1))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_psa_equal_se_weights_average_the_scales():
    block = randomize_(PSA(64))
    with torch.no_grad():
        block.se[2].weight.zero_()
        block.se[2].bias.zero_()  # every SE weight sigmoid(0): a uniform softmax
    x = hand_made(2, 64, 4, 4)
    out, (tap,) = tapped(block, x)
    torch.testing.assert_close(tap, torch.full((2, 64), 0.25))
    torch.testing.assert_close(out, torch.cat([conv(x) for conv in block.convs], dim=1) / 4)


def test_psa_se_keeps_at_least_one_hidden_unit():
    assert PSA(64).se[0].out_features == 1  # 16 // 16
    assert PSA(32, conv_groups=(1, 2, 4, 8)).se[0].out_features == 1  # 8 // 16 would be 0
    assert PSA(2048).se[0].out_features == 32


@pytest.mark.parametrize("channels, options, message", [
    (64, {"kernels": (3, 4, 7, 9)}, "PSA kernels must be odd"),
    (64, {"kernels": ()}, "PSA kernels must be a non-empty list of positive integers"),
    (64, {"kernels": 3}, "PSA kernels must be a non-empty list of positive integers"),
    (64, {"conv_groups": (1, 0, 8, 16)}, "PSA conv_groups must be a non-empty list of positive integers"),
    (64, {"conv_groups": (1, 4, 8)}, "PSA needs one conv_groups entry per kernel"),
    (64, {"conv_groups": (1, 4, 8, 32)}, r"PSA conv_groups entry 32 must divide both channels=64 and channels / 4 = 16"),
    (64, {"conv_groups": (1, 3, 8, 16)}, "PSA conv_groups entry 3 must divide"),
    (64, {"reduction": 0}, "PSA reduction must be a positive integer"),
    (66, {}, "PSA needs channels divisible by the number of kernels"),
])
def test_psa_rejects_bad_options(channels, options, message):
    with pytest.raises(ValueError, match=message):
        PSA(channels, **options)


# Triplet

def triplet_formula(block: Triplet, x: torch.Tensor) -> torch.Tensor:
    """The authors' code: permute, Z-pool, conv, BN, sigmoid, multiply, permute back; average."""

    def gate(branch, rotated):
        pooled = torch.cat([rotated.max(dim=1, keepdim=True).values, rotated.mean(dim=1, keepdim=True)], dim=1)
        conv = F.conv2d(pooled, branch.conv.weight, padding=branch.conv.kernel_size[0] // 2)
        return rotated * torch.sigmoid(batch_norm(conv, branch.bn))

    cw = gate(block.cw, x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)  # H as the channel dim
    hc = gate(block.hc, x.permute(0, 3, 2, 1)).permute(0, 3, 2, 1)  # W as the channel dim
    if block.hw is None:
        return (cw + hc) / 2
    return (cw + hc + gate(block.hw, x)) / 3


@pytest.mark.parametrize("no_spatial", [False, True])
@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("size", [(6, 5), (1, 1)])
def test_triplet_averages_its_three_rotated_gates(no_spatial, train, size):
    block = randomize_(Triplet(8, kernel_size=3, no_spatial=no_spatial)).train(train)
    x = hand_made(3, 8, *size)
    out, (tap,) = tapped(block, x)
    torch.testing.assert_close(out, triplet_formula(block, x), rtol=1e-5, atol=1e-5)
    assert tap.shape == ((3, 8, size[0], 1) if no_spatial else (3, 1, *size))


def test_triplet_taps_the_spatial_logit():
    block = randomize_(Triplet(8)).eval()
    x = hand_made(2, 8, 6, 5)
    _, (tap,) = tapped(block, x)
    pooled = torch.cat([x.max(dim=1, keepdim=True).values, x.mean(dim=1, keepdim=True)], dim=1)
    torch.testing.assert_close(tap, batch_norm(F.conv2d(pooled, block.hw.conv.weight, padding=3), block.hw.bn))


def test_triplet_with_flat_gates_halves_the_input():
    block = Triplet(16).eval()
    with torch.no_grad():
        for branch in (block.cw, block.hc, block.hw):
            branch.conv.weight.zero_()  # logits = BN(0) = 0 with fresh running statistics: gates 0.5
    x = hand_made(2, 16, 7, 3)
    torch.testing.assert_close(block(x), 0.5 * x)
    assert sum(p.numel() for p in block.parameters()) == 3 * (2 * 7 * 7 + 2)


@pytest.mark.parametrize("options, message", [
    ({"kernel_size": 4}, "Triplet kernel_size must be a positive odd integer"),
    ({"kernel_size": 0}, "Triplet kernel_size must be a positive odd integer"),
    ({"no_spatial": "yes"}, "Triplet no_spatial must be true or false"),
])
def test_triplet_rejects_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        Triplet(64, **options)
