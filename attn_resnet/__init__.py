"""attn-resnet: config-driven training and evaluation of attention-augmented ResNets.

The Python API (no Hydra needed): ``create_model``, ``list_models`` and ``load_checkpoint``
(see ``attn_resnet.api``); for extending it from outside the package, ``register_block``,
``register_dataset``, ``register_optimizer``, ``register_schedule``, ``AttentionMap``, ``Callback`` and
``Logger`` (docs/extending.md, docs/logging.md). They are imported on first use, so that ``import attn_resnet``
alone (as the config validation does) does not import torch.
"""

__version__ = "0.1.0"

_API = ("create_model", "list_models", "load_checkpoint", "ModelInfo")
# Extending from outside the package (docs/extending.md): the block registry and the map tap.
_EXTENDING = {"register_block": "attention_registry", "AttentionMap": "models.attention.base",
              "Callback": "engine.callbacks", "Logger": "engine.loggers.base", "register_dataset": "dataset_registry",
              "register_optimizer": "optim_registry", "register_schedule": "optim_registry"}
__all__ = ["__version__", *_API, *_EXTENDING]


def __getattr__(name: str):
    import importlib

    if name in _API:
        return getattr(importlib.import_module(".api", __name__), name)
    if name in _EXTENDING:
        return getattr(importlib.import_module(f".{_EXTENDING[name]}", __name__), name)
    raise AttributeError(f"module 'attn_resnet' has no attribute {name!r}")
