"""scripts/export.py: ONNX (checked with onnxruntime), TorchScript (reloaded) and safetensors (rebuilt),
a dynamic batch axis, metadata for consumers, failures that name the block and write nothing."""

from __future__ import annotations

import json

import pytest
import torch

from attn_resnet import create_model, load_checkpoint
from attn_resnet.api import IMAGENET_MEAN, IMAGENET_STD, ModelInfo
from attn_resnet.app import train
from attn_resnet.export import METADATA_FILE, ExportError, export_model
from attn_resnet.models.attention import ATTENTION_BLOCKS, block_placements

from helpers import FAST, REPO, compose_train, run_script

BLOCKS = sorted(ATTENTION_BLOCKS)
QUICK = [("none", "default"), ("SE", "default"), ("CBAM", "default"), ("BAM", "default")]
EVERY = [(name, placement) for name in BLOCKS for placement in block_placements(name)]


def _model(block: str, placement: str, seed: int = 0):
    torch.manual_seed(seed)
    options = {} if block == "none" or placement == "default" else {"att_placement": placement}
    model = create_model("cifar_resnet18" + ("" if block == "none" else f"_{block.lower()}"), num_classes=3,
                         **options).eval()
    with torch.no_grad():  # non-trivial norm statistics, so that a mis-exported BN shows
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    spec = {"network_type": "CIFAR10", "depth": 18, "num_classes": 3, "att_type": block, "att_placement": placement}
    info = ModelInfo(model_spec=spec, class_names=["a", "b", "c"], mean=IMAGENET_MEAN, std=IMAGENET_STD,
                     image_size=(16, 16), weights="model", source="memory", source_format="checkpoint")
    return model, info


def _export_and_check(tmp_path, block, placement, fmt):
    model, info = _model(block, placement)
    output = tmp_path / f"{block}_{placement}.{'onnx' if fmt == 'onnx' else 'pt'}"
    report = export_model(None, fmt, output, model=model, info=info)
    assert output.is_file() and set(report.max_difference) == {1, 3}
    assert max(report.max_difference.values()) <= 1e-4
    return output, model


@pytest.mark.parametrize("block,placement", QUICK)
def test_onnx_export_matches_pytorch_in_onnxruntime_at_any_batch(tmp_path, block, placement):
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    output, model = _export_and_check(tmp_path, block, placement, "onnx")
    import onnxruntime

    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"] and session.get_outputs()[0].name == "logits"
    images = torch.randn(5, 3, 16, 16)  # a batch size the export never saw
    with torch.no_grad():
        expected = model(images)
    torch.testing.assert_close(torch.from_numpy(session.run(None, {"images": images.numpy()})[0]), expected,
                               rtol=1e-4, atol=1e-4)
    props = {p.key: json.loads(p.value) for p in onnx.load(str(output)).metadata_props}
    assert props["class_names"] == ["a", "b", "c"] and props["image_size"] == [16, 16]
    assert props["model_spec"]["att_type"] == block and props["mean"] == list(IMAGENET_MEAN)


@pytest.mark.parametrize("block,placement", QUICK)
def test_torchscript_export_reloads_and_matches(tmp_path, block, placement):
    output, model = _export_and_check(tmp_path, block, placement, "torchscript")
    extra = {METADATA_FILE: ""}
    loaded = torch.jit.load(str(output), _extra_files=extra)
    images = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images), rtol=0, atol=1e-5)
    assert json.loads(extra[METADATA_FILE])["class_names"] == ["a", "b", "c"]


@pytest.mark.slow
@pytest.mark.parametrize("block,placement", EVERY)
def test_every_block_and_placement_exports(tmp_path, block, placement):
    pytest.importorskip("onnxruntime")
    _export_and_check(tmp_path, block, placement, "onnx")
    _export_and_check(tmp_path, block, placement, "torchscript")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    train(compose_train(FAST + ["data.num_classes=3", "data.image_size=16", "model.att_type=CBAM"]), run)
    return run / "checkpoints" / "last.pt"


