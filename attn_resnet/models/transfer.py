"""Start a network from pretrained weights: ours, the authors', torchvision's or timm's.

``load_pretrained(model, path, fmt="auto")`` reads the file safely (``weights_only=True`` or
safetensors), maps its key names onto ours, and loads every tensor that fits:

- the classifier is replaced (kept at its fresh initialisation) when its classes are not the
  model's: ``new_head="auto"`` compares the class names where the file and the caller both have
  them (a checkpoint or export of this project records them), and the class count otherwise;
  ``True`` always replaces it, ``False`` keeps it (refused when the count differs);
- attention blocks the file does not have keep their own initialisation (a CBAM network
  started from a plain torchvision ResNet-50);
- anything else that does not fit (another depth, stem or block, a block option that changes a
  shape) is a ``CheckpointError`` naming the keys and the likely cause; nothing is loaded then.

It returns a ``TransferReport``: which tensors were loaded, which are new, which of the file's
were ignored, and what happened to the classifier.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn

from ..config.choices import FREEZE_CHOICES, INIT_FORMATS, NEW_HEAD_CHOICES
from .official import CheckpointError, describe_state_dict, extract_state_dict, official_to_ours, read_checkpoint
from .weights_file import is_our_weights, is_safetensors, read_weights

log = logging.getLogger(__name__)

HEAD_KEYS = ("fc.weight", "fc.bias")
# Keys of the authors' release that no other format has (after "module." is removed).
_OFFICIAL_MARKERS = re.compile(r"\.cbam\.|^bam[123]\.")
_TIMM_MARKERS = re.compile(r"^layer\d\.\d+\.se\.")
_ATTENTION_KEY = re.compile(r"(^|\.)(attn|post_attn|head_attn)\.|^stage_attn\.")


@dataclass
class TransferReport:
    """What ``load_pretrained`` did: loaded / new / ignored tensor names, and the classifier's fate."""

    source: str
    format: str
    weights: str = "model"                         # for a training checkpoint: "model" or "ema"
    loaded: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)   # the model's tensors left at their initialisation
    ignored: list[str] = field(default_factory=list)  # the file's tensors not used
    head: str = "fc: loaded"

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary, with the new and ignored tensors grouped by module."""
        return {"source": self.source, "format": self.format, "weights": self.weights, "head": self.head,
                "loaded": len(self.loaded), "new": len(self.new), "ignored": len(self.ignored),
                "new_modules": _modules(self.new), "ignored_modules": _modules(self.ignored)}

    def describe(self) -> str:
        new = _modules(self.new)
        shown = ", ".join(new[:6]) + (f" and {len(new) - 6} more" if len(new) > 6 else "")
        return (f"Initialised from {self.source} ({self.format} format, {self.weights} weights): "
                f"{len(self.loaded)} tensors loaded, {len(self.new)} new{f' ({shown})' if new else ''}, "
                f"{len(self.ignored)} of the file's ignored; {self.head}.")


_BLOCK_OF_KEY = re.compile(r"^(.*?(?:(?:^|\.)(?:attn|post_attn|head_attn)|^stage_attn\.\d+))\.")


def _modules(keys: list[str]) -> list[str]:
    """The modules owning ``keys``, in order, once each: an attention block's tensors count as the block's."""
    owners = []
    for key in keys:
        block = _BLOCK_OF_KEY.match(key)
        owners.append(block.group(1) if block else key.rsplit(".", 1)[0])
    return list(dict.fromkeys(owners))


# -------------------------------------------------------------------------- reading
def _read(path: str) -> tuple[Any, dict[str, Any] | None]:
    """``(object, safetensors metadata or None)``: a safetensors file's tensors, or a safe torch.load."""
    if is_safetensors(path):
        return read_weights(path)
    return read_checkpoint(path), None


def _detect(obj: Any, metadata: dict[str, Any] | None, keys: list[str]) -> str:
    if metadata is not None and is_our_weights(metadata):
        return "ours"
    if isinstance(obj, Mapping) and obj.get("format") == "attn-resnet-checkpoint":
        return "ours"
    bare = [key.removeprefix("module.") for key in keys]
    if any(_OFFICIAL_MARKERS.search(key) for key in bare) or (
            isinstance(obj, Mapping) and "arch" in obj and "state_dict" in obj):
        return "official"
    if any(_TIMM_MARKERS.search(key) for key in bare):
        return "timm"
    if any(_ATTENTION_KEY.search(key) for key in bare):
        return "ours"
    return "torchvision"  # plain ResNet keys: torchvision's, timm's and ours are the same names


