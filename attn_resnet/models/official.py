"""Load the CBAM/BAM authors' released checkpoints into our ``ResidualNet``.

The authors' ``train_imagenet.py`` saves ``{"epoch", "arch", "state_dict", "best_prec1",
"optimizer"}`` with DataParallel's ``module.`` prefix on every key. Their parameter names
differ from ours only inside the attention blocks; ``official_to_ours`` maps them.
"""

from __future__ import annotations

import _compat_pickle
import io
import os
import pickle
import pickletools
import re
import zipfile
from collections import Counter
from typing import IO, Any, Mapping

import torch
from torch import nn

from .attention import ATTENTION_BLOCKS, NO_ATTENTION
from .resnet import DEPTHS, BasicBlock, Bottleneck

# (reference pattern, our replacement), applied in order to a key without "module.".
_OFFICIAL_TO_OURS = [
    (r"\.cbam\.ChannelGate\.mlp\.1\.", ".attn.channel_gate.mlp.0."),
    (r"\.cbam\.ChannelGate\.mlp\.3\.", ".attn.channel_gate.mlp.2."),
    (r"\.cbam\.SpatialGate\.spatial\.(conv|bn)\.", r".attn.spatial_gate.\1."),
    (r"^bam([123])\.", lambda m: f"stage_attn.{int(m.group(1)) - 1}."),
    (r"\.channel_att\.gate_c\.gate_c_fc_0\.", ".channel_gate.fc1."),
    (r"\.channel_att\.gate_c\.gate_c_bn_1\.", ".channel_gate.bn."),
    (r"\.channel_att\.gate_c\.gate_c_fc_final\.", ".channel_gate.fc2."),
    (r"\.spatial_att\.gate_s\.gate_s_conv_reduce0\.", ".spatial_gate.conv_reduce."),
    (r"\.spatial_att\.gate_s\.gate_s_bn_reduce0\.", ".spatial_gate.bn_reduce."),
    (r"\.spatial_att\.gate_s\.gate_s_conv_di_(\d+)\.", r".spatial_gate.conv_dilated.\1."),
    (r"\.spatial_att\.gate_s\.gate_s_bn_di_(\d+)\.", r".spatial_gate.bn_dilated.\1."),
    (r"\.spatial_att\.gate_s\.gate_s_conv_final\.", ".spatial_gate.conv_final."),
]

def _rename(key: str, rules) -> str:
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key)
    return key


def official_to_ours(key: str) -> str:
    """Our parameter name for a key of the authors' ResidualNet (``module.`` prefix allowed)."""
    return _rename(key.removeprefix("module."), _OFFICIAL_TO_OURS)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


# Opcodes that push a str; STACK_GLOBAL takes its module and name from the last two.
_STRING_OPCODES = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING",
                   "STRING"}
_SCAN_BYTES = 16 * 2**20  # a checkpoint's pickles are small (tensor data lies beside them); bound the scan


def _global_name(module: str, name: str) -> str:
    """``module.name`` as Python 3 (and torch's allowlist) spells it: protocol 2 writes ``__builtin__.set``."""
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}"


def _globals_in_pickles(stream: IO[bytes], count: int) -> list[str]:
    """The globals (``module.name``) the first ``count`` pickles in ``stream`` reference; nothing is run."""
    names: list[str] = []
    for _ in range(count):
        memo: dict[int, str | None] = {}
        strings: list[str | None] = []  # the str pushes since the last other opcode
        try:
            for opcode, arg, _ in pickletools.genops(stream):
                if opcode.name in ("GLOBAL", "INST"):
                    names.append(_global_name(*arg.split(" ", 1)))
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2 and None not in strings[-2:]:
                    names.append(_global_name(strings[-2], strings[-1]))
                if opcode.name in _STRING_OPCODES:
                    strings.append(arg)
                elif opcode.name in ("GET", "BINGET", "LONG_BINGET"):
                    strings.append(memo.get(arg))
                elif opcode.name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
                    memo[len(memo) if opcode.name == "MEMOIZE" else arg] = strings[-1] if strings else None
                else:
                    strings.clear()
        except Exception:  # noqa: BLE001 - the end of the readable pickles, whatever the damage
            break
    return names


