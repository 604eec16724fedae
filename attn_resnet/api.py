"""The Python API, usable without Hydra: build a named model, load a trained one.

``create_model("resnet50_cbam", num_classes=7, pretrained="weights.safetensors")``,
``create_model("resnext50_32x4d_cbam")``,
``list_models()`` and ``load_checkpoint("outputs/.../best.pt")`` (a training checkpoint or an
exported safetensors file) -> ``(model, ModelInfo)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .architectures import ARCHITECTURES
from .attention_registry import NO_ATTENTION, attention_names, canonical_attention
from .config.choices import WEIGHT_CHOICES
from .dataset_registry import IMAGENET_MEAN, IMAGENET_STD, stem_of
from .models.official import CheckpointError
from .models.resnet import DEPTHS, ResidualNet
from .models.weights_file import WEIGHTS_VERSION, is_our_weights, is_safetensors, read_weights



@dataclass
class ModelInfo:
    """What a loaded model expects and what it was: its classes, input normalisation and size, and origin."""

    model_spec: dict[str, Any]
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: tuple[int, int]
    weights: str                      # "model" or "ema": which weights of a training checkpoint were loaded
    source: str                       # the file
    source_format: str                # "checkpoint" (a training checkpoint) or "safetensors"
    config: dict[str, Any] = field(default_factory=dict)  # the training run's resolved config, when known
    epoch: int | None = None

    @property
    def num_classes(self) -> int:
        return int(self.model_spec["num_classes"])


def _build(spec: dict[str, Any]) -> nn.Module:
    from .build import build_model

    return build_model(dict(spec))


def _input_info(spec: dict[str, Any], saved: dict[str, Any] | None) -> dict[str, Any]:
    saved = dict(saved or {})
    imagenet = stem_of(spec["network_type"]) == "imagenet"
    size = saved.get("image_size") or ([224, 224] if imagenet else [32, 32])
    return {
        "class_names": [str(name) for name in saved.get("class_names") or range(int(spec["num_classes"]))],
        # ImageNet's statistics when a file does not say (the usual pretraining data of either stem).
        "mean": tuple(float(v) for v in saved.get("mean") or IMAGENET_MEAN),
        "std": tuple(float(v) for v in saved.get("std") or IMAGENET_STD),
        "image_size": (int(size[0]), int(size[-1])),
    }


def _training_weights(checkpoint: dict, weights: str, source: str) -> tuple[dict, str]:
    average = (checkpoint.get("callbacks") or {}).get("ema")
    if weights == "ema" and average is None:
        raise CheckpointError(
            f"weights='ema', but {source} holds no weight average: its run was trained without "
            f"trainer.ema_decay. Load its trained weights with weights='model' (or 'auto')."
        )
    if weights in ("ema", "auto") and average is not None:
        return average["weights"], "ema"
    return checkpoint["model"], "model"


def load_checkpoint(path: str | os.PathLike, weights: str = "auto",
                    map_location: str | torch.device = "cpu") -> tuple[nn.Module, ModelInfo]:
    """Rebuild and load a trained model from a training checkpoint or an exported safetensors file.

    ``weights``: "auto" (the weight average when the run kept one, since its metrics and best.pt
    were measured on it; else the trained weights) | "model" | "ema". The model is returned in
    eval mode on ``map_location``. Files are read with ``weights_only=True`` or as safetensors;
    a foreign, corrupt or unsafe file raises ``CheckpointError``.
    """
    from .engine.checkpoint import load_training_checkpoint

    if weights not in WEIGHT_CHOICES:
        raise ValueError(f"weights={weights!r} is not valid. Valid choices: {', '.join(WEIGHT_CHOICES)}.")
    source = os.fspath(path)
    if is_safetensors(source):
        state, metadata = read_weights(source)
        if not is_our_weights(metadata):
            raise CheckpointError(
                f"{source!r} is a safetensors file without attn-resnet's header (format "
                f"{metadata.get('format')!r}), so the architecture it holds is unknown. Build the model "
                f"yourself and load it with create_model(name, pretrained={source!r}), or pass a file "
                f"written by scripts/export.py --format safetensors."
            )
        if int(metadata.get("version", 1)) > WEIGHTS_VERSION:
            raise CheckpointError(f"{source!r} was written by a newer attn-resnet (weights file version "
                                  f"{metadata['version']}); upgrade the package to read it.")
        spec, saved_input, config, epoch, chosen, fmt = metadata["model_spec"], metadata.get("input"), {}, None, \
            "model", "safetensors"
    else:
        checkpoint = load_training_checkpoint(source)
        spec, saved_input = dict(checkpoint["model_spec"]), checkpoint.get("input")
        state, chosen = _training_weights(checkpoint, weights, source)
        config, epoch, fmt = checkpoint.get("config") or {}, checkpoint.get("epoch"), "checkpoint"
    model = _build(spec)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(
            f"{source!r}: its weights do not fit the model it describes ({str(error).splitlines()[0]}). "
            f"The file was edited or is damaged; use the file the run wrote, or re-export it from that one."
        ) from None
    model.to(map_location).eval()
    info = ModelInfo(model_spec=dict(spec), weights=chosen, source=source, source_format=fmt, config=config,
                     epoch=epoch, **_input_info(spec, saved_input))
    return model, info


# ------------------------------------------------------------------- named models
def _networks() -> dict[str, dict[str, Any]]:
    """Every network by name, with what it sets: ``resnet<depth>`` and the widened and grouped ones."""
    return {**{f"resnet{depth}": {"depth": depth} for depth in DEPTHS}, **ARCHITECTURES}


def list_models() -> list[str]:
    """Every name ``create_model`` takes: ``[cifar_]<network>[_{block}]``, blocks lower-case, networks
    ``resnet{18,34,50,101}``, ``wide_resnet18_{1.5,2}`` and ``resnext{50,101}_32x4d``."""
    blocks = [name for name in attention_names() if name != NO_ATTENTION]
    names = []
    for prefix in ("", "cifar_"):
        for network in _networks():
            names.append(f"{prefix}{network}")
            names += [f"{prefix}{network}_{block.lower()}" for block in blocks]
    return names


def parse_model_name(name: str) -> dict[str, Any]:
    """``"cifar_resnet18_cbam"`` -> ``{"network_type": "CIFAR10", "depth": 18, "att_type": "CBAM"}``;
    a widened or grouped network adds its shape (``"resnext50_32x4d"``: ``cardinality=32, width_per_group=4``)."""
    text = str(name).lower()
    rest = text.removeprefix("cifar_")
    for network, settings in _networks().items():
        if rest == network or rest.startswith(network + "_"):
            block = canonical_attention(rest[len(network) + 1:]) if rest != network else NO_ATTENTION
            if block is not None:
                return {"network_type": "CIFAR10" if text.startswith("cifar_") else "ImageNet", **settings,
                        "att_type": block}
    import difflib

    close = difflib.get_close_matches(text, list_models(), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(
        f"Unknown model name {name!r}.{hint} Names are [cifar_]<network>[_<block>] with the network resnet<depth> "
        f"(depth {'/'.join(map(str, DEPTHS))}) or one of {', '.join(ARCHITECTURES)}, and a registered block "
        f"({', '.join(attention_names()[1:])}); list_models() lists them all."
    )


def create_model(name: str, *, num_classes: int | None = None, pretrained: str | os.PathLike | None = None,
                 pretrained_format: str = "auto", att_type: Any = None, **options: Any) -> nn.Module:
    """Build a named network, e.g. ``create_model("resnet50_cbam", num_classes=7)``.

    ``att_type``: the block, for a name without one (``create_model("cifar_resnet18", att_type=MyGate)``):
    a block class of one's own, its import path ("mypkg.gates:MyGate") or any registered name.
    ``options``: ``ResidualNet``'s keyword options (``att_placement``, ``drop_path``, ...) and the
    block's own (``reduction=8``); a shape option (``width``, ``cardinality``, ``width_per_group``)
    given here wins over the name's. ``pretrained``: a file to start from (this project's checkpoint or
    weights file, the authors' release, a torchvision or timm ResNet state dict; nothing is
    downloaded): the tensors that fit are loaded, blocks the file lacks keep their initialisation,
    and the classifier is new when ``num_classes`` differs from the file's.
    """
    spec = parse_model_name(name)
    if att_type is not None:
        if spec["att_type"] != NO_ATTENTION:
            raise ValueError(f"create_model({name!r}, att_type=...) names two blocks: the name's "
                             f"{spec['att_type']} and att_type's. Give the block once: a name without one "
                             f"(e.g. {name.rsplit('_', 1)[0]!r}) with att_type=, or the name alone.")
        spec["att_type"] = att_type
    shape = {key: value for key, value in spec.items() if key not in ("network_type", "depth", "att_type")}
    model = ResidualNet(spec["network_type"], spec["depth"], num_classes, spec["att_type"], **{**shape, **options})
    if pretrained is not None:
        from .models.transfer import load_pretrained

        model.transfer_report = load_pretrained(model, pretrained, pretrained_format)
    return model
