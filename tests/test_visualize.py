"""Seeing attention: TensorBoard images and histograms from training, and scripts/visualize_attention.py."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from attn_resnet.app import train
from attn_resnet.engine.attention_logging import has_attention_maps
from attn_resnet.models import ResidualNet
from attn_resnet.visualize import (RecordedMap, block_of, jet, last_spatial_per_stage, record_attention,
                                   spatial_heat, stage_of, stage_overlays)

from helpers import compose_train, run_script

DIGITS = ["experiment=digits", "trainer.epochs=1", "data.train_subset=300", "data.val_subset=100",
          "trainer.progress=false"]


@pytest.fixture(scope="module")
def cbam_run(module_tmp):
    run = module_tmp("cbam_run")
    train(compose_train(DIGITS + ["model.att_type=CBAM", "trainer.attention_maps_every=1",
                                  "trainer.attention_maps_images=6"]), run)
    return run


def test_tensorboard_holds_attention_images_and_channel_histograms(cbam_run):
    events = EventAccumulator(str(cbam_run), size_guidance={"images": 0, "histograms": 0})
    events.Reload()
    assert sorted(events.Tags()["images"]) == [f"attention/stage{i}" for i in range(1, 5)]
    assert sorted(events.Tags()["histograms"]) == [f"attention_channel/stage{i}" for i in range(1, 5)]
    for tag in events.Tags()["images"]:
        (image,) = events.Images(tag)
        assert image.step == 1 and (image.height, image.width) == (16, 6 * 16)  # 6 images of 16x16 in a row
        pixels = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)))
        assert pixels.std() > 5  # not a constant picture
    for tag in events.Tags()["histograms"]:
        (histogram,) = events.Histograms(tag)
        values = histogram.histogram_value
        assert values.num > 0 and 0 <= values.min <= values.max <= 1  # sigmoid weights


def test_a_plain_model_logs_no_attention_images(tmp_path):
    assert not has_attention_maps(ResidualNet("CIFAR10", 18, 10, "none"))
    train(compose_train(DIGITS + ["model.att_type=none", "trainer.attention_maps_every=1"]), tmp_path)
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    events.Reload()
    assert events.Tags()["images"] == []


def write_images(folder):
    rng = np.random.default_rng(0)
    paths = [folder / "photo_a.png", folder / "photo_b.jpg"]
    Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(paths[0])
    Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(paths[1])
    return paths


def test_visualize_attention_writes_overlays_and_grad_cam(cbam_run, tmp_path):
    paths = write_images(tmp_path)
    checkpoint = cbam_run / "checkpoints" / "last.pt"
    result = run_script("scripts/visualize_attention.py", [str(checkpoint), *map(str, paths),
                                                           "--output", str(tmp_path / "out")])
    assert result.returncode == 0, result.stderr
    narrow = run_script("scripts/visualize_attention.py", [str(checkpoint), str(paths[0]), "--no-gradcam",
                                                           "--output", str(tmp_path / "narrow")])
    assert narrow.returncode == 0, narrow.stderr
    widths = []
    for folder, name in ((tmp_path / "out", "photo_a"), (tmp_path / "out", "photo_b"), (tmp_path / "narrow", "photo_a")):
        with Image.open(folder / f"{name}_attention.png") as figure:
            pixels = np.asarray(figure.convert("RGB")).astype(float)
            assert figure.height >= 200 and pixels.std() > 20  # drawn, not blank
            widths.append(figure.width)
    # input + 4 stage overlays + Grad-CAM, against the same without Grad-CAM
    assert widths[0] == widths[1] and widths[2] < widths[0]
    assert widths[0] == pytest.approx(widths[2] * 6 / 5, rel=0.02)


def test_visualize_attention_refuses_bad_inputs_clearly(cbam_run, tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    result = run_script("scripts/visualize_attention.py", [str(foreign), str(write_images(tmp_path)[0])])
    assert result.returncode == 2 and "not an attn-resnet training checkpoint" in result.stderr
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    result = run_script("scripts/visualize_attention.py", [str(cbam_run / "checkpoints" / "last.pt"), str(broken)])
    assert result.returncode == 2 and "cannot read image" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("att_type,needle", [("Nope", "Unknown att_type 'Nope'"), ("SE", "do not fit the model")])
def test_a_model_that_cannot_be_built_is_one_line_as_in_predict(cbam_run, tmp_path, att_type, needle):
    checkpoint = torch.load(cbam_run / "checkpoints" / "last.pt", weights_only=True)
    checkpoint["model_spec"]["att_type"] = att_type  # an unknown block; a known one the weights do not fit
    torch.save(checkpoint, tmp_path / "edited.pt")
    image = str(write_images(tmp_path)[0])
    for script, args in (("scripts/visualize_attention.py", ["--no-gradcam", "--output", str(tmp_path / "out")]),
                         ("scripts/predict.py", [])):
        result = run_script(script, [str(tmp_path / "edited.pt"), image, *args])
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (script, result.stderr[-2000:])
        assert lines[0].startswith("Error: ") and needle in lines[0], (script, lines)
    assert not (tmp_path / "out").exists()


def test_record_attention_sees_every_tap_and_restores_the_mode():
    model = ResidualNet("CIFAR10", 18, 10, "CBAM").train()
    maps = record_attention(model, torch.randn(3, 3, 32, 32))
    assert model.training
    assert sum(item.kind == "spatial" for item in maps) == 8 and sum(item.kind == "channel" for item in maps) == 8
    assert {item.stage for item in maps} == {"stage1", "stage2", "stage3", "stage4"}
    spatial = [item for item in maps if item.kind == "spatial"]
    assert [tuple(item.value.shape) for item in spatial[::2]] == [(3, 1, 32, 32), (3, 1, 16, 16), (3, 1, 8, 8),
                                                                  (3, 1, 4, 4)]
    overlays = stage_overlays(torch.randn(3, 3, 32, 32), maps)
    assert list(overlays) == ["stage1", "stage2", "stage3", "stage4"]
    assert all(grid.shape == (3, 3, 32, 32) and 0 <= grid.min() and grid.max() <= 1 for grid in overlays.values())


def test_names_map_to_stages_and_blocks():
    assert stage_of("layer2.1.attn.spatial_gate.spatial_map") == "stage2"
    assert stage_of("stage_attn.0.spatial_map") == "stage1" and stage_of("head_attn.spatial_map") == "head"
    assert block_of("layer3.0.post_attn.gate.map") == "layer3.0.post_attn"
    assert block_of("layer3.0.attn.spatial_map") == "layer3.0.attn"
    assert block_of("stage_attn.2.spatial_map") == "stage_attn.2" and block_of("head_attn.map") == "head_attn"


def test_one_axis_maps_combine_into_their_outer_product():
    height = torch.tensor([0.0, 1.0, 2.0]).view(1, 1, 3, 1)
    width = torch.tensor([1.0, 3.0]).view(1, 1, 1, 2)
    items = [RecordedMap("layer1.0.attn.h_map", "spatial", height), RecordedMap("layer1.0.attn.w_map", "spatial", width)]
    (stage_items,) = last_spatial_per_stage(items).values()
    assert len(stage_items) == 2  # both taps of the one block
    from attn_resnet.visualize import _combined

    heat = spatial_heat(_combined(stage_items), (3, 2))
    expected = height[0, 0] * width[0, 0]
    torch.testing.assert_close(heat[0], expected / expected.max())


def test_jet_runs_from_blue_to_red():
    colours = jet(torch.tensor([[[0.0, 0.5, 1.0]]]))[0, :, 0]  # (3 channels, 3 values)
    assert colours[:, 0].argmax() == 2 and colours[:, 2].argmax() == 0  # low: blue; high: red
    assert colours[1, 1] == 1  # middle: green


@pytest.mark.parametrize("placement,prefix", [("head", "head_attn."), ("stage", "stage_attn.")])
def test_a_residual_type_block_trains_at_the_head_and_after_stages(tmp_path, placement, prefix):
    from attn_resnet.engine.checkpoint import load_training_checkpoint

    summary = train(compose_train(DIGITS + ["model.att_type=CBAM", f"model.att_placement={placement}",
                                            "trainer.attention_maps_every=0"]), tmp_path)
    assert summary["status"] == "completed"
    checkpoint = load_training_checkpoint(tmp_path / "checkpoints" / "last.pt")
    state = checkpoint["model"]
    attention_keys = [key for key in state if ".attn." in key or key.startswith(("head_attn", "stage_attn"))]
    assert attention_keys and all(key.startswith(prefix) for key in attention_keys)
    # The reference init zeroes CBAM's spatial-gate BN weight; training moved it: the block learned.
    gates = [state[key] for key in attention_keys if key.endswith("spatial_gate.bn.weight")]
    assert gates and all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in gates)
    assert checkpoint["model_spec"]["att_placement"] == placement


def _visualize_script():
    from attn_resnet.commands import visualize

    return visualize


def test_figure_names_keep_images_with_the_same_name_apart(tmp_path):
    names = _visualize_script().figure_names
    # Distinct base names: the base name alone, as before.
    assert names([tmp_path / "a" / "cat.jpg", tmp_path / "b" / "dog.png"]) == ["cat_attention.png", "dog_attention.png"]
    # The same base name in two folders: the parent folder goes in front, only for those.
    assert names([tmp_path / "cat" / "0000.jpg", tmp_path / "dog" / "0000.jpg", tmp_path / "dog" / "0001.jpg"]) == [
        "cat_0000_attention.png", "dog_0000_attention.png", "0001_attention.png"]
    # The same parent name too: as many folders as it takes.
    assert names([tmp_path / "x" / "val" / "0.png", tmp_path / "y" / "val" / "0.png"]) == [
        "x_val_0_attention.png", "y_val_0_attention.png"]
    # The same folder and name, another extension: the extension tells them apart.
    assert names([tmp_path / "a.png", tmp_path / "a.jpg"]) == ["a_png_attention.png", "a_jpg_attention.png"]
    # Whatever the rule gives, no two figures share a file.
    tricky = [tmp_path / "cat" / "0.png", tmp_path / "dog" / "0.png", tmp_path / "cat_0.png"]
    assert len(set(names(tricky))) == 3


def test_visualize_attention_writes_one_figure_per_image_even_with_the_same_name(cbam_run, tmp_path):
    (cat, dog) = [tmp_path / "images" / folder for folder in ("cat", "dog")]
    cat.mkdir(parents=True), dog.mkdir()
    rng = np.random.default_rng(1)
    for folder in (cat, dog):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(folder / "0000.jpg")
    output = tmp_path / "out"
    result = run_script("scripts/visualize_attention.py", [str(cbam_run / "checkpoints" / "last.pt"),
                                                           str(cat / "0000.jpg"), str(dog / "0000.jpg"),
                                                           "--no-gradcam", "--output", str(output)])
    assert result.returncode == 0, result.stderr
    written = sorted(path.name for path in output.iterdir())
    assert written == ["cat_0000_attention.png", "dog_0000_attention.png"]
    assert sorted(result.stdout.split()) == sorted(str(output / name) for name in written)  # each printed once


def test_visualize_attention_never_overwrites_a_figure_silently(cbam_run, tmp_path):
    image = write_images(tmp_path)[0]
    output = tmp_path / "out"
    output.mkdir()
    existing = output / "photo_a_attention.png"
    existing.write_bytes(b"an earlier figure")
    args = [str(cbam_run / "checkpoints" / "last.pt"), str(image), "--no-gradcam", "--output", str(output)]
    refused = run_script("scripts/visualize_attention.py", args)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert str(existing) in refused.stderr and "--overwrite" in refused.stderr
    assert existing.read_bytes() == b"an earlier figure"
    replaced = run_script("scripts/visualize_attention.py", args + ["--overwrite"])
    assert replaced.returncode == 0, replaced.stderr
    with Image.open(existing) as figure:
        assert figure.width > 100


def test_a_histogram_of_non_finite_attention_weights_does_not_stop_the_run(tmp_path, caplog):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from attn_resnet.engine.loggers import RunInfo, TensorBoardLogger

    logger = TensorBoardLogger()
    logger.start(RunInfo(tmp_path, "run"), None)
    logger.log_histogram("attention_channel/all_nan", torch.full((4, 8), float("nan")), 1)  # raised "empty" before
    logger.log_histogram("attention_channel/some_nan", torch.tensor([0.25, float("nan"), 0.75, float("inf")]), 1)
    logger.writer.flush()
    events = EventAccumulator(str(tmp_path), size_guidance={"histograms": 0})
    events.Reload()
    assert events.Tags()["histograms"] == ["attention_channel/some_nan"]
    (kept,) = events.Histograms("attention_channel/some_nan")
    assert kept.histogram_value.num == 2 and kept.histogram_value.min == 0.25 and kept.histogram_value.max == 0.75
    assert "none of its 32 values is finite" in caplog.text
