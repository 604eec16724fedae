"""Export a trained model to ONNX, TorchScript or safetensors, each checked against PyTorch before it is kept.

``export_model(checkpoint, fmt, output)`` rebuilds the model from a training checkpoint or a weights
file, writes the export to a temporary file beside ``output``, runs it on random inputs at two batch
sizes (which also proves the batch axis is free) and compares with the PyTorch model: ONNX through
onnxruntime, TorchScript reloaded with ``torch.jit.load``, safetensors rebuilt with
``load_checkpoint``. Only an export within ``tolerance`` replaces ``output``; nothing is left behind
otherwise. The tolerance is relative to the size of the logits (``relative_difference``): another
runtime's rounding grows with them, so a network with large logits is held to the same standard.
Every file carries what a consumer needs to feed the model: the class names, the input
normalisation and size, and the architecture (ONNX ``metadata_props``, a TorchScript extra file, the
safetensors header).

ONNX goes through ``torch.onnx.export(..., dynamo=True)`` (torch.export), with the batch dimension
declared dynamic: the TorchScript-based exporter cannot slice a batch of unknown size (CBAM's shared
MLP takes both pooled descriptors in one batch), the torch.export one can.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .api import ModelInfo, load_checkpoint
from .build import describe_spec
from .dataset_registry import DEFAULT_CROP_PCT
from .runfiles import usual_file_mode

FORMATS = ("onnx", "torchscript", "safetensors")
SUFFIXES = {"onnx": (".onnx",), "torchscript": (".pt", ".pth", ".ts", ".torchscript"),
            "safetensors": (".safetensors",)}
# fp32 on the CPU: another runtime sums in another order; ResNet-50 logits differ by ~1e-6 there.
# Relative to the logits' scale: the largest |logit|, or 1 when they are all smaller.
DEFAULT_TOLERANCE = 1e-4
DEFAULT_OPSET = 18
VERIFY_BATCHES = (1, 3)
ONNX_INSTALL = 'ONNX export needs the export extra: pip install -e ".[export]" (onnx, onnxruntime, onnxscript).'
METADATA_FILE = "attn_resnet.json"  # the TorchScript extra file with the metadata


class ExportError(RuntimeError):
    """An export that could not be written or did not match the PyTorch model; nothing was kept."""


@dataclass
class ExportReport:
    """What was written and how closely it matched PyTorch: per batch size, the max |difference| of the
    logits and the largest |logit| of PyTorch's."""

    output: Path
    format: str
    model: str
    max_difference: dict[int, float] = field(default_factory=dict)
    largest_logit: dict[int, float] = field(default_factory=dict)
    tolerance: float = DEFAULT_TOLERANCE

    @property
    def relative_difference(self) -> float:
        """The worst max |difference| over the logits' scale (the largest |logit|, or 1 when all are smaller)."""
        return max((difference / max(1.0, self.largest_logit.get(batch, 0.0))
                    for batch, difference in self.max_difference.items()), default=0.0)

    def comparison(self) -> str:
        worst = max(self.max_difference.values(), default=0.0)
        largest = max(self.largest_logit.values(), default=0.0)
        return (f"max |logit difference| {worst:.3g} with logits up to {largest:.3g}, {self.relative_difference:.3g} "
                f"relative (tolerance {self.tolerance:g})")

    def describe(self) -> str:
        batches = ", ".join(str(b) for b in self.max_difference)
        return (f"Wrote {self.output} ({self.format}, {self.model}); checked against PyTorch at batch sizes "
                f"{batches}: {self.comparison()}.")


def metadata(info: ModelInfo) -> dict[str, Any]:
    """What a consumer of the exported file needs: classes, normalisation, input size and preparation
    (``crop_pct``: an ImageNet-stem network's shorter side is resized to size / crop_pct, then centre-cropped),
    architecture."""
    crop_pct = (info.config.get("data") or {}).get("crop_pct") or DEFAULT_CROP_PCT
    return {"format": "attn-resnet-export", "model_spec": info.model_spec, "class_names": info.class_names,
            "mean": list(info.mean), "std": list(info.std), "image_size": list(info.image_size),
            "crop_pct": float(crop_pct),
            "input": "images: float32 (batch, 3, height, width), RGB scaled to 0..1 then (x - mean) / std",
            "output": "logits: float32 (batch, classes)"}


def _check_output(output: Path, fmt: str, overwrite: bool) -> None:
    if fmt not in FORMATS:
        raise ExportError(f"Unknown export format {fmt!r}. Valid choices: {', '.join(FORMATS)}.")
    if output.suffix.lower() not in SUFFIXES[fmt]:
        raise ExportError(f"--output {output} does not end in {' or '.join(SUFFIXES[fmt])}, the suffix of a "
                          f"{fmt} file; name it e.g. {output.with_suffix(SUFFIXES[fmt][0]).name}.")
    if output.exists() and not overwrite:
        raise ExportError(f"{output} exists already and is kept. Choose another --output, or pass --overwrite "
                          f"to replace it.")
    if not output.parent.is_dir():
        raise ExportError(f"The folder {output.parent} does not exist; create it or choose another --output.")


