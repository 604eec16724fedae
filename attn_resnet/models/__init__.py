"""Attention ResNets: ``ResidualNet("CIFAR10", 50, 10, "CBAM")``; no Hydra needed."""

from .attention import ATTENTION_BLOCKS, attention_choices, build_attention
from .attention.fused import set_fused
from .resnet import DEPTHS, NETWORK_TYPES, BasicBlock, Bottleneck, ResNet, ResidualNet

__all__ = [
    "ATTENTION_BLOCKS",
    "DEPTHS",
    "NETWORK_TYPES",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "ResidualNet",
    "attention_choices",
    "build_attention",
    "set_fused",
]
