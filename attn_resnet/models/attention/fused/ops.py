"""Launchers of the fused kernels: the (N, C, P) view of a tensor, tile sizes, compiled or interpreted kernels.

Each function takes and returns torch tensors; the kernels are in ``kernels``. An input that
is neither NCHW-contiguous nor channels_last is copied to NCHW-contiguous first (an
activation or a gradient is one or the other in practice; an expanded gradient is not).
"""

from __future__ import annotations

import contextlib
import functools
import os

import torch

# Elements of one tile: 16 float32 values per thread at 4 warps, for each tensor a kernel loads.
TILE_ELEMENTS = 2048


def interpreting() -> bool:
    """True when the environment asks for Triton's interpreter (``TRITON_INTERPRET=1``), as Triton reads it."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def interpreter_loaded() -> bool:
    """True when Triton's language was imported for its interpreter.

    Triton picks compiled or interpreted when it decorates a function, and its standard
    library (``tl.sum``, ``tl.max``) is decorated when ``triton.language`` is first imported
    (importing torchvision imports it): ``TRITON_INTERPRET=1`` set later changes nothing.
    """
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction  # what triton.jit makes when interpreting

    return isinstance(tl.standard.sum, InterpretedFunction)


@functools.cache
def _kernel(name: str, interpret: bool):
    """Kernel ``name`` of ``kernels``, compiled for the GPU or run by Triton's interpreter (as Triton's own library)."""
    from . import kernels

    function = getattr(kernels, name)
    if interpret:
        from triton.runtime.interpreter import InterpretedFunction

        return InterpretedFunction(function)
    from triton import JITFunction

    return JITFunction(function)


def _launch(name: str, grid: tuple[int, ...], device: torch.device, *args, **constants) -> None:
    kernel = _kernel(name, interpreter_loaded())
    guard = (torch.cuda.device(device) if device.type == "cuda" and device.index != torch.cuda.current_device()
             else contextlib.nullcontext())
    with guard:
        kernel[grid](*args, **constants)


def _triton_dtype(dtype: torch.dtype):
    import triton.language as tl

    return {torch.float32: tl.float32, torch.float64: tl.float64, torch.bfloat16: tl.bfloat16,
            torch.float16: tl.float16}[dtype]


def accumulator(dtype: torch.dtype) -> torch.dtype:
    """The dtype sums are taken in: float64 for float64 tensors, float32 for the rest."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def pixel_view(t: torch.Tensor) -> tuple[torch.Tensor, int, int, int]:
    """``(t, sample stride, channel stride, pixel stride)`` of (N, C, H, W) ``t`` seen as (N, C, H * W).

    The strides are computed from the layout, not read from ``t.stride()``: a dimension of
    size 1 may carry any stride.
    """
    n, c, h, w = t.shape
    if t.is_contiguous():
        return t, c * h * w, h * w, 1
    if t.is_contiguous(memory_format=torch.channels_last):
        return t, h * w * c, 1, c
    return pixel_view(t.contiguous())


