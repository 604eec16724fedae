"""attn-resnet: config-driven training and evaluation of attention-augmented ResNets."""

__version__ = "0.1.0"