def test_safetensors_round_trip_and_the_command(trained, tmp_path):
    output = tmp_path / "model.safetensors"
    result = run_script("scripts/export.py", [str(trained), "--format", "safetensors", "--output", str(output)])
    assert result.returncode == 0, result.stderr
    assert "max |logit difference| 0 " in result.stdout
    model, info = load_checkpoint(trained)
    rebuilt, rebuilt_info = load_checkpoint(output)
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(rebuilt(images), model(images))
    assert rebuilt_info.class_names == info.class_names and rebuilt_info.model_spec == info.model_spec
    # The file is a starting point for a new run too.
    started = create_model("cifar_resnet18_cbam", num_classes=2, pretrained=output)
    assert started.transfer_report.head == "fc: 3 -> 2 classes, new"
    again = run_script("scripts/export.py", [str(trained), "--format", "safetensors", "--output", str(output)])
    assert again.returncode == 2 and "--overwrite" in again.stderr  # an existing file is kept


def test_an_exporter_failure_names_the_block_and_op_and_writes_nothing(tmp_path, monkeypatch):
    model, info = _model("CBAM", "default")

    def refuse(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::max_pool2d_with_indices' to ONNX is not supported")

    monkeypatch.setattr(torch.jit, "trace", refuse)
    with pytest.raises(ExportError) as error:
        export_model(None, "torchscript", tmp_path / "m.pt", model=model, info=info)
    message = str(error.value)
    assert "att_type=CBAM" in message and "aten::max_pool2d_with_indices" in message and "Nothing was written" in message
    assert list(tmp_path.iterdir()) == []


def test_an_export_past_the_tolerance_is_not_kept(tmp_path, monkeypatch):
    import attn_resnet.export as export

    model, info = _model("SE", "default")
    real = export._run_torchscript
    monkeypatch.setattr(export, "_run_torchscript", lambda path: (lambda images: real(path)(images) + 1e-3))
    with pytest.raises(ExportError, match="differs from PyTorch by up to 0.001"):
        export_model(None, "torchscript", tmp_path / "m.pt", model=model, info=info)
    assert list(tmp_path.iterdir()) == []


def test_bad_outputs_are_refused_before_any_work(tmp_path):
    with pytest.raises(ExportError, match="does not end in .onnx"):
        export_model(tmp_path / "missing.pt", "onnx", tmp_path / "m.pt")
    with pytest.raises(ExportError, match="does not exist"):
        export_model(tmp_path / "missing.pt", "onnx", tmp_path / "nowhere" / "m.onnx")


def test_exported_files_get_the_mode_of_checkpoints(trained, tmp_path):
    import os
    import stat

    from attn_resnet.engine.checkpoint import save_atomic

    previous = os.umask(0o027)
    try:
        save_atomic({"weights": torch.zeros(2)}, tmp_path / "checkpoint.pt")
        result = run_script("scripts/export.py", [str(trained), "--format", "safetensors", "--output",
                                                  str(tmp_path / "model.safetensors")])
        assert result.returncode == 0, result.stderr
        model, info = _model("SE", "default")
        export_model(None, "torchscript", tmp_path / "model.pt", model=model, info=info)
    finally:
        os.umask(previous)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in tmp_path.iterdir()}
    assert modes == {"checkpoint.pt": 0o640, "model.safetensors": 0o640, "model.pt": 0o640}, modes


def test_the_tolerance_is_relative_to_the_size_of_the_logits(tmp_path, monkeypatch):
    import attn_resnet.export as export

    model, info = _model("SE", "default")
    with torch.no_grad():
        model.fc.weight.mul_(1e4)  # logits in the thousands: float32 rounds them at about 1e-4 already
    real = export._run_torchscript
    # A runtime that sums in another order: the same logits to a relative 1e-6.
    monkeypatch.setattr(export, "_run_torchscript", lambda path: (lambda images: real(path)(images) * (1 + 1e-6)))
    report = export_model(None, "torchscript", tmp_path / "large.pt", model=model, info=info)
    assert max(report.max_difference.values()) > 1e-4 and (tmp_path / "large.pt").is_file()
    assert "relative" in report.describe()
    # The same relative error on small logits passes too; a relative error past the tolerance does not.
    small, info = _model("SE", "default")
    export_model(None, "torchscript", tmp_path / "small.pt", model=small, info=info)
    monkeypatch.setattr(export, "_run_torchscript", lambda path: (lambda images: real(path)(images) * (1 + 1e-3)))
    with pytest.raises(ExportError, match="relative"):
        export_model(None, "torchscript", tmp_path / "refused.pt", model=model, info=info)
    assert not (tmp_path / "refused.pt").exists()


