"""attn-resnet: config-driven training and evaluation of attention-augmented ResNets.

The Python API (no Hydra needed): ``create_model``, ``list_models`` and ``load_checkpoint``
(see ``attn_resnet.api``). They are imported on first use, so that ``import attn_resnet``
alone (as the config validation does) does not import torch.
"""

__version__ = "0.1.0"

_API = ("create_model", "list_models", "load_checkpoint", "ModelInfo")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'attn_resnet' has no attribute {name!r}")
