"""scripts/predict.py: top-k classes of real image files as the model was evaluated, unreadable files listed."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from attn_resnet import load_checkpoint
from attn_resnet.app import train
from attn_resnet.predict import find_images, predict

from helpers import compose_train, run_script


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A digits model over three of the digits, in a new order: class names "7", "1", "4"."""
    run = tmp_path_factory.mktemp("run")
    train(compose_train(["data=digits", "data.image_size=16", "data.classes=[7,1,4]", "data.train_subset=60",
                         "data.batch_size=20", "trainer.epochs=1", "trainer.progress=false", "model.depth=18"]), run)
    return run / "checkpoints" / "best.pt"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """PNG, JPEG, grayscale, RGBA, palette, a corrupt and a truncated file, one in a sub-folder."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "colour.png")
    Image.fromarray(rgb).save(folder / "colour.jpg", quality=95)
    (folder / "sub").mkdir()
    Image.fromarray(rng.integers(0, 256, (30, 30), dtype=np.uint8), mode="L").save(folder / "sub" / "gray.png")
    rgba = np.dstack([rgb, np.full((20, 24), 255, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(folder / "alpha.png")
    Image.fromarray(rgb).convert("P").save(folder / "palette.gif")
    (folder / "corrupt.jpg").write_bytes(b"this is no image")
    whole = (folder / "colour.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    (folder / "notes.txt").write_text("not an image")
    return folder


def _reference(model, info, path):
    """The probabilities by hand: RGB, resized to the input size, scaled to 0..1, (x - mean) / std."""
    image = Image.open(path).convert("RGB").resize(info.image_size[::-1], Image.BILINEAR)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
    normalised = (pixels - torch.tensor(info.mean)[:, None, None]) / torch.tensor(info.std)[:, None, None]
    with torch.no_grad():
        return model(normalised[None]).softmax(1)[0]


def test_predictions_equal_a_hand_computation_and_bad_files_are_listed(checkpoint, images):
    model, info = load_checkpoint(checkpoint)
    assert info.class_names == ["7", "1", "4"] and info.image_size == (16, 16)
    paths = find_images([images])
    assert [p.name for p in paths] == ["alpha.png", "colour.jpg", "colour.png", "corrupt.jpg", "palette.gif",
                                       "gray.png", "truncated.jpg"]
    results = {p.path.split("/")[-1]: p for p in predict(model, info, paths, topk=2, batch_size=3)}
    assert "cannot identify image file" in results["corrupt.jpg"].error and results["corrupt.jpg"].top is None
    assert results["truncated.jpg"].error and "truncated" in results["truncated.jpg"].error.lower()
    for name in ("alpha.png", "colour.png", "palette.gif", "gray.png", "colour.jpg"):
        top = results[name].top
        path = next(p for p in paths if p.name == name)
        reference = _reference(model, info, path)
        values, indices = reference.topk(2)
        assert [index for index, _, _ in top] == indices.tolist(), name
        assert [class_name for _, class_name, _ in top] == [info.class_names[i] for i in indices.tolist()]
        assert np.allclose([value for _, _, value in top], values.tolist(), rtol=0, atol=1e-5), name
        assert top[0][2] >= top[1][2]


def test_flip_tta_averages_the_image_and_its_mirror(checkpoint, images):
    model, info = load_checkpoint(checkpoint)
    path = images / "colour.png"
    plain = predict(model, info, [path], topk=3)[0].top
    flipped_image = images / "mirror.png"
    Image.open(path).transpose(Image.FLIP_LEFT_RIGHT).save(flipped_image)
    mirrored = predict(model, info, [flipped_image], topk=3)[0].top
    averaged = predict(model, info, [path], topk=3, tta="flip")[0].top
    flipped_image.unlink()
    expected = {index: (value + dict((i, v) for i, _, v in mirrored)[index]) / 2 for index, _, value in plain}
    assert all(abs(value - expected[index]) < 1e-5 for index, _, value in averaged)


def test_the_command_writes_csv_and_json_and_exits_1_for_bad_files(checkpoint, images, tmp_path):
    result = run_script("scripts/predict.py", [str(checkpoint), str(images), "--topk", "5",
                                              "--output", str(tmp_path / "p.csv")])
    assert result.returncode == 1, result.stderr
    assert "could not be read" in result.stdout and "corrupt.jpg" in result.stdout
    assert "more than the model's 3 classes" in result.stderr
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert {row["path"].split("/")[-1] for row in rows} >= {"colour.png", "corrupt.jpg", "gray.png"}
    colour = [row for row in rows if row["path"].endswith("colour.png")]
    assert [row["rank"] for row in colour] == ["1", "2", "3"] and {row["class"] for row in colour} == {"7", "1", "4"}
    assert abs(sum(float(row["probability"]) for row in colour) - 1) < 1e-4
    again = run_script("scripts/predict.py", [str(checkpoint), str(images / "colour.png"),
                                             "--output", str(tmp_path / "p.csv")])
    assert again.returncode == 2 and "exists already" in again.stderr  # kept, not overwritten
    result = run_script("scripts/predict.py", [str(checkpoint), str(images / "colour.png"), str(images / "sub"),
                                              "--topk", "1", "--output", str(tmp_path / "p.json")])
    assert result.returncode == 0, result.stderr
    records = json.loads((tmp_path / "p.json").read_text())
    assert [len(r["predictions"]) for r in records] == [1, 1] and all(r["error"] is None for r in records)


def test_bad_arguments_exit_2_before_loading_anything(tmp_path):
    missing = run_script("scripts/predict.py", [str(tmp_path / "none.pt"), str(tmp_path)])
    assert missing.returncode == 2 and "No image files" in missing.stderr
    (tmp_path / "x.png").write_bytes(b"")
    wrong = run_script("scripts/predict.py", [str(tmp_path / "none.pt"), str(tmp_path), "--output", "p.txt"])
    assert wrong.returncode == 2 and ".csv or .json" in wrong.stderr
