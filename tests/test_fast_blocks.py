"""The attention blocks are written for speed; here each one is checked against its plain formula.

The plain formulas below are written straight from the papers and the authors' reference
code (avg_pool2d / max_pool2d over the whole map, ``torch.max`` and ``torch.mean`` over the
channels, one MLP call per descriptor, ``1 + sigmoid`` for BAM), reading the block's own
parameters and running statistics. Outputs, the gradients with respect to the input and
every parameter, and the updated BatchNorm running statistics must agree: tightly in
float64, allclose in float32, in train and eval mode, for contiguous and channels_last input.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attn_resnet.models.attention import BAM, CBAM, SE


def plain_batch_norm(x, bn, stats):
    """BatchNorm as the block's ``bn`` computes it, on copies of its running statistics."""
    return F.batch_norm(x, stats[0], stats[1], bn.weight, bn.bias, bn.training, bn.momentum, bn.eps)


def plain_se(block, x, stats):
    squeezed = F.avg_pool2d(x, x.shape[2:]).flatten(1)
    scale = torch.sigmoid(F.linear(F.relu(F.linear(squeezed, block.fc1.weight, block.fc1.bias)),
                                   block.fc2.weight, block.fc2.bias))
    return x * scale[:, :, None, None].expand_as(x)


def plain_cbam(block, x, stats):
    fc1, fc2 = block.channel_gate.mlp[0], block.channel_gate.mlp[2]

    def mlp(descriptor):
        return F.linear(F.relu(F.linear(descriptor.flatten(1), fc1.weight, fc1.bias)), fc2.weight, fc2.bias)

    size = x.shape[2:]
    channel_att = mlp(F.avg_pool2d(x, size, stride=size)) + mlp(F.max_pool2d(x, size, stride=size))
    x = x * torch.sigmoid(channel_att)[:, :, None, None].expand_as(x)

    gate = block.spatial_gate
    pooled = torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), dim=1)
    conv = F.conv2d(pooled, gate.conv.weight, padding=gate.conv.padding)
    return x * torch.sigmoid(plain_batch_norm(conv, gate.bn, stats["spatial_gate.bn"]))


def plain_bam(block, x, stats):
    cg, sg = block.channel_gate, block.spatial_gate
    hidden = F.linear(F.avg_pool2d(x, x.shape[2:]).flatten(1), cg.fc1.weight, cg.fc1.bias)
    hidden = F.relu(plain_batch_norm(hidden, cg.bn, stats["channel_gate.bn"]))
    channel_att = F.linear(hidden, cg.fc2.weight, cg.fc2.bias)[:, :, None, None].expand_as(x)

    s = F.conv2d(x, sg.conv_reduce.weight, sg.conv_reduce.bias)
    s = F.relu(plain_batch_norm(s, sg.bn_reduce, stats["spatial_gate.bn_reduce"]))
    for index, (conv, bn) in enumerate(zip(sg.conv_dilated, sg.bn_dilated)):
        s = F.conv2d(s, conv.weight, conv.bias, padding=conv.padding, dilation=conv.dilation)
        s = F.relu(plain_batch_norm(s, bn, stats[f"spatial_gate.bn_dilated.{index}"]))
    spatial_att = F.conv2d(s, sg.conv_final.weight, sg.conv_final.bias).expand_as(x)

    logits = channel_att * spatial_att if block.combine == "product" else channel_att + spatial_att
    return (1 + torch.sigmoid(logits)) * x


CASES = {
    "SE": (lambda: SE(64), plain_se),
    "CBAM": (lambda: CBAM(64), plain_cbam),
    "CBAM-k3-r8": (lambda: CBAM(64, reduction=8, kernel_size=3), plain_cbam),
    "BAM-product": (lambda: BAM(64, combine="product"), plain_bam),
    "BAM-sum": (lambda: BAM(64, combine="sum"), plain_bam),
}
TOLERANCES = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=1e-4, atol=1e-5)}


def batch_norm_stats(block) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Copies of every BatchNorm's running mean and variance, by module name."""
    return {name: (module.running_mean.clone(), module.running_var.clone())
            for name, module in block.named_modules() if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)}


