"""Triton kernels of the fused SE and CBAM gates, as plain functions that ``ops`` compiles or interprets.

Every kernel sees an activation as (N, C, P) with P = H * W pixels and three strides: the
sample, channel and pixel strides, so that one kernel serves NCHW-contiguous tensors (pixel
stride 1) and channels_last ones (pixel stride C). Sums are taken in ``ACC`` (float32, or
float64 for float64 inputs), whatever the storage dtype. The maxima keep the first index of
a tie (the lowest pixel index h * W + w, or the lowest channel), as ``max_pool2d`` and
``torch.max`` choose (tests/test_fused_kernels.py checks it against them on the CPU), so
that each max's gradient goes to the same one element as in the eager path.

The kernels are undecorated: ``ops`` wraps each, at its first launch, in a
``triton.JITFunction`` (CUDA) or in Triton's interpreter when Triton was imported with
``TRITON_INTERPRET=1``. They use only loads, stores, arithmetic, ``tl.full``, ``tl.where``,
``tl.sum`` and ``tl.max`` (with indices), which the interpreter runs with NumPy.
"""

from __future__ import annotations

import triton.language as tl


def reduce_pixels_kernel(x_ptr, g_ptr, w_ptr, m_ptr, idx_ptr, sum_ptr, max_ptr, argmax_ptr,
                         C, P, x_sn, x_sc, x_sp, g_sn, g_sc, g_sp,
                         HAS_G: tl.constexpr, HAS_W: tl.constexpr, HAS_ONE_HOT: tl.constexpr,
                         WITH_MAX: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """Per (n, c): sum over the pixels p of x * [g] * ([w_p] + [m_p if c == idx_p]); [max over p of x, its first p].

    One program per sample and block of channels, looping over the pixels. The weight w and
    the one-hot term (m, idx) are per-pixel rows of (N, P), contiguous.
    """
    n = tl.program_id(1).to(tl.int64)
    channels = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    channel_ok = channels < C
    total = tl.full([BLOCK_C], 0.0, dtype=ACC)
    best = tl.full([BLOCK_C], float("-inf"), dtype=ACC)
    best_at = tl.full([BLOCK_C], 0, dtype=tl.int32)
    for start in range(0, P, BLOCK_P):
        pixels = start + tl.arange(0, BLOCK_P)
        pixel_ok = pixels < P
        ok = channel_ok[:, None] & pixel_ok[None, :]
        x = tl.load(x_ptr + n * x_sn + channels[:, None] * x_sc + pixels[None, :] * x_sp, mask=ok, other=0.0).to(ACC)
        value = x
        if HAS_G:
            g = tl.load(g_ptr + n * g_sn + channels[:, None] * g_sc + pixels[None, :] * g_sp, mask=ok, other=0.0)
            value = value * g.to(ACC)
        if HAS_W or HAS_ONE_HOT:
            weight = tl.full([BLOCK_C, BLOCK_P], 0.0, dtype=ACC)
            if HAS_W:
                weight += tl.load(w_ptr + n * P + pixels, mask=pixel_ok, other=0.0).to(ACC)[None, :]
            if HAS_ONE_HOT:
                m = tl.load(m_ptr + n * P + pixels, mask=pixel_ok, other=0.0).to(ACC)
                idx = tl.load(idx_ptr + n * P + pixels, mask=pixel_ok, other=-1)
                weight += tl.where(channels[:, None] == idx[None, :], m[None, :], 0.0)
            value = value * weight
        total += tl.sum(value, axis=1)
        if WITH_MAX:
            # Strictly greater: an equal max in a later block keeps the earlier (lower) index.
            block_max, block_at = tl.max(tl.where(ok, x, float("-inf")), axis=1, return_indices=True,
                                         return_indices_tie_break_left=True)
            better = block_max > best
            best = tl.where(better, block_max, best)
            best_at = tl.where(better, block_at + start, best_at)
    out = n * C + channels
    tl.store(sum_ptr + out, total, mask=channel_ok)
    if WITH_MAX:
        tl.store(max_ptr + out, best.to(max_ptr.dtype.element_ty), mask=channel_ok)
        tl.store(argmax_ptr + out, best_at, mask=channel_ok)


def channel_stats_kernel(x_ptr, s_ptr, pooled_ptr, idx_ptr, C, P, x_sn, x_sc, x_sp, inv_c,
                         Y: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """Per (n, p): max over channels of y = x * s_c (and its first channel) and the mean of y over channels.

    y is rounded to ``Y`` (the dtype the eager path stores it in) before it is compared and
    summed, so that the maximum and its index are those of the eager path. Writes the
    spatial gate's input pooled[n] = [max, mean] (N, 2, P) and the argmax (N, P).
    """
    n = tl.program_id(1).to(tl.int64)
    pixels = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    pixel_ok = pixels < P
    total = tl.full([BLOCK_P], 0.0, dtype=ACC)
    best = tl.full([BLOCK_P], float("-inf"), dtype=ACC)
    best_at = tl.full([BLOCK_P], 0, dtype=tl.int32)
    for start in range(0, C, BLOCK_C):
        channels = start + tl.arange(0, BLOCK_C)
        channel_ok = channels < C
        ok = channel_ok[:, None] & pixel_ok[None, :]
        x = tl.load(x_ptr + n * x_sn + channels[:, None] * x_sc + pixels[None, :] * x_sp, mask=ok, other=0.0)
        s = tl.load(s_ptr + n * C + channels, mask=channel_ok, other=0.0)
        y = (x.to(ACC) * s.to(ACC)[:, None]).to(Y).to(ACC)
        total += tl.sum(y, axis=0)
        block_max, block_at = tl.max(tl.where(ok, y, float("-inf")), axis=0, return_indices=True,
                                     return_indices_tie_break_left=True)
        better = block_max > best
        best = tl.where(better, block_max, best)
        best_at = tl.where(better, block_at + start, best_at)
    out_ty = pooled_ptr.dtype.element_ty
    tl.store(pooled_ptr + n * 2 * P + pixels, best.to(out_ty), mask=pixel_ok)
    tl.store(pooled_ptr + n * 2 * P + P + pixels, (total * inv_c).to(out_ty), mask=pixel_ok)
    tl.store(idx_ptr + n * P + pixels, best_at, mask=pixel_ok)


def apply_gates_kernel(x_ptr, s_ptr, sp_ptr, out_ptr, C, P, x_sn, x_sc, x_sp, o_sn, o_sc, o_sp,
                       HAS_SPATIAL: tl.constexpr, Y: tl.constexpr, ACC: tl.constexpr,
                       BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """out = x * s_c (SE), or out = (x * s_c, rounded to ``Y``) * sp_p (CBAM's two gates in one pass)."""
    n = tl.program_id(2).to(tl.int64)
    pixels = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    channels = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    pixel_ok = pixels < P
    channel_ok = channels < C
    ok = channel_ok[:, None] & pixel_ok[None, :]
    x = tl.load(x_ptr + n * x_sn + channels[:, None] * x_sc + pixels[None, :] * x_sp, mask=ok, other=0.0)
    s = tl.load(s_ptr + n * C + channels, mask=channel_ok, other=0.0)
    out = x.to(ACC) * s.to(ACC)[:, None]
    if HAS_SPATIAL:
        sp = tl.load(sp_ptr + n * P + pixels, mask=pixel_ok, other=0.0)
        out = out.to(Y).to(ACC) * sp.to(ACC)[None, :]
    tl.store(out_ptr + n * o_sn + channels[:, None] * o_sc + pixels[None, :] * o_sp,
             out.to(out_ptr.dtype.element_ty), mask=ok)


def cbam_backward_reduce_kernel(g_ptr, x_ptr, s_ptr, sp_ptr, grad_sp_ptr, partial_ptr, C, P,
                                g_sn, g_sc, g_sp, x_sn, x_sc, x_sp,
                                Y: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """One read of grad and x for both reductions that CBAM's backward can take at once.

    Per pixel: grad_sp_p = sum_c grad * y (y = x * s_c rounded to ``Y``), the spatial map's
    gradient. Per channel, over this program's pixels: sum_p grad * sp_p * x, the part of the
    channel scale's gradient that comes through the output, written to partial[n, block, c]
    (summed over the blocks by the caller: no atomics, so the result is deterministic).
    """
    n = tl.program_id(1).to(tl.int64)
    block = tl.program_id(0)
    blocks = tl.num_programs(0)
    pixels = block * BLOCK_P + tl.arange(0, BLOCK_P)
    pixel_ok = pixels < P
    sp = tl.load(sp_ptr + n * P + pixels, mask=pixel_ok, other=0.0).to(ACC)
    total = tl.full([BLOCK_P], 0.0, dtype=ACC)
    for start in range(0, C, BLOCK_C):
        channels = start + tl.arange(0, BLOCK_C)
        channel_ok = channels < C
        ok = channel_ok[:, None] & pixel_ok[None, :]
        g = tl.load(g_ptr + n * g_sn + channels[:, None] * g_sc + pixels[None, :] * g_sp, mask=ok, other=0.0).to(ACC)
        x = tl.load(x_ptr + n * x_sn + channels[:, None] * x_sc + pixels[None, :] * x_sp, mask=ok, other=0.0).to(ACC)
        s = tl.load(s_ptr + n * C + channels, mask=channel_ok, other=0.0).to(ACC)
        total += tl.sum(g * (x * s[:, None]).to(Y).to(ACC), axis=0)
        tl.store(partial_ptr + (n * blocks + block) * C + channels, tl.sum(g * x * sp[None, :], axis=1),
                 mask=channel_ok)
    tl.store(grad_sp_ptr + n * P + pixels, total, mask=pixel_ok)


def input_grad_kernel(g_ptr, s_ptr, sp_ptr, dmax_ptr, dmean_ptr, idx_ptr, a_ptr, b_ptr, pidx_ptr, out_ptr,
                      C, P, g_sn, g_sc, g_sp, o_sn, o_sc, o_sp,
                      HAS_SPATIAL: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """The input's whole gradient in one pass.

    SE: grad_x = g * s_c + a_c (a: the squeeze's gradient, already divided by the pixel count).
    CBAM: grad_y = g * sp_p + dmax_p [c == idx_p] + dmean_p (the spatial gate's pooled
    gradients), then grad_x = grad_y * s_c + a_c + b_c [p == pidx_c] (the channel gate's
    average- and max-pooled gradients).
    """
    n = tl.program_id(2).to(tl.int64)
    pixels = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    channels = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    pixel_ok = pixels < P
    channel_ok = channels < C
    ok = channel_ok[:, None] & pixel_ok[None, :]
    g = tl.load(g_ptr + n * g_sn + channels[:, None] * g_sc + pixels[None, :] * g_sp, mask=ok, other=0.0).to(ACC)
    s = tl.load(s_ptr + n * C + channels, mask=channel_ok, other=0.0).to(ACC)
    a = tl.load(a_ptr + n * C + channels, mask=channel_ok, other=0.0).to(ACC)
    if HAS_SPATIAL:
        row = n * P + pixels
        sp = tl.load(sp_ptr + row, mask=pixel_ok, other=0.0).to(ACC)
        dmax = tl.load(dmax_ptr + row, mask=pixel_ok, other=0.0).to(ACC)
        dmean = tl.load(dmean_ptr + row, mask=pixel_ok, other=0.0).to(ACC)
        idx = tl.load(idx_ptr + row, mask=pixel_ok, other=-1)
        grad_y = g * sp[None, :] + dmean[None, :] + tl.where(channels[:, None] == idx[None, :], dmax[None, :], 0.0)
        b = tl.load(b_ptr + n * C + channels, mask=channel_ok, other=0.0).to(ACC)
        pidx = tl.load(pidx_ptr + n * C + channels, mask=channel_ok, other=-1)
        grad = grad_y * s[:, None] + a[:, None] + tl.where(pixels[None, :] == pidx[:, None], b[:, None], 0.0)
    else:
        grad = g * s[:, None] + a[:, None]
    tl.store(out_ptr + n * o_sn + channels[:, None] * o_sc + pixels[None, :] * o_sp,
             grad.to(out_ptr.dtype.element_ty), mask=ok)
