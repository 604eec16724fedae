"""torch.compile for the loop: one compiled callable per pass (train, eval), each with a cache of its own.

The model goes in as an argument, so its parameters are graph inputs and a callable never
captures one particular model. Train and eval passes differ in grad mode, module mode and
precision; compiled as separate callables, neither invalidates the other's graph.
"""

from __future__ import annotations

import types
from typing import Any, Callable

import torch

from ..config.choices import COMPILE_MODES  # the one list, torch-free for the config checks
# Modes that replay CUDA graphs on a GPU: the first call compiles, the second records the graph.
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def check_compile_mode(mode: str) -> str:
    if mode not in COMPILE_MODES:
        raise ValueError(f"trainer.compile_mode={mode!r} is not a torch.compile mode. "
                         f"Valid choices: {', '.join(COMPILE_MODES)}.")
    return mode


def _with_own_code(function: Callable) -> Callable:
    """A copy of ``function`` with a code object of its own.

    Dynamo keeps compiled graphs, and counts recompiles against its limit, per code object. Every
    compile of one function would share that cache: the next trainer in the process (a later job of
    a sweep, with another model) would recompile the first one's entries and, past the limit,
    silently run eagerly. A private code object gives each compiled callable its own cache.
    """
    copy = types.FunctionType(function.__code__.replace(), function.__globals__, function.__name__,
                              function.__defaults__, function.__closure__)
    copy.__kwdefaults__ = function.__kwdefaults__
    copy.__qualname__ = function.__qualname__
    return copy


def compile_pass(function: Callable, mode: str = "default") -> Callable:
    """``torch.compile(function, mode=mode)`` with its own cache; CUDA-graph modes mark each call a new step."""
    compiled = torch.compile(_with_own_code(function), mode=check_compile_mode(mode))
    if mode not in CUDA_GRAPH_MODES:
        return compiled

    def step(*args: Any, **kwargs: Any):
        # A new iteration begins: outputs of the previous replay may be overwritten from here on.
        torch.compiler.cudagraph_mark_step_begin()
        return compiled(*args, **kwargs)

    return step


def compiling_calls(mode: str, device: torch.device) -> int:
    """How many first calls of a compiled pass compile or record (and so are timed apart)."""
    return 2 if mode in CUDA_GRAPH_MODES and device.type == "cuda" else 1
