"""Parameter and multiply-accumulate counts for any model and input size.

MACs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and
matrix multiplies; FLOPs / 2), the convention of the CBAM/BAM papers, which call the
figure "GFLOPs". Element-wise work (BN, activations, pooling, gating) is not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class Complexity:
    params: int
    macs: int
    input_size: tuple[int, int, int]

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def gflops(self) -> float:
        """Multiply-accumulates in units of 1e9, reported as "GFLOPs" by the papers."""
        return self.macs / 1e9


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224)) -> int:
    """MACs of one forward pass on a single image of ``input_size`` (C, H, W), in eval mode.

    Runs on the device of the model's parameters; a model built under
    ``torch.device("meta")`` is counted without any real computation.
    """
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_size, device=device))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def measure(model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224)) -> Complexity:
    """Parameters and MACs of ``model`` for one image of ``input_size``."""
    return Complexity(count_params(model), count_macs(model, input_size), tuple(input_size))


def block_overheads(depth: int = 50, network_type: str = "ImageNet", input_size: tuple[int, int, int] = (3, 224, 224),
                    placements: tuple[str, ...] | None = None, extra_blocks: tuple[str, ...] = ()) -> list[dict]:
    """What each block known by name (built-in, registered, entry points) and each of ``extra_blocks`` (import
    paths, "mypkg.gates:MyGate") adds to a plain ResidualNet, at each placement it takes (meta device).

    One dict per (block, placement): ``att_type``, ``placement``, ``default`` (the block's own
    place), ``params``/``macs`` of the whole net and ``added_params``/``added_gflops`` over the plain
    net, with the block's default options.
    """
    from .models import ResidualNet
    from .models.attention import ATTENTION_BLOCKS, block_class, block_placements, canonical_name

    def build(att_type: str, placement: str = "default") -> Complexity:
        with torch.device("meta"):
            model = ResidualNet(network_type, depth, None, att_type, att_placement=placement)
        return measure(model, input_size)

    plain = build("none")
    rows = []
    names = dict.fromkeys([*ATTENTION_BLOCKS, *(canonical_name(block) for block in extra_blocks)])
    for name in names:
        block = block_class(name)
        for placement in block_placements(name):
            if placements is not None and placement not in placements:
                continue
            measured = build(name, placement)
            rows.append({"att_type": name, "placement": placement, "default": placement == block.placement,
                         "params": measured.params, "macs": measured.macs,
                         "added_params": measured.params - plain.params,
                         "added_gflops": (measured.macs - plain.macs) / 1e9})
    return rows
