"""ECA, SEVar, GC and CoordAtt, each checked against its paper's formula written out here.

The formulas are computed independently of the blocks' forward (einsum, explicit loops, a
hand-written h-swish and LayerNorm), in float64, reading the blocks' own parameters.
"""

from __future__ import annotations

import math

import pytest
import torch

from attn_resnet.models.attention import SE, AttentionMap, build_attention
from attn_resnet.models.attention.coord import CoordAtt
from attn_resnet.models.attention.eca import ECA
from attn_resnet.models.attention.gc import GC
from attn_resnet.models.attention.se_variants import SEVar

TIGHT = dict(rtol=1e-10, atol=1e-12)


def taps_of(block) -> list[torch.Tensor]:
    """Run-time outputs of every AttentionMap in ``block``, in call order, for the next forward."""
    seen: list[torch.Tensor] = []
    for module in block.modules():
        if isinstance(module, AttentionMap):
            module.register_forward_hook(lambda module, inputs, output: seen.append(output))
    return seen


# ---------------------------------------------------------------- ECA
@pytest.mark.parametrize("channels,k", [(64, 3), (128, 5), (256, 5), (512, 5), (1024, 5), (2048, 7)])
def test_eca_adaptive_kernel_size_is_the_papers(channels, k):
    # k = |log2(C)/gamma + b/gamma| to the odd integer, gamma=2, b=1: e.g. C=64 -> 3.5 -> 3, C=2048 -> 6 -> 7.
    t = int(abs(math.log2(channels) / 2 + 1 / 2))
    assert (t if t % 2 else t + 1) == k
    assert ECA(channels).conv.kernel_size == (k,)
    assert ECA(channels, k_size=9).conv.kernel_size == (9,)  # an explicit size wins over the adaptive one


def test_eca_adaptive_kernel_size_follows_gamma_and_b():
    assert ECA(256, gamma=1, b=1).conv.kernel_size == (9,)  # |8 + 1| = 9
    assert ECA(256, gamma=4, b=0).conv.kernel_size == (3,)  # |8 / 4| = 2 -> 3


def test_eca_is_a_local_cross_channel_conv_of_the_pooled_descriptor():
    block = ECA(6, k_size=3).double()
    with torch.no_grad():
        block.conv.weight.copy_(torch.tensor([[[0.5, -1.0, 2.0]]]))
    x = torch.randn(2, 6, 4, 5, dtype=torch.float64)
    pooled = x.sum((2, 3)) / 20
    logits = torch.zeros(2, 6, dtype=torch.float64)
    for c in range(6):  # channel c sees its neighbours c-1, c, c+1, zero outside
        for offset, w in zip((-1, 0, 1), (0.5, -1.0, 2.0)):
            if 0 <= c + offset < 6:
                logits[:, c] += w * pooled[:, c + offset]
    scale = 1 / (1 + torch.exp(-logits))
    seen = taps_of(block)
    torch.testing.assert_close(block(x), x * scale[:, :, None, None], **TIGHT)
    torch.testing.assert_close(seen[0], scale, **TIGHT)
    assert block.conv.bias is None  # the paper's conv has no bias


@pytest.mark.parametrize("options,match", [
    (dict(k_size=4), "k_size must be a positive odd integer"),
    (dict(k_size=0), "k_size must be a positive odd integer"),
    (dict(gamma=0), "gamma must be a positive integer"),
    (dict(b=0.5), "b must be an integer"),
])
def test_eca_rejects_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        ECA(64, **options)


# ---------------------------------------------------------------- SEVar
def test_sevar_with_defaults_is_se():
    torch.manual_seed(0)
    se, variant = SE(64).double(), SEVar(64).double()
    variant.load_state_dict(se.state_dict())  # strict: the same parameters under the same names
    x = torch.randn(3, 64, 5, 7, dtype=torch.float64, requires_grad=True)
    out_se = se(x)
    grad_se = torch.autograd.grad(out_se.square().sum(), x)[0]
    out = variant(x)
    grad = torch.autograd.grad(out.square().sum(), x)[0]
    torch.testing.assert_close(out, out_se, **TIGHT)
    torch.testing.assert_close(grad, grad_se, **TIGHT)


def test_sevar_reference_init_is_ses():
    torch.manual_seed(0)
    se, variant = SE(64), SEVar(64)
    se.init_weights("reference")
    variant.init_weights("reference")
    for (name, p_se), (name_var, p_var) in zip(se.named_parameters(), variant.named_parameters()):
        assert name == name_var
        if name.endswith("bias"):
            assert torch.all(p_se == 0) and torch.all(p_var == 0)