def _timm_to_ours(state: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's ResNet keys onto ours: its block attention ``se`` is our ``attn``; its SE is made of 1x1
    convs where ours has linear layers, so a (out, in, 1, 1) weight becomes (out, in)."""
    mapped = {}
    for key, value in state.items():
        ours = re.sub(r"^(layer\d\.\d+)\.se\.", r"\1.attn.", key)
        target = expected.get(ours)
        if (target is not None and value.dim() == 4 and target.dim() == 2 and value.shape[2:] == (1, 1)
                and value.shape[:2] == target.shape):
            value = value.flatten(1)
        mapped[ours] = value
    return mapped


def _class_names(obj: Any, metadata: Mapping[str, Any] | None) -> list[str] | None:
    """The class names a file records: a training checkpoint's or an export's "input" record; None for others."""
    record = (metadata or {}).get("input") if metadata is not None else (
        obj.get("input") if isinstance(obj, Mapping) and obj.get("format") == "attn-resnet-checkpoint" else None)
    names = record.get("class_names") if isinstance(record, Mapping) else None
    return [str(name) for name in names] if names else None


def read_pretrained(path: str | os.PathLike, fmt: str = "auto", weights: str = "auto",
                    expected: Mapping[str, torch.Tensor] | None = None
                    ) -> tuple[dict[str, torch.Tensor], str, str, list[str] | None]:
    """``(state dict in our key names, format, weights, class names or None)`` of a pretrained file; see
    ``load_pretrained``."""
    path = os.fspath(path)
    if fmt not in INIT_FORMATS:
        raise ValueError(f"Unknown weights format {fmt!r}. Valid choices: {', '.join(INIT_FORMATS)}.")
    obj, metadata = _read(path)
    chosen = "model"
    if isinstance(obj, Mapping) and obj.get("format") == "attn-resnet-checkpoint":
        average = (obj.get("callbacks") or {}).get("ema")
        if weights == "ema" and average is None:
            raise CheckpointError(f"{path!r} holds no weight average (its run had no trainer.ema_decay); "
                                  f"start from its trained weights instead (weights 'model' or 'auto').")
        if average is not None and weights in ("auto", "ema"):
            state, chosen = dict(average["weights"]), "ema"
        else:
            state = dict(obj["model"])
    else:
        state = extract_state_dict(obj)  # also removes DataParallel's "module." prefixes
    detected = _detect(obj, metadata, list(state))
    if fmt == "auto":
        fmt = detected
    if fmt == "official":
        state = {official_to_ours(key): value for key, value in state.items()}
    elif fmt == "timm":
        state = _timm_to_ours(state, expected or {})
    return state, fmt, chosen, _class_names(obj, metadata)


# -------------------------------------------------------------------------- loading
def _mismatch_error(source: str, fmt: str, state: Mapping[str, torch.Tensor], model: nn.Module,
                    problems: dict[str, list[str]]) -> CheckpointError:
    expected = model.state_dict()
    found, wanted = describe_state_dict(state), describe_state_dict(expected)
    causes = []
    stem_file, stem_model = state.get("conv1.weight"), expected.get("conv1.weight")
    stem_differs = stem_file is not None and stem_file.shape != stem_model.shape
    if stem_differs:
        causes.append(f"the file has a {stem_file.shape[-1]}x{stem_file.shape[-1]} stem and the model a "
                      f"{stem_model.shape[-1]}x{stem_model.shape[-1]} one (set data.stem=imagenet, or "
                      f"network_type='ImageNet' when building it, to use an ImageNet-stem file)")
    trunk = [key for keys in problems.values() for key in keys
             if not _ATTENTION_KEY.search(key) and key.split(" ")[0] not in HEAD_KEYS
             and not (stem_differs and key.startswith("conv1."))]
    if trunk:
        causes.append("another depth")
    elif any(_ATTENTION_KEY.search(key) for keys in problems.values() for key in keys):
        causes.append("another attention block, placement or block option (e.g. reduction)")
    detail = "; ".join(f"{label}: {', '.join(keys[:4])}{f' and {len(keys) - 4} more' if len(keys) > 4 else ''}"
                       for label, keys in problems.items() if keys)
    look = f"The file looks like {found}; the model is {wanted}." if found != wanted else \
        f"Both look like {wanted}, yet their tensors differ."
    return CheckpointError(
        f"Cannot initialise the model from {source} ({fmt} format): {look} Likely cause: "
        f"{' or '.join(dict.fromkeys(causes)) or 'another architecture'} ({detail}). Build the model with the "
        f"file's depth, stem and block (model.depth, data.stem, model.att_type and its options), or "
        f"pass the file that matches; model.init_from_format names the key convention if auto-detection "
        f"guessed wrong. Nothing was loaded."
    )


def _listed(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _head(fc_file: torch.Tensor | None, fc_model: torch.Tensor, new_head: bool | str, file_names: list[str] | None,
          class_names: list[str] | None, source: str) -> tuple[bool, str]:
    """Whether the file's classifier is replaced, and the report's words for what happened to it."""
    if not any(new_head is choice if isinstance(choice, bool) else new_head == choice for choice in NEW_HEAD_CHOICES):
        raise ValueError(f"Unknown new_head {new_head!r}. Valid choices: auto, true, false.")
    if fc_file is None or fc_file.dim() != 2 or fc_file.shape[1] != fc_model.shape[1]:
        return False, "fc: loaded"  # no head in the file (reported as new), or one that does not fit (an error)
    count, wanted = fc_file.shape[0], fc_model.shape[0]
    if count != wanted:
        if new_head is False:
            raise CheckpointError(f"model.new_head=false keeps the classifier of {source}, but it has {count} classes "
                                  f"and the model {wanted}. Use model.new_head=auto (a new classifier for the new "
                                  f"classes), or train on the file's {count} classes.")
        return True, f"fc: {count} -> {wanted} classes, new"
    differ = file_names is not None and class_names is not None and list(file_names) != list(class_names)
    why = (f"the file's classes ({_listed(file_names)}) are not this data's ({_listed(class_names)})"
           if differ else "")
    if new_head is True:
        return True, "fc: new (model.new_head=true)"
    if differ and new_head is False:
        return False, f"fc: loaded (model.new_head=false), although {why}"
    if differ:
        return True, f"fc: new, as {why}; model.new_head=false keeps it"
    return False, "fc: loaded"


def load_pretrained(model: nn.Module, path: str | os.PathLike, fmt: str = "auto", weights: str = "auto",
                    new_head: bool | str = "auto", class_names: list[str] | None = None) -> TransferReport:
    """Load the tensors of ``path`` that fit ``model``; see the module docstring for the rules.

    ``fmt``: "auto" | "ours" (our training checkpoint, exported safetensors or state_dict) |
    "official" (the CBAM/BAM authors' release) | "torchvision" | "timm" (a ResNet / SE-ResNet
    state_dict, ``.pth`` or ``.safetensors``). ``weights``: for our training checkpoints, "auto"
    (the weight average when the run kept one) | "model" | "ema". ``new_head`` ("auto" | True |
    False) and ``class_names`` (the model's classes, in order) decide whether the file's
    classifier is kept.
    """
    source = os.fspath(path)
    expected = model.state_dict()
    state, fmt, chosen, file_names = read_pretrained(source, fmt, weights, expected)
    report = TransferReport(source=source, format=fmt, weights=chosen)
    problems: dict[str, list[str]] = {"unexpected": [], "missing": [], "wrong shape": []}
    to_load: dict[str, torch.Tensor] = {}
    fc_file, fc_model = state.get("fc.weight"), expected["fc.weight"]
    head_new, report.head = _head(fc_file, fc_model, new_head, file_names,
                                  None if class_names is None else [str(name) for name in class_names], source)
    for key, value in state.items():
        target = expected.get(key)
        if key in HEAD_KEYS and head_new:
            report.ignored.append(key)
        elif target is None:
            problems["unexpected"].append(key)
        elif tuple(value.shape) != tuple(target.shape):
            problems["wrong shape"].append(f"{key} {tuple(value.shape)} vs {tuple(target.shape)}")
        else:
            to_load[key] = value
    for key in expected:
        if key in to_load:
            continue
        # Blocks the file lacks and counters an older file lacks start fresh; so does a head the file
        # does not have (a headless timm model) or one of other classes.
        fresh = _ATTENTION_KEY.search(key) or key.endswith("num_batches_tracked") or key in HEAD_KEYS
        if fresh and not (key in HEAD_KEYS and key in state and not head_new):
            report.new.append(key)
        elif key not in state:
            problems["missing"].append(key)
    if any(problems.values()):
        raise _mismatch_error(source, fmt, state, model, problems)
    if not to_load:
        raise CheckpointError(f"{source}: none of its tensors fit the model; it is not a ResNet state dict.")
    with torch.no_grad():
        for key, value in to_load.items():
            expected[key].copy_(value.to(expected[key].dtype))
    report.loaded = list(to_load)
    if fc_file is None:
        report.head = f"fc: {fc_model.shape[0]} classes, new (the file has no classifier)"
    return report


# -------------------------------------------------------------------------- freezing
def frozen_modules(model: nn.Module, upto: str) -> list[str]:
    """The top-level modules that ``freeze=upto`` stops training: the stem (conv1, bn1) and, for
    ``stageN``, stages 1..N with the stage attention on their outputs. The head (head attention, fc)
    always trains."""
    if upto not in FREEZE_CHOICES:
        raise ValueError(f"Unknown freeze choice {upto!r}. Valid choices: {', '.join(FREEZE_CHOICES)}.")
    if upto == "none":
        return []
    stages = 0 if upto == "stem" else int(upto.removeprefix("stage"))
    names = ["conv1", "bn1"]
    for stage in range(1, stages + 1):
        names.append(f"layer{stage}")
        if stage <= 3:
            names.append(f"stage_attn.{stage - 1}")
    return names


def freeze_(model: nn.Module, upto: str) -> list[nn.Module]:
    """Stop the parameters of ``frozen_modules(model, upto)`` training (``requires_grad=False``); returns
    the BatchNorm layers among them, whose running statistics a caller may keep fixed (eval mode)."""
    norms: list[nn.Module] = []
    for name in frozen_modules(model, upto):
        module = model.get_submodule(name)
        module.requires_grad_(False)
        norms += [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    return norms
