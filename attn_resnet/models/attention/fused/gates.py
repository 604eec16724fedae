"""The fused SE and CBAM gates as autograd Functions: Triton kernels over the activation, PyTorch for the small parts.

The small parts (SE's and CBAM's channel MLP, CBAM's 7x7 conv + BN over the pooled 2-channel
map) are the blocks' own methods, run on detached copies of their (N, C) or (N, 2, H, W)
inputs with autograd on; the backward asks autograd for their gradients between two kernels.
So the blocks' parameters, BatchNorm statistics and ``AttentionMap`` taps are the eager
path's, and only the passes over the (N, C, H, W) activation are replaced.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from . import ops


def _traced(function, *inputs: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``(leaves, output)``: ``function`` on detached copies of ``inputs`` that require grad, with autograd on."""
    leaves = [tensor.detach().requires_grad_() for tensor in inputs]
    with torch.enable_grad():
        return leaves, function(*leaves)


def _small_grads(output: torch.Tensor, grad: torch.Tensor, leaves: list[torch.Tensor],
                 params: tuple[torch.nn.Parameter, ...]) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """Gradients of a small part's ``output`` (given ``grad``) w.r.t. its input ``leaves`` and trainable ``params``."""
    trainable = [param for param in params if param.requires_grad]
    grads = torch.autograd.grad(output, [*leaves, *trainable], grad.to(output.dtype), allow_unused=True)
    by_param = dict(zip(map(id, trainable), grads[len(leaves):]))
    return list(grads[:len(leaves)]), [by_param.get(id(param)) for param in params]


def _add(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    return b if a is None else a if b is None else a + b


# ------------------------------------------------------------------------------------------ SE
def _se_forward(x: torch.Tensor, block, track: bool):
    x, *_ = ops.pixel_view(x)
    pixels = x.shape[2] * x.shape[3]
    sums, _, _ = ops.reduce_pixels(x)
    squeezed = (sums * (1.0 / pixels)).to(x.dtype)
    leaves, scale = _traced(block.scale, squeezed) if track else ([], block.scale(squeezed))
    out_dtype = torch.promote_types(x.dtype, scale.dtype)
    out = ops.apply_gates(x, scale.detach(), None, out_dtype, out_dtype)
    return out, x, leaves, scale


class SEGate(torch.autograd.Function):
    """SE's squeeze, excitation and scale; the backward reads (grad, x) once, then writes grad_x in one pass."""

    @staticmethod
    def forward(ctx, x, block, *params):
        out, x, leaves, scale = _se_forward(x, block, track=True)
        ctx.save_for_backward(x, scale.detach())
        ctx.graph, ctx.params = (leaves, scale), params
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, scale = ctx.saved_tensors
        (leaves, scale_out), params = ctx.graph, ctx.params
        ctx.graph = None  # the small graph is used once; free it with the rest of the step's graph
        pixels = x.shape[2] * x.shape[3]
        grad_scale, _, _ = ops.reduce_pixels(x, grad=grad)  # sum over the pixels of grad * x
        (grad_squeezed,), param_grads = _small_grads(scale_out, grad_scale, leaves, params)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = ops.input_grad(grad, x, scale, grad_squeezed.to(ops.accumulator(x.dtype)) * (1.0 / pixels))
        return (grad_x, None, *param_grads)


def se_gate(x: torch.Tensor, block) -> torch.Tensor:
    """``block``'s (an ``SE``) output with the fused kernels."""
    params = tuple(block.parameters())
    if torch.is_grad_enabled() and (x.requires_grad or any(param.requires_grad for param in params)):
        return SEGate.apply(x, block, *params)
    return _se_forward(x, block, track=False)[0]


# ---------------------------------------------------------------------------------------- CBAM
def _cbam_forward(x: torch.Tensor, block, track: bool):
    x, *_ = ops.pixel_view(x)
    pixels = x.shape[2] * x.shape[3]
    # Pass 1: the channel gate's average and max pools (and where each max is) in one read.
    sums, maxes, max_pixel = ops.reduce_pixels(x, with_max=True)
    average = (sums * (1.0 / pixels)).to(x.dtype)
    gate = block.channel_gate
    channel_leaves, scale = _traced(gate.scale, average, maxes) if track else ([], gate.scale(average, maxes))
    y_dtype = torch.promote_types(x.dtype, scale.dtype)
    # Pass 2: y = x * scale is never stored; its max and mean over the channels are.
    pooled, max_channel = ops.channel_stats(x, scale.detach(), y_dtype)
    gate = block.spatial_gate
    spatial_leaves, spatial = _traced(gate.gate, pooled) if track else ([], gate.gate(pooled))
    # Pass 3: out = (x * scale) * spatial, from x again.
    out = ops.apply_gates(x, scale.detach(), spatial.detach(), y_dtype, torch.promote_types(y_dtype, spatial.dtype))
    return out, x, (channel_leaves, scale), (spatial_leaves, spatial), max_pixel, max_channel, y_dtype


class CBAMGates(torch.autograd.Function):
    """CBAM's channel and spatial gates; three passes over the activation forward, three backward."""

    @staticmethod
    def forward(ctx, x, block, *params):
        out, x, channel, spatial, max_pixel, max_channel, y_dtype = _cbam_forward(x, block, track=True)
        ctx.save_for_backward(x, channel[1].detach(), spatial[1].detach(), max_pixel, max_channel)
        ctx.graphs, ctx.params, ctx.y_dtype = (channel, spatial), params, y_dtype
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, scale, spatial, max_pixel, max_channel = ctx.saved_tensors
        ((channel_leaves, scale_out), (spatial_leaves, spatial_out)), params = ctx.graphs, ctx.params
        ctx.graphs = None
        n, c, h, w = x.shape
        # Pass 1: the spatial map's gradient (per pixel) and the part of the channel scale's
        # gradient that comes through the output (per channel), from one read of grad and x.
        grad_spatial, grad_scale = ops.cbam_backward_reduce(grad, x, scale, spatial, ctx.y_dtype)
        (grad_pooled,), spatial_param_grads = _small_grads(spatial_out, grad_spatial.view(n, 1, h, w),
                                                           spatial_leaves, params)
        grad_max = grad_pooled[:, 0].reshape(n, h * w)
        grad_mean = grad_pooled[:, 1].reshape(n, h * w) * (1.0 / c)
        # Pass 2: the rest of the scale's gradient, through the spatial gate's channel max and
        # mean: sum over the pixels of x * (grad_mean + grad_max where c is the max's channel).
        through_pools, _, _ = ops.reduce_pixels(x, weight=grad_mean, one_hot=(grad_max, max_channel))
        (grad_average, grad_maxes), channel_param_grads = _small_grads(scale_out, grad_scale + through_pools,
                                                                      channel_leaves, params)
        grad_x = None
        if ctx.needs_input_grad[0]:
            # Pass 3: the whole input gradient, written once.
            acc = ops.accumulator(x.dtype)
            grad_x = ops.input_grad(grad, x, scale, grad_average.to(acc) * (1.0 / (h * w)),
                                    (spatial, grad_max, grad_mean, max_channel, grad_maxes, max_pixel))
        return (grad_x, None, *map(_add, spatial_param_grads, channel_param_grads))


def cbam_gates(x: torch.Tensor, block) -> torch.Tensor:
    """``block``'s (a ``CBAM``) output with the fused kernels."""
    params = tuple(block.parameters())
    if torch.is_grad_enabled() and (x.requires_grad or any(param.requires_grad for param in params)):
        return CBAMGates.apply(x, block, *params)
    return _cbam_forward(x, block, track=False)[0]