def randomize_(block, generator) -> None:
    """Non-trivial values everywhere (the reference init zeroes biases and CBAM's gate BN weight)."""
    with torch.no_grad():
        for name, param in block.named_parameters():
            param.copy_(torch.randn(param.shape, generator=generator, dtype=param.dtype) * 0.5)
        for name, buffer in block.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(torch.randn(buffer.shape, generator=generator, dtype=buffer.dtype) * 0.1)
            elif name.endswith("running_var"):
                buffer.copy_(torch.rand(buffer.shape, generator=generator, dtype=buffer.dtype) + 0.5)


def outputs_and_grads(forward, block, x, upstream):
    """The output and the gradients of ``(output * upstream).sum()`` w.r.t. ``x`` and every parameter."""
    x = x.detach().requires_grad_()
    y = forward(x)
    params = [p for _, p in block.named_parameters()]
    grads = torch.autograd.grad((y * upstream).sum(), [x, *params])
    return y, dict(zip(["input", *(name for name, _ in block.named_parameters())], grads))


def check_block_equals_plain_formula(name, dtype, train, channels_last, x=None):
    make, plain = CASES[name]
    generator = torch.Generator().manual_seed(0)
    block = make().to(dtype)
    randomize_(block, generator)
    block.train(train)
    if x is None:
        x = torch.randn(4, 64, 9, 7, generator=generator, dtype=dtype)  # not square on purpose
    upstream = torch.randn(x.shape, generator=generator, dtype=dtype)
    if channels_last:
        block = block.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
        upstream = upstream.contiguous(memory_format=torch.channels_last)

    stats = batch_norm_stats(block)
    expected, expected_grads = outputs_and_grads(lambda inp: plain(block, inp, stats), block, x, upstream)
    got, got_grads = outputs_and_grads(block, block, x, upstream)

    tolerance = TOLERANCES[dtype]
    torch.testing.assert_close(got, expected, **tolerance)
    assert set(got_grads) == set(expected_grads)
    for key in expected_grads:
        torch.testing.assert_close(got_grads[key], expected_grads[key], **tolerance, msg=lambda m: f"{key}: {m}")
    # Train mode: the running statistics moved exactly as the plain formula moved its copies.
    for module_name, (mean, var) in stats.items():
        module = block.get_submodule(module_name)
        torch.testing.assert_close(module.running_mean, mean, **tolerance)
        torch.testing.assert_close(module.running_var, var, **tolerance)
    if channels_last:
        assert got.is_contiguous(memory_format=torch.channels_last), "the block lost the channels_last layout"
    return got_grads


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", list(CASES))
def test_block_equals_its_plain_formula(name, dtype, train, channels_last):
    check_block_equals_plain_formula(name, dtype, train, channels_last)


@pytest.mark.parametrize("name", ["CBAM", "BAM-product"])
def test_block_equals_its_plain_formula_on_a_batch_of_two_large_maps(name):
    # Sizes near a real stage (a 16x16 map), where reductions take other code paths than on tiny maps.
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 64, 16, 16, generator=generator, dtype=torch.float64)
    check_block_equals_plain_formula(name, torch.float64, True, False, x)


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
def test_cbam_max_pools_break_ties_like_the_reference(channels_last):
    # Many equal values (e.g. a block started as an identity by zero_init_residual feeds the
    # gate a constant map): the reference's max_pool2d / torch.max send each max's gradient
    # to one element, not split over the ties as amax would.
    generator = torch.Generator().manual_seed(2)
    x = torch.randint(-1, 2, (3, 64, 5, 6), generator=generator).to(torch.float64)
    grads = check_block_equals_plain_formula("CBAM", torch.float64, True, channels_last, x)
    assert torch.isfinite(grads["input"]).all()


def test_constant_input_gives_finite_equal_gradients():
    x = torch.full((2, 64, 4, 4), 0.25, dtype=torch.float64)
    for name in CASES:
        check_block_equals_plain_formula(name, torch.float64, False, False, x)


def test_float16_means_do_not_overflow_where_the_plain_mean_does_not():
    # 64 x 64 values of 30 sum to 122880, beyond float16's largest finite 65504.
    from attn_resnet.models.attention.se import mean_by_sum

    x = torch.full((1, 2, 64, 64), 30.0, dtype=torch.float16, requires_grad=True)
    pooled = mean_by_sum(x, (2, 3))
    torch.testing.assert_close(pooled, x.detach().mean((2, 3)))
    pooled.sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 1 / 4096))