def _foreign_globals_in(path: str) -> list[str]:
    """The globals in a checkpoint's pickles that torch's safe loader refuses (none if it cannot tell)."""
    try:
        from torch import _weights_only_unpickler as unpickler  # private; without it, rely on torch's message

        allowed = set(unpickler._get_allowed_globals()) | set(unpickler._get_user_allowed_globals())
        if zipfile.is_zipfile(path):  # torch.save's format: the object pickle is <archive>/data.pkl
            with zipfile.ZipFile(path) as archive:
                pickles = [archive.open(name).read(_SCAN_BYTES) for name in archive.namelist() if name.endswith(".pkl")]
            names = [name for data in pickles for name in _globals_in_pickles(io.BytesIO(data), count=1)]
        else:  # the legacy format: five pickles in a row (magic, protocol, sys info, object, storage keys)
            with open(path, "rb") as handle:
                head = handle.read(_SCAN_BYTES)
            names = _globals_in_pickles(io.BytesIO(head), count=5) if head.startswith(pickle.PROTO) else []
    except Exception:  # noqa: BLE001 - a scan that fails only means fewer names in the message
        return []
    return [name for name in names if name not in allowed]


def _torch_reason(error: Exception) -> str:
    """The first line of torch's error that describes the file, not how to load it unsafely."""
    advice = ("weights_only", "weights only", "safe_globals", "documentation", "file an issue")
    for line in str(error).splitlines():
        line = line.strip().removeprefix("WeightsUnpickler error:").strip()
        if re.search("[A-Za-z]{3}", line) and not any(word in line.lower() for word in advice):
            return line.split(". ")[0][:200]
    return ""