@pytest.mark.parametrize("squeeze", ["avg", "max"])
@pytest.mark.parametrize("excitation", ["sigmoid", "relu", "tanh"])
@pytest.mark.parametrize("reduction", [2, 8, 32])
def test_sevar_ablation_formula(squeeze, excitation, reduction):
    torch.manual_seed(0)
    block = SEVar(64, reduction=reduction, squeeze=squeeze, excitation=excitation).double()
    assert block.fc1.out_features == 64 // reduction
    x = torch.randn(2, 64, 4, 3, dtype=torch.float64)
    flat = x.flatten(2)
    pooled = flat.sum(-1) / flat.shape[-1] if squeeze == "avg" else flat.max(-1).values
    hidden = (pooled @ block.fc1.weight.T + block.fc1.bias).clamp(min=0)
    logits = hidden @ block.fc2.weight.T + block.fc2.bias
    scale = {"sigmoid": 1 / (1 + torch.exp(-logits)), "relu": logits.clamp(min=0), "tanh": torch.tanh(logits)}
    seen = taps_of(block)
    torch.testing.assert_close(block(x), x * scale[excitation][:, :, None, None], **TIGHT)
    torch.testing.assert_close(seen[0], scale[excitation], **TIGHT)


@pytest.mark.parametrize("options,match", [
    (dict(squeeze="min"), r"squeeze must be one of \('avg', 'max'\), got 'min'"),
    (dict(excitation="softmax"), r"excitation must be one of \('sigmoid', 'relu', 'tanh'\), got 'softmax'"),
    (dict(reduction=0), "reduction must be a positive integer"),
    (dict(reduction=128), "leaves no hidden units for 64 channels"),
])
def test_sevar_rejects_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        SEVar(64, **options)


# ---------------------------------------------------------------- GC
def plain_gc(block, x):
    """GC from the paper's equations: softmax attention pooling, bottleneck with LayerNorm, fusion."""
    logits = torch.einsum("nchw,c->nhw", x, block.conv_mask.weight.flatten()) + block.conv_mask.bias
    weights = torch.exp(logits - logits.amax((1, 2), keepdim=True))
    weights = weights / weights.sum((1, 2), keepdim=True)
    context = torch.einsum("nchw,nhw->nc", x, weights)
    first, norm, _, last = block.transform
    hidden = context @ first.weight.flatten(1).T + first.bias
    centred = hidden - hidden.mean(1, keepdim=True)
    hidden = centred / torch.sqrt(centred.square().mean(1, keepdim=True) + norm.eps)
    hidden = (hidden * norm.weight.flatten() + norm.bias.flatten()).clamp(min=0)
    term = (hidden @ last.weight.flatten(1).T + last.bias)[:, :, None, None]
    gate = 1 / (1 + torch.exp(-term))
    out = x + term if block.fusion == "add" else x * gate
    return out, weights, gate


@pytest.mark.parametrize("fusion", ["add", "mul"])
@pytest.mark.parametrize("size", [(5, 7), (1, 1), (1, 4)])
def test_gc_formula(fusion, size):
    torch.manual_seed(0)
    block = GC(64, reduction=8, fusion=fusion).double()
    with torch.no_grad():  # off the zero init, so that every part of the formula shows
        for p in block.parameters():
            p.normal_()
    x = torch.randn(2, 64, *size, dtype=torch.float64)
    expected, weights, gate = plain_gc(block, x)
    seen = taps_of(block)
    torch.testing.assert_close(block(x), expected, **TIGHT)
    torch.testing.assert_close(seen[0], weights[:, None], **TIGHT)
    if fusion == "mul":
        torch.testing.assert_close(seen[1], gate, **TIGHT)


def test_gc_pooling_weights_are_a_softmax_over_all_positions():
    torch.manual_seed(0)
    block = GC(64)
    seen = taps_of(block)
    block(torch.randn(3, 64, 6, 5) * 10)
    weights = seen[0]
    assert weights.shape == (3, 1, 6, 5) and torch.all(weights > 0)
    torch.testing.assert_close(weights.sum((2, 3)), torch.ones(3, 1))


def test_gc_starts_as_the_identity_for_add_and_a_half_gate_for_mul():
    torch.manual_seed(0)
    x = torch.randn(2, 256, 7, 3)
    add, mul = GC(256), GC(256, fusion="mul")
    for block in (add, mul):
        assert torch.all(block.transform[-1].weight == 0) and torch.all(block.transform[-1].bias == 0)
    assert torch.equal(add(x), x)
    torch.testing.assert_close(mul(x), 0.5 * x)
    assert add.transform[0].out_channels == 256 // 16 and add.transform[1].normalized_shape == (16, 1, 1)