def _random_inputs(info: ModelInfo, batch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(batch)
    return torch.randn(batch, 3, *info.image_size, generator=generator)


def _failed_op(error: BaseException) -> str:
    """The operator an exporter names in its error, or its error's first line."""
    text = f"{error}"
    for pattern in (r"(aten::\w+(?:\.\w+)?)", r"(torch\.ops\.\w+\.\w+(?:\.\w+)?)", r"operator[:\s]+'?([\w.:]+)",
                    r"Unsupported[:\s]+([^\n]+)"):
        found = re.search(pattern, text)
        if found:
            return found.group(1).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def _block(info: ModelInfo) -> str:
    spec = info.model_spec
    return f"att_type={spec.get('att_type')}, att_placement={spec.get('att_placement', 'default')}"


def _write_onnx(model: nn.Module, info: ModelInfo, path: Path, opset: int | None) -> None:
    try:
        import onnx  # noqa: F401 - the exporter needs it, and onnxscript
        import onnxscript  # noqa: F401
    except ImportError:
        raise ExportError(ONNX_INSTALL) from None
    from torch.export import Dim

    example = _random_inputs(info, 2)
    argument = next(iter(inspect.signature(model.forward).parameters))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (example,), dynamo=True, input_names=["images"], output_names=["logits"],
                                    dynamic_shapes={argument: {0: Dim("batch", min=1, max=65536)}},
                                    opset_version=opset or DEFAULT_OPSET, verbose=False)
    program.save(str(path))
    import onnx

    proto = onnx.load(str(path))
    for key, value in metadata(info).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(proto, str(path))


def _run_onnx(path: Path) -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ExportError(ONNX_INSTALL) from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda images: torch.from_numpy(session.run(None, {name: images.numpy()})[0])


def _write_torchscript(model: nn.Module, info: ModelInfo, path: Path) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # deprecation notices and the input checks' tracer warnings
        traced = torch.jit.trace(model, _random_inputs(info, 2), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={METADATA_FILE: json.dumps(metadata(info))})


def _run_torchscript(path: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(str(path), map_location="cpu")
    return lambda images: loaded(images)


def _write_safetensors(model: nn.Module, info: ModelInfo, path: Path) -> None:
    from .models.weights_file import save_weights

    save_weights(path, model.state_dict(), info.model_spec,
                 {"class_names": info.class_names, "mean": list(info.mean), "std": list(info.std),
                  "image_size": list(info.image_size)})


def _run_safetensors(path: Path) -> Any:
    rebuilt, _ = load_checkpoint(path)
    return lambda images: rebuilt(images)


def export_model(checkpoint: str | os.PathLike, fmt: str, output: str | os.PathLike, *, weights: str = "auto",
                 opset: int | None = None, tolerance: float = DEFAULT_TOLERANCE, overwrite: bool = False,
                 model: nn.Module | None = None, info: ModelInfo | None = None) -> ExportReport:
    """Write ``checkpoint``'s model as ``fmt`` to ``output`` once it matches PyTorch within ``tolerance``
    (of the logits' scale: the largest |logit|, or 1 when all are smaller).

    ``model`` and ``info`` may be given instead of reading ``checkpoint`` (a model already loaded).
    Raises ``ExportError`` (nothing written) when the output is refused, the exporter fails (naming
    the block and the operator) or the export does not match.
    """
    output = Path(output)
    _check_output(output, fmt, overwrite)
    if model is None or info is None:
        model, info = load_checkpoint(checkpoint, weights=weights)
    model = model.float().eval().to("cpu")
    report = ExportReport(output=output, format=fmt, model=describe_spec(info.model_spec), tolerance=tolerance)
    handle, temporary = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(handle)
    temporary = Path(temporary)
    try:
        try:
            if fmt == "onnx":
                _write_onnx(model, info, temporary, opset)
            elif fmt == "torchscript":
                _write_torchscript(model, info, temporary)
            else:
                _write_safetensors(model, info, temporary)
        except ExportError:
            raise
        except Exception as error:  # noqa: BLE001 - any exporter failure is reported the same way
            raise ExportError(
                f"Exporting {report.model} ({_block(info)}) to {fmt} failed at {_failed_op(error)}: the exporter "
                f"cannot convert that operation of the block. Export another format (--format torchscript or "
                f"safetensors), or run the model in PyTorch. Nothing was written."
            ) from error
        run = {"onnx": _run_onnx, "torchscript": _run_torchscript, "safetensors": _run_safetensors}[fmt](temporary)
        with torch.no_grad():
            for batch in VERIFY_BATCHES:
                images = _random_inputs(info, batch)
                exported = run(images)
                if tuple(exported.shape) != (batch, info.num_classes):
                    raise ExportError(f"The {fmt} export of {report.model} gave logits of shape "
                                      f"{tuple(exported.shape)} for a batch of {batch}, expected {(batch, info.num_classes)}; "
                                      f"nothing was written.")
                reference = model(images)
                report.max_difference[batch] = float((exported.float() - reference).abs().max())
                report.largest_logit[batch] = float(reference.abs().max())
        if not report.relative_difference <= tolerance:
            raise ExportError(
                f"The {fmt} export of {report.model} ({_block(info)}) differs from PyTorch by up to "
                f"{max(report.max_difference.values()):.3g} in the logits ({report.comparison()}; batch sizes "
                f"{', '.join(map(str, VERIFY_BATCHES))}), so it was not kept. A larger --tolerance accepts it; "
                f"otherwise the exporter or runtime computes an operation of this block differently."
            )
        os.chmod(temporary, usual_file_mode())  # the mode of checkpoints, not mkstemp's 0600
        os.replace(temporary, output)
    finally:
        temporary.unlink(missing_ok=True)
    return report