def test_evaluate_reads_a_safetensors_export_as_it_reads_the_checkpoint(trained, tmp_path):
    export_model(trained, "safetensors", tmp_path / "model.safetensors")
    reference = run_script("evaluate.py", [f"checkpoint={trained}", f"hydra.run.dir={tmp_path / 'checkpoint'}"])
    assert reference.returncode == 0, reference.stderr[-2000:]
    # The export holds the model and its input normalisation, not the data settings: they are named here.
    data = ["data=synthetic", "data.num_classes=3", "data.image_size=16", "data.train_size=48", "data.val_size=16"]
    result = run_script("evaluate.py", [f"checkpoint={tmp_path / 'model.safetensors'}", *data,
                                        f"hydra.run.dir={tmp_path / 'export'}"])
    assert result.returncode == 0, result.stderr[-2000:]
    ours, exported = (json.loads((tmp_path / name / "eval.json").read_text()) for name in ("checkpoint", "export"))
    assert exported["images"] == ours["images"] == 16 and exported["acc1"] == ours["acc1"]
    assert exported["loss"] == pytest.approx(ours["loss"], rel=1e-5) and exported["model"] == ours["model"]
    # Without the data: one line that says what to add.
    missing = run_script("evaluate.py", [f"checkpoint={tmp_path / 'model.safetensors'}",
                                         f"hydra.run.dir={tmp_path / 'missing'}"])
    output = missing.stdout + missing.stderr
    assert missing.returncode == 1 and "Traceback" not in output
    assert "exported weights file" in output and "data=cifar10" in output, output[-2000:]


def _docs_onnx_snippet() -> str:
    """The documentation's example of running an ONNX export with onnxruntime alone (no torch), as a user
    copies it from docs/finetuning.md: the input is prepared from the file's metadata as training evaluated
    images. Run below against predict()."""
    text = (REPO / "docs" / "finetuning.md").read_text()
    block = text[text.index("### Running an ONNX export with onnxruntime"):]
    code = block[block.index("```python\n") + len("```python\n"):]
    return code[:code.index("```")]


ONNX_SNIPPET = _docs_onnx_snippet()


@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
def test_the_onnxruntime_example_predicts_what_predict_does(trained, tmp_path, stem):
    pytest.importorskip("onnxruntime")
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    from attn_resnet.predict import predict

    if stem == "cifar":  # a trained run's checkpoint, 16x16 inputs with its own normalisation
        model, info = load_checkpoint(trained)
    else:  # an ImageNet-stem network: resized and centre-cropped
        torch.manual_seed(1)
        model = create_model("resnet18_se", num_classes=3).eval()
        _, info = _model("SE", "default")
        info.model_spec, info.image_size = {**info.model_spec, "network_type": "ImageNet"}, (32, 32)
    export_model(None, "onnx", tmp_path / "model.onnx", model=model, info=info)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (45, 30, 3), dtype=np.uint8)).save(tmp_path / "cat.jpg")
    Image.fromarray(rng.integers(0, 256, (21, 40), dtype=np.uint8)).save(tmp_path / "dog.png")  # grayscale
    result = subprocess.run([sys.executable, "-c", ONNX_SNIPPET], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    expected = predict(model, info, [tmp_path / "cat.jpg", tmp_path / "dog.png"], topk=1)
    for line, prediction in zip(result.stdout.splitlines(), expected, strict=True):
        (index, name, probability), = prediction.top
        assert line == f"{prediction.path.rsplit('/', 1)[1]}: {name} ({probability:.2%})", (line, prediction)
