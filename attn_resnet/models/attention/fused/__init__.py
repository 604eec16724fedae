"""Fused Triton kernels for SE's and CBAM's gates, and the choice between them and the eager path.

Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018; Woo et al., "CBAM", ECCV 2018:
the formulas are the blocks' own (``se.py``, ``cbam.py``); only the passes over the
(N, C, H, W) activation are fused. Full-size tensors read plus written in one train step of a
block (the MLP, CBAM's 7x7 conv and BN and everything else of size N x C or N x H x W left
out), and the kernels that touch them:

==============  ===================================  ==================================
                 eager (ATen ops, torch 2.14, CPU)    fused (Triton kernels)
==============  ===================================  ==================================
SE forward       3 in 2 ops                           3 in 2 kernels
SE backward      8 in 4 ops                           4 in 2 kernels
CBAM forward     8 in 6 ops                           4 in 3 kernels
CBAM backward   27 in 13 ops                          5 in 3 kernels
==============  ===================================  ==================================

The eager counts are what ``FullSizeTraffic`` in ``tests/test_fused_kernels.py`` counts for
the eager blocks (the input's gradient returned, not accumulated); that test also checks that
the fused path runs no full-size ATen op and launches exactly the kernels named here. SE forward:
squeeze (read x), scale (read x, write out); backward: sum over the pixels of grad * x (read
both), then grad_x = grad * s + the squeeze's gradient (read grad, write grad_x). CBAM forward:
the average and max pools with the max's position (read x); the spatial gate's input, the max
and mean over the channels of y = x * channel scale (read x: y is never stored); out = y *
spatial map (read x, write out). CBAM backward: the spatial map's gradient and the part of the
scale's gradient that comes through the output (read grad and x); the rest of the scale's
gradient, through the channel max and mean (read x); the whole input gradient (read grad, write
grad_x). The small parts between the kernels are PyTorch ops on (N, C) and (N, 2, H, W)
tensors. Ties of a max send its gradient to the first maximum (the lowest pixel index h * W +
w, or the lowest channel), as the eager ``max_pool2d`` and ``torch.max`` do.

``model.fused`` (``ResidualNet(fused=...)``, or ``set_fused``) chooses per forward call:
"auto" fuses CUDA inputs when Triton is importable, True always fuses (on the CPU only under
Triton's interpreter, ``TRITON_INTERPRET=1`` set before Triton is imported: slow, for tests),
False never does. In a process started with ``TRITON_INTERPRET=1`` every launch is
interpreted, CUDA tensors' too, as Triton does. Under ``torch.compile``, ``torch.export`` and
TorchScript tracing the blocks take the eager path, which the compiler then fuses itself: the
kernels are not traced. The parameters are the same either way, so checkpoints do not depend
on the choice. A NaN in the input gives a NaN output on both paths, but the max pools may then
send their gradient to another element than the eager path's.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from ....config.choices import FUSED_CHOICES  # the one list, torch-free for the config checks
from . import ops



class FusedKernelError(RuntimeError):
    """The fused kernels were asked for (``fused=True``) where they cannot run."""


def check_fused(value) -> None:
    """ValueError unless ``value`` is one of ``FUSED_CHOICES`` ("auto", True or False)."""
    if not any(value is choice if isinstance(choice, bool) else value == choice for choice in FUSED_CHOICES):
        raise ValueError(f"fused={value!r} is not a choice: use 'auto' (fused kernels on CUDA when Triton is "
                         f"importable, eager otherwise), True (always fused) or False (always eager).")


@functools.cache
def triton_available() -> bool:
    """True when Triton can be imported (it comes with PyTorch's Linux CUDA wheels)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _tracing() -> bool:
    """True while torch.compile, torch.export or TorchScript traces: they see the eager formula."""
    compiler = torch.compiler
    exporting = getattr(compiler, "is_exporting", lambda: False)()
    return compiler.is_compiling() or exporting or torch.jit.is_tracing() or torch.jit.is_scripting()


def use_fused(mode, x: torch.Tensor) -> bool:
    """Whether a block set to ``mode`` runs its fused kernels on ``x``; FusedKernelError when True cannot be kept."""
    if mode is False or _tracing():
        return False
    device = x.device.type
    if mode == "auto":
        return device == "cuda" and triton_available()
    if device not in ("cuda", "cpu"):
        return False  # e.g. the meta device, where nothing is computed: the eager path gives the shapes
    if not triton_available():
        raise FusedKernelError("fused=True (model.fused=true) asks for the fused Triton kernels, but Triton cannot "
                               "be imported here. Install it (pip install triton; PyTorch's Linux CUDA wheels bring "
                               "it) or use fused='auto' or False for the eager path.")
    if device == "cpu" and not ops.interpreter_loaded():
        late = (" TRITON_INTERPRET=1 is set, but Triton was imported before it was set (importing torchvision "
                "imports it), and Triton reads it only then: set it in the environment that starts Python."
                if ops.interpreting() else "")
        raise FusedKernelError("fused=True (model.fused=true) asks for the fused Triton kernels, but the input is on "
                               "the CPU, where Triton kernels run only in Triton's interpreter: start Python with the "
                               "environment variable TRITON_INTERPRET=1 (slow, meant for tests), or use fused='auto' "
                               f"(fused on CUDA, eager on the CPU) or False (always eager).{late}")
    return True


def set_fused(model: nn.Module, mode) -> nn.Module:
    """Set ``mode`` ("auto", True or False) on every block of ``model`` that has fused kernels; returns ``model``."""
    check_fused(mode)
    for module in model.modules():
        if isinstance(getattr(type(module), "fused", None), (str, bool)):
            module.fused = mode
    return model


def se_gate(x: torch.Tensor, block: nn.Module) -> torch.Tensor:
    """An ``SE`` block's output through the fused kernels."""
    from .gates import se_gate

    return se_gate(x, block)


def cbam_gates(x: torch.Tensor, block: nn.Module) -> torch.Tensor:
    """A ``CBAM`` block's output through the fused kernels."""
    from .gates import cbam_gates

    return cbam_gates(x, block)


__all__ = ["FusedKernelError", "cbam_gates", "check_fused", "se_gate", "set_fused",
           "triton_available", "use_fused"]