@pytest.mark.parametrize("options,match", [
    (dict(fusion="both"), r"fusion must be one of \('add', 'mul'\), got 'both'"),
    (dict(reduction=0), "reduction must be a positive integer"),
    (dict(reduction=128), "leaves no hidden units for 64 channels"),
])
def test_gc_rejects_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        GC(64, **options)


# ---------------------------------------------------------------- CoordAtt
def h_swish(y):
    return y * (y + 3).clamp(0, 6) / 6


def conv1x1(conv, y):
    return torch.einsum("nchw,oc->nohw", y, conv.weight.flatten(1)) + conv.bias[:, None, None]


@pytest.mark.parametrize("size", [(6, 4), (1, 1), (3, 1)])
def test_coordatt_is_x_times_its_two_directional_maps_eval(size):
    torch.manual_seed(0)
    block = CoordAtt(64, reduction=4).double().eval()
    with torch.no_grad():
        block.bn1.running_mean.normal_()
        block.bn1.running_var.uniform_(0.5, 2)
        block.bn1.weight.normal_()
        block.bn1.bias.normal_()
    x = torch.randn(2, 64, *size, dtype=torch.float64)
    bn = block.bn1

    def shared(pooled):  # the shared conv -> BN (running statistics) -> h-swish, one direction at a time
        y = conv1x1(block.conv1, pooled)
        y = (y - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
        return h_swish(y * bn.weight[:, None, None] + bn.bias[:, None, None])

    a_h = torch.sigmoid(conv1x1(block.conv_h, shared(x.mean(3, keepdim=True))))  # (N, C, H, 1)
    a_w = torch.sigmoid(conv1x1(block.conv_w, shared(x.mean(2, keepdim=True))))  # (N, C, 1, W)
    seen = taps_of(block)
    torch.testing.assert_close(block(x), x * a_h * a_w, **TIGHT)
    torch.testing.assert_close(seen[0], a_h, **TIGHT)
    torch.testing.assert_close(seen[1], a_w, **TIGHT)


def test_coordatt_trains_its_bn_on_both_directions_together():
    # The authors concatenate the two pooled maps, so BN's batch statistics span H + W positions.
    torch.manual_seed(0)
    block = CoordAtt(64).double().train()
    x = torch.randn(3, 64, 5, 2, dtype=torch.float64)
    both = torch.cat([x.mean(3, keepdim=True), x.mean(2, keepdim=True).transpose(2, 3)], dim=2)
    y = conv1x1(block.conv1, both)
    mean, var = y.mean((0, 2, 3), keepdim=True), y.var((0, 2, 3), unbiased=False, keepdim=True)
    y = h_swish((y - mean) / torch.sqrt(var + block.bn1.eps) * block.bn1.weight[:, None, None]
                + block.bn1.bias[:, None, None])
    a_h = torch.sigmoid(conv1x1(block.conv_h, y[:, :, :5]))
    a_w = torch.sigmoid(conv1x1(block.conv_w, y[:, :, 5:].transpose(2, 3)))
    torch.testing.assert_close(block(x), x * a_h * a_w, **TIGHT)


@pytest.mark.parametrize("channels,reduction,hidden", [(64, 32, 8), (256, 32, 8), (2048, 32, 64), (256, 8, 32)])
def test_coordatt_hidden_width_is_max_8_c_over_r(channels, reduction, hidden):
    block = CoordAtt(channels, reduction=reduction)
    assert block.conv1.out_channels == hidden and block.bn1.num_features == hidden
    assert block.conv_h.out_channels == block.conv_w.out_channels == channels


@pytest.mark.parametrize("reduction", [0, -2, 1.5])
def test_coordatt_rejects_bad_reduction(reduction):
    with pytest.raises(ValueError, match="CoordAtt reduction must be a positive integer"):
        CoordAtt(64, reduction=reduction)


# ---------------------------------------------------------------- through the registry
@pytest.mark.parametrize("name,parameters", [("ECA", 5), ("SEVar", 8464), ("GC", 8753), ("CoordAtt", 6680)])
def test_parameter_count_at_256_channels(name, parameters):
    # ECA: k=5; SEVar: SE's 2*256*16 + 16 + 256; GC: 257 + 4112 + 32 + 4352; CoordAtt: 2056 + 16 + 2*2304.
    assert sum(p.numel() for p in build_attention(name, 256).parameters()) == parameters