def read_checkpoint(path: str | os.PathLike) -> Any:
    """``torch.load`` with ``weights_only=True``, and a clear error for a corrupt, unreadable or unsafe file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"Checkpoint file {path!r} does not exist. Check the path.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure means the file is unusable
        # torch names the first global it refused ("Unsupported global: GLOBAL posix.system ..." or
        # "Trying to load unsupported GLOBAL posix.system ..."); a scan of the pickles finds the rest,
        # and finds them too where torch stopped earlier (e.g. at a pickle protocol it cannot read).
        refused = re.findall(r"GLOBAL\s+([\w.]*\w)", str(error)) + _foreign_globals_in(path)
        refused = list(dict.fromkeys(refused))
        if refused:
            shown = ", ".join(refused[:5]) + (f" and {len(refused) - 5} more" if len(refused) > 5 else "")
            message = (
                f"Checkpoint {path!r} was not loaded: it references Python globals that a plain checkpoint "
                f"never contains ({shown}), and loading it could run arbitrary code. A plain checkpoint "
                f"holds only tensors and simple containers (dicts, lists, numbers, strings). Get a plain "
                f"state_dict checkpoint from a trusted source; if you wrote the file yourself, re-save "
                f"the weights with torch.save(model.state_dict(), path) from the code that made it."
            )
        elif isinstance(error, OSError) and error.strerror:
            message = f"Could not read checkpoint {path!r}: {error.strerror}. Check its permissions and the disk."
        else:
            reason = _torch_reason(error)
            message = (
                f"Could not read checkpoint {path!r} ({os.path.getsize(path):,} bytes): the file is corrupt "
                f"or truncated, or not a PyTorch checkpoint at all{f' ({reason})' if reason else ''}. "
                f"Re-copy it or re-download it (compare its size or checksum with the original), or "
                f"pass the right file."
            )
        raise CheckpointError(message) from None


def extract_state_dict(checkpoint: Any) -> dict[str, torch.Tensor]:
    """The tensors of a training checkpoint or bare state_dict, with ``module.`` prefixes removed."""
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping):
        checkpoint = checkpoint["state_dict"]
    elif isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("model"), Mapping):
        checkpoint = checkpoint["model"]
    if not isinstance(checkpoint, Mapping) or not checkpoint:
        raise CheckpointError(
            f"Checkpoint holds a {type(checkpoint).__name__}, not a state_dict: expected a dict of "
            f"tensors, or a dict with one under 'state_dict' (as the authors' train_imagenet.py saves)."
        )
    bad = [key for key, value in checkpoint.items() if not isinstance(value, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"Checkpoint state_dict has {len(bad)} entries that are not tensors (e.g. {bad[0]!r}); "
            f"it is not a model state_dict."
        )
    return {str(key).removeprefix("module."): value for key, value in checkpoint.items()}


def _attention_in(state: Mapping[str, torch.Tensor], prefix: str) -> str | None:
    """Which registered block (if any) the keys under ``prefix`` belong to."""
    suffixes = {key[len(prefix):] for key in state if key.startswith(prefix)}
    if not suffixes:
        return None
    for name, block in ATTENTION_BLOCKS.items():
        with torch.device("meta"):
            reference = set(block(256).state_dict())
        if suffixes == reference:
            return name
    return "unknown attention"


def describe_state_dict(state: Mapping[str, torch.Tensor]) -> str:
    """A one-line guess of the architecture a state_dict (in our key names) belongs to."""
    stem = state.get("conv1.weight")
    stem_name = "unknown stem"
    if stem is not None and stem.dim() == 4:
        stem_name = {7: "ImageNet stem", 3: "CIFAR stem"}.get(stem.shape[-1], f"{stem.shape[-1]}x{stem.shape[-1]} stem")
    blocks = Counter()
    for key in state:
        match = re.match(r"layer([1-4])\.(\d+)\.", key)
        if match:
            blocks[int(match.group(1))] = max(blocks[int(match.group(1))], int(match.group(2)) + 1)
    layers = tuple(blocks[i] for i in range(1, 5))
    block_type = Bottleneck if "layer1.0.conv3.weight" in state else BasicBlock
    depth = next((d for d, spec in DEPTHS.items() if spec == (block_type, layers)), None)
    depth_name = f"depth {depth}" if depth else f"unknown depth (blocks per stage {list(layers)})"
    attention = _attention_in(state, "layer1.0.attn.") or _attention_in(state, "stage_attn.0.") or NO_ATTENTION
    fc = state.get("fc.weight")
    classes = f"{fc.shape[0]} classes" if fc is not None else "no fc layer"
    return f"ResidualNet({stem_name}, {depth_name}, {classes}, att_type={attention})"


def load_official(model: nn.Module, checkpoint: Any) -> nn.Module:
    """Load the authors' checkpoint (path or loaded object; wrapped or bare; prefixed or not) strictly.

    Raises ``CheckpointError`` naming what the checkpoint looks like and what the model is
    when they do not match.
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = read_checkpoint(checkpoint)
    state = {official_to_ours(key): value for key, value in extract_state_dict(checkpoint).items()}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [
        key for key in expected if key in state and tuple(state[key].shape) != tuple(expected[key].shape)
    ]
    if missing or unexpected or wrong_shape:
        found, wanted = describe_state_dict(state), describe_state_dict(expected)
        detail = (
            f"It looks like {found}, but the model is {wanted}."
            if found != wanted
            else f"Both look like {wanted}, yet the keys differ"
        )
        examples = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape))
            if keys
        )
        raise CheckpointError(
            f"Checkpoint does not fit the model. {detail} ({examples}). Build the model with the "
            f"checkpoint's network type, depth, class count and att_type."
        )
    model.load_state_dict(state, strict=True)
    return model