def _tiles(channels: int, pixels: int, pixels_contiguous: bool) -> tuple[int, int]:
    """``(BLOCK_C, BLOCK_P)``: long runs along the dimension that is contiguous in memory."""
    def power_of_two(value: int) -> int:
        return 1 << max(value - 1, 0).bit_length()

    if pixels_contiguous:
        block_p = min(power_of_two(pixels), 256)
        return min(power_of_two(channels), max(TILE_ELEMENTS // block_p, 1)), block_p
    block_c = min(power_of_two(channels), 64)
    return block_c, min(power_of_two(pixels), max(TILE_ELEMENTS // block_c, 1))


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def reduce_pixels(x: torch.Tensor, grad: torch.Tensor | None = None, weight: torch.Tensor | None = None,
                  one_hot: tuple[torch.Tensor, torch.Tensor] | None = None, with_max: bool = False):
    """Per (n, c) sums over the pixels of x * [grad] * ([weight_p] + [m_p if c == idx_p]), in the accumulator dtype.

    With ``with_max`` also the max of x over the pixels (x's dtype) and the first pixel holding
    it (int32); otherwise those two are None. ``weight``, ``m`` and ``idx`` are (N, H * W).
    """
    x, x_sn, x_sc, x_sp = pixel_view(x)
    n, c, h, w = x.shape
    p = h * w
    acc = accumulator(x.dtype)
    sums = torch.empty(n, c, device=x.device, dtype=acc)
    maxes = torch.empty(n, c, device=x.device, dtype=x.dtype) if with_max else sums
    argmax = torch.empty(n, c, device=x.device, dtype=torch.int32) if with_max else sums
    g, g_sn, g_sc, g_sp = pixel_view(grad) if grad is not None else (x, 0, 0, 0)
    w_row = weight.contiguous() if weight is not None else sums
    m_row, idx_row = (one_hot[0].contiguous(), one_hot[1].contiguous()) if one_hot is not None else (sums, sums)
    block_c, block_p = _tiles(c, p, x_sp == 1)
    _launch("reduce_pixels_kernel", (_cdiv(c, block_c), n), x.device,
            x, g, w_row, m_row, idx_row, sums, maxes, argmax, c, p, x_sn, x_sc, x_sp, g_sn, g_sc, g_sp,
            HAS_G=grad is not None, HAS_W=weight is not None, HAS_ONE_HOT=one_hot is not None, WITH_MAX=with_max,
            ACC=_triton_dtype(acc), BLOCK_C=block_c, BLOCK_P=block_p)
    return sums, (maxes if with_max else None), (argmax if with_max else None)


def channel_stats(x: torch.Tensor, scale: torch.Tensor, y_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pooled, idx)``: [max, mean] over the channels of y = x * scale, (N, 2, H, W) in ``y_dtype``; max's channel.

    ``idx`` is (N, H * W) int32.
    """
    x, x_sn, x_sc, x_sp = pixel_view(x)
    n, c, h, w = x.shape
    p = h * w
    pooled = torch.empty(n, 2, h, w, device=x.device, dtype=y_dtype)
    idx = torch.empty(n, p, device=x.device, dtype=torch.int32)
    block_c, block_p = _tiles(c, p, x_sp == 1)
    _launch("channel_stats_kernel", (_cdiv(p, block_p), n), x.device,
            x, scale.contiguous(), pooled, idx, c, p, x_sn, x_sc, x_sp, 1.0 / c,
            Y=_triton_dtype(y_dtype), ACC=_triton_dtype(accumulator(x.dtype)), BLOCK_C=block_c, BLOCK_P=block_p)
    return pooled, idx


def apply_gates(x: torch.Tensor, scale: torch.Tensor, spatial: torch.Tensor | None, y_dtype: torch.dtype,
                out_dtype: torch.dtype) -> torch.Tensor:
    """x * scale[:, :, None, None], times ``spatial`` (N, 1, H, W) when given, in x's memory layout."""
    x, x_sn, x_sc, x_sp = pixel_view(x)
    n, c, h, w = x.shape
    p = h * w
    out = torch.empty_like(x, dtype=out_dtype)
    out, o_sn, o_sc, o_sp = pixel_view(out)
    sp = spatial.reshape(n, p).contiguous() if spatial is not None else scale
    block_c, block_p = _tiles(c, p, x_sp == 1)
    _launch("apply_gates_kernel", (_cdiv(p, block_p), _cdiv(c, block_c), n), x.device,
            x, scale.contiguous(), sp, out, c, p, x_sn, x_sc, x_sp, o_sn, o_sc, o_sp,
            HAS_SPATIAL=spatial is not None, Y=_triton_dtype(y_dtype), ACC=_triton_dtype(accumulator(x.dtype)),
            BLOCK_C=block_c, BLOCK_P=block_p)
    return out


def cbam_backward_reduce(grad: torch.Tensor, x: torch.Tensor, scale: torch.Tensor, spatial: torch.Tensor,
                         y_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``(grad_spatial, grad_scale_part)``: sum over c of grad * y per pixel, (N, H * W); sum over p of grad *
    spatial * x per channel, (N, C)."""
    x, x_sn, x_sc, x_sp = pixel_view(x)
    g, g_sn, g_sc, g_sp = pixel_view(grad)
    n, c, h, w = x.shape
    p = h * w
    acc = accumulator(x.dtype)
    block_c, block_p = _tiles(c, p, x_sp == 1)
    blocks = _cdiv(p, block_p)
    grad_spatial = torch.empty(n, p, device=x.device, dtype=acc)
    partial = torch.empty(n, blocks, c, device=x.device, dtype=acc)
    _launch("cbam_backward_reduce_kernel", (blocks, n), x.device,
            g, x, scale.contiguous(), spatial.reshape(n, p).contiguous(), grad_spatial, partial, c, p,
            g_sn, g_sc, g_sp, x_sn, x_sc, x_sp,
            Y=_triton_dtype(y_dtype), ACC=_triton_dtype(acc), BLOCK_C=block_c, BLOCK_P=block_p)
    return grad_spatial, partial.sum(1)


def input_grad(grad: torch.Tensor, like: torch.Tensor, scale: torch.Tensor, channel_grad: torch.Tensor,
               spatial: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
    """The input's gradient, in ``like``'s dtype and layout (see ``kernels.input_grad_kernel``).

    ``channel_grad``: a_c, added to every pixel of channel c. ``spatial`` (CBAM only):
    ``(sp, dmax, dmean, idx, b, pidx)`` with the per-pixel rows sp, dmax, dmean, idx (N, H * W)
    and the per-channel b and pidx (N, C).
    """
    like, *_ = pixel_view(like)
    g, g_sn, g_sc, g_sp = pixel_view(grad)
    n, c, h, w = like.shape
    p = h * w
    out = torch.empty_like(like)
    out, o_sn, o_sc, o_sp = pixel_view(out)
    rows = [t.contiguous() for t in spatial] if spatial is not None else [scale] * 6
    block_c, block_p = _tiles(c, p, o_sp == 1)
    _launch("input_grad_kernel", (_cdiv(p, block_p), _cdiv(c, block_c), n), like.device,
            g, scale.contiguous(), *rows[:4], channel_grad.contiguous(), *rows[4:], out, c, p,
            g_sn, g_sc, g_sp, o_sn, o_sc, o_sp,
            HAS_SPATIAL=spatial is not None, ACC=_triton_dtype(accumulator(like.dtype)),
            BLOCK_C=block_c, BLOCK_P=block_p)
    return out
