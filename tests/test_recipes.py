"""The open trainer and the recipe features, each against an independent formula.

Callbacks (order, counts, state through a checkpoint), the weight average (a hand recurrence),
test-time augmentation (logits averaged by hand), cutout (box areas, fill, every loader path the
same), and resuming a checkpoint written by the 0.1.0 release, before any of these keys existed.
"""

import gzip
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from attn_resnet.app import _check_trajectory, _checkpoint_weights
from attn_resnet.config.validate import ConfigError
from attn_resnet.data import DeviceImageLoader, build_loader
from attn_resnet.data.common import TensorImageDataset, cutout_fill, cutout_params
from attn_resnet.data.policies import AugmentSpec
from attn_resnet.data.sampler import mix_seed
from attn_resnet.engine.callbacks import Callback, CallbackList
from attn_resnet.engine.checkpoint import load_training_checkpoint
from attn_resnet.engine.ema import WeightAverage, ema_decay_at
from attn_resnet.engine.objectives import BatchMix, Objective, smooth_one_hot
from attn_resnet.engine.trainer import evaluate_model
from attn_resnet.engine.tta import tta_logits

from helpers import compose_train, run_script
from test_trainer_fast import BATCH, PreloadedLoader, counting_host_reads, fixed_batches, tiny_model
from attn_resnet.engine.optim import build_optimizer
from attn_resnet.engine.trainer import Trainer, TrainerSettings
from helpers import tiny_dataset

FIXTURE = Path(__file__).parent / "data" / "checkpoint_v0.1.0_epoch1.pt.gz"


def make_trainer(run_dir, model=None, *, train_size=3 * BATCH, val_size=2 * BATCH, classes=4, loader=None,
                 callbacks=None, objective=None, **settings) -> Trainer:
    """A CPU trainer of a tiny BatchNorm model on in-memory images (as test_trainer_fast's), with callbacks."""
    model = model if model is not None else tiny_model(classes)
    train_loader = loader or build_loader(tiny_dataset(train_size, classes), BATCH, train=True, num_workers=0)
    val_loader = build_loader(tiny_dataset(val_size, classes, seed=1, train=False), BATCH, train=False,
                              num_workers=0)
    return Trainer(model, build_optimizer(model, "sgd", 0.1, device="cpu"), lambda steps: (lambda step: 1.0),
                   train_loader, val_loader, TrainerSettings(**{"progress": False, **settings}), run_dir,
                   torch.device("cpu"), callbacks=callbacks, objective=objective)


# ------------------------------------------------------------------ callbacks
class Recorder(Callback):
    """Logs every hook call; keeps a counter as its checkpointed state."""

    name = "recorder"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.steps = 0

    def setup(self, trainer):
        self.calls.append("setup")

    def on_train_start(self, trainer):
        self.calls.append("train_start")

    def on_after_backward(self, trainer):
        # The group's gradients exist and the step has not been taken yet.
        assert all(p.grad is not None for p in trainer.model.parameters())
        self.calls.append(f"after_backward@{trainer.global_step}")

    def on_optimizer_step(self, trainer):
        self.steps += 1
        self.calls.append(f"step@{trainer.global_step}")

    def on_eval_start(self, trainer):
        self.calls.append("eval_start")

    def on_eval_end(self, trainer):
        self.calls.append("eval_end")

    def on_epoch_end(self, trainer, epoch, record):
        assert record is trainer.history[-1] and record["epoch"] == epoch
        self.calls.append(f"epoch_end{epoch}")

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"] if state else -1


def test_callbacks_are_called_in_order_and_their_state_travels_in_checkpoints(tmp_path):
    recorder = Recorder()
    trainer = make_trainer(tmp_path / "a", train_size=8, epochs=2, callbacks=[recorder])  # 2 steps per epoch
    trainer.fit()
    assert recorder.calls == [
        "setup", "train_start",
        "after_backward@0", "step@1", "after_backward@1", "step@2", "eval_start", "eval_end", "epoch_end1",
        "after_backward@2", "step@3", "after_backward@3", "step@4", "eval_start", "eval_end", "epoch_end2"]
    checkpoint = load_training_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    assert checkpoint["callbacks"] == {"recorder": {"steps": 4}}
    restored = Recorder()
    resumed = make_trainer(tmp_path / "b", train_size=8, epochs=2, callbacks=[restored])
    resumed.load_state_dict(checkpoint)
    assert restored.steps == 4
    old = dict(checkpoint)
    del old["callbacks"]  # a checkpoint from before callbacks: each callback is told there is nothing
    again = Recorder()
    make_trainer(tmp_path / "c", train_size=8, callbacks=[again]).load_state_dict(old)
    assert again.steps == -1


def test_two_callbacks_may_not_share_a_name():
    with pytest.raises(ValueError, match="share the name 'recorder'"):
        CallbackList([Recorder(), Recorder()])


# ------------------------------------------------------------ weight average
def test_ema_decay_warmup_is_the_tensorflow_num_updates_rule():
    assert ema_decay_at(0.999, 0, False) == 0.999
    assert [ema_decay_at(0.999, t, True) for t in (0, 1, 2)] == [1 / 10, 2 / 11, 3 / 12]
    assert ema_decay_at(0.9, 1000, True) == 0.9  # the ramp passes the decay, which then holds


@pytest.mark.parametrize("warmup", [False, True])
def test_the_average_follows_the_hand_recurrence_over_k_steps(warmup):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    average = WeightAverage(0.9, warmup=warmup)
    average.setup(SimpleNamespace(model=model))
    expected = {name: tensor.detach().clone().double() for name, tensor in model.state_dict().items()}
    for step in range(5):
        with torch.no_grad():
            for tensor in model.state_dict().values():  # new "trained" weights and statistics
                if tensor.is_floating_point():
                    tensor.add_(torch.randn_like(tensor))
                else:
                    tensor.add_(3)
        average.update(model)
        decay = min(0.9, (1 + step) / (10 + step)) if warmup else 0.9
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                expected[name] = decay * expected[name] + (1 - decay) * tensor.double()
            else:
                expected[name] = tensor.clone()  # integer buffers (BatchNorm's batch count) are copied
    averaged = average.module.state_dict()
    for name, value in expected.items():
        assert torch.allclose(averaged[name].double(), value.double(), atol=1e-6), name
    assert averaged["1.num_batches_tracked"].item() == 15
    assert average.updates == 5 and int(average.average.n_averaged) == 5


def test_the_average_is_validated_and_saved_beside_the_trained_weights(tmp_path):
    trainer = make_trainer(tmp_path, train_size=12, epochs=2, ema_decay=0.5)
    summary = trainer.fit()
    average = trainer.callbacks.callbacks[0]
    trained = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    assert not all(torch.equal(trained[k], v) for k, v in average.module.state_dict().items())
    # The reported metrics are the average's; the model holds the trained weights again afterwards.
    expected = evaluate_model(average.module, trainer.val_loader, trainer.device)
    assert summary["final"]["acc1"] == expected["acc1"]
    assert summary["final"]["loss"] == pytest.approx(expected["loss"], rel=1e-6)
    checkpoint = load_training_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert all(torch.equal(checkpoint["model"][k], trained[k]) for k in trained)
    state = checkpoint["callbacks"]["ema"]
    assert state["updates"] == 6 and state["decay"] == 0.5
    assert all(torch.equal(state["weights"][k], v) for k, v in average.module.state_dict().items())


def test_the_average_adds_no_host_read_to_a_step(tmp_path):
    reads = {}
    for count in (3, 9):
        trainer = make_trainer(tmp_path / str(count), loader=PreloadedLoader(fixed_batches(count)),
                               log_every_steps=100, ema_decay=0.9, ema_warmup=True)
        with counting_host_reads() as counted:
            trainer.train_epoch(0)
        reads[count] = counted
    assert reads[3] == reads[9] and len(reads[3]) == 1


def test_ema_decay_out_of_range_is_refused():
    with pytest.raises(ValueError, match=r"ema_decay=1.0 is not valid"):
        WeightAverage(1.0)


# --------------------------------------------------------- test-time augmentation
def _reflect_shift(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """The image moved by (dy, dx) pixels with the border reflected (numpy's own reflect padding)."""
    padded = np.pad(images, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    height, width = images.shape[-2:]
    return padded[:, :, 1 + dy:1 + dy + height, 1 + dx:1 + dx + width]


@pytest.mark.parametrize("channels_last", [False, True])
def test_tta_is_the_mean_of_the_views_logits(channels_last):
    model = tiny_model().eval()
    images = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    array = images.numpy()

    def logits(view: np.ndarray) -> torch.Tensor:
        return model(torch.from_numpy(np.ascontiguousarray(view))).detach()

    def mirrored(view: np.ndarray) -> torch.Tensor:
        return (logits(view) + logits(view[..., ::-1])) / 2

    with torch.no_grad():
        assert torch.equal(tta_logits(model, images, "none"), model(images))
        assert torch.allclose(tta_logits(model, images, "flip"), mirrored(array), atol=1e-6)
        by_hand = mirrored(array) / 2 + (mirrored(_reflect_shift(array, -1, -1))
                                         + mirrored(_reflect_shift(array, 1, 1))) / 4
        assert torch.allclose(tta_logits(model, images, "flip_translate"), by_hand, atol=1e-6)
    with pytest.raises(ValueError, match="flip_translate"):
        tta_logits(model, images, "rotate")


def test_evaluation_with_tta_reports_the_averaged_logits_metrics(tmp_path):
    trainer = make_trainer(tmp_path, tta="flip")
    images, targets = next(iter(trainer.val_loader))
    with torch.no_grad():
        averaged = (trainer.model.eval()(images) + trainer.model(images.flip(-1))) / 2
    loader = [(images, targets)]
    metrics = evaluate_model(trainer.model, loader, trainer.device, tta="flip")
    assert metrics["loss"] == pytest.approx(F.cross_entropy(averaged, targets).item(), rel=1e-6)
    assert metrics["acc1"] == pytest.approx(100.0 * (averaged.argmax(1) == targets).float().mean().item())
    assert trainer.evaluate(trainer.val_loader)["loss"] != evaluate_model(trainer.model, trainer.val_loader,
                                                                          trainer.device)["loss"]


# -------------------------------------------------------------------- cutout
def cifar_like(count: int = 16, size: int = 32, train: bool = True) -> TensorImageDataset:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=generator)
    labels = torch.arange(count) % 4
    return TensorImageDataset(images, labels, list("abcd"), (0.49, 0.48, 0.45), (0.25, 0.24, 0.26), train,
                              pad=4, flip=True)


@pytest.mark.parametrize(("cy", "cx", "area"), [(16, 16, 144), (0, 0, 6 * 6), (31, 5, 7 * 11), (2, 30, 8 * 8)])
def test_cutout_box_is_the_clipped_square_around_its_centre(cy, cx, area):
    seed = (cy << 41) | (cx << 52) | 12345  # the centre's bit fields; the crop's bits below are free
    y0, y1, x0, x1 = cutout_params(seed, 12, 32, 32)
    assert (y1 - y0) * (x1 - x0) == area
    assert (y0, x0) == (max(cy - 6, 0), max(cx - 6, 0))
    batch = cutout_params(torch.tensor([seed]), 12, 32, 32)
    assert tuple(int(v) for v in batch) == (y0, y1, x0, x1)


def test_cutout_paints_the_mean_colour_in_its_box_only_and_the_device_loader_matches_the_workers():
    dataset = cifar_like()
    plain = cifar_like()
    dataset.set_augment(AugmentSpec(cutout=12))
    fill = cutout_fill(dataset.mean)
    assert fill.tolist() == [round(255 * 0.49), round(255 * 0.48), round(255 * 0.45)]
    raw, raw_plain = dataset.uint8_items(), plain.uint8_items()
    centres = set()
    for index in range(len(dataset)):
        seed = mix_seed(7, index)  # a 63-bit hash, as the sampler draws them
        painted, _ = raw[(index, seed)]
        original, _ = raw_plain[(index, seed)]  # same crop and flip, no cutout
        y0, y1, x0, x1 = cutout_params(seed, 12, 32, 32)
        box = torch.zeros(32, 32, dtype=torch.bool)
        box[y0:y1, x0:x1] = True
        assert torch.equal(painted[:, box], fill[:, None].expand(-1, int(box.sum())))
        assert torch.equal(painted[:, ~box], original[:, ~box])
        centres.add((y0 + y1, x0 + x1))
    assert len(centres) > 8  # the boxes move
    # The device loader paints the same boxes for the same sampler keys, bit for bit.
    loader = DeviceImageLoader(dataset, batch_size=8, train=True, seed=5)
    workers = build_loader(dataset, 8, train=True, seed=5, num_workers=0)
    for (device_images, device_labels), (worker_images, worker_labels) in zip(loader, workers):
        assert torch.equal(device_images, worker_images) and torch.equal(device_labels, worker_labels)


def test_cutout_marks_a_fraction_of_pixels_that_matches_the_expected_area():
    dataset = cifar_like(count=1)
    dataset.set_augment(AugmentSpec(cutout=8))
    seeds = torch.randint(0, 2**62, (4000,), generator=torch.Generator().manual_seed(1))
    y0, y1, x0, x1 = cutout_params(seeds, 8, 32, 32)
    area = ((y1 - y0) * (x1 - x0)).double().mean().item()
    # A box of 8 centred at c covers rows c-4 .. c+3: centres 0-3 lose 4, 3, 2, 1 rows at the top and
    # centres 29-31 lose 1, 2, 3 at the bottom, so for a uniform centre the length averages
    # (32 * 8 - 16) / 32 = 7.5 per axis, and the axes are independent: mean area 7.5 ** 2.
    assert area == pytest.approx(7.5**2, rel=0.02)


def test_cutout_is_ignored_by_a_validation_split():
    dataset = cifar_like(train=False)
    dataset.set_augment(AugmentSpec(cutout=12))
    assert dataset.augment.cutout == 0


# ------------------------------------------------------------- config and resume
def test_aug_and_recipe_keys_are_validated_before_anything_runs(tmp_path):
    pytest.importorskip("nvidia.dali", reason="the DALI path is validated only where DALI is installed")
    result = run_script("train.py", ["data=imagenet", "data.loader=dali", "aug.cutout=8",
                                     f"hydra.run.dir={tmp_path / 'r'}"])
    assert result.returncode != 0 and "aug.cutout=8 is not available with data.loader=dali" in result.stderr
    result = run_script("train.py", ["trainer.ema_decay=1.5", f"hydra.run.dir={tmp_path / 'r'}"])
    assert "trainer.ema_decay=1.5: it must be in [0, 1)" in result.stderr
    assert not (tmp_path / "r").exists()


def test_a_checkpoint_of_the_0_1_0_release_resumes_with_todays_keys(tmp_path):
    checkpoint_path = tmp_path / "last.pt"
    with gzip.open(FIXTURE, "rb") as packed, open(checkpoint_path, "wb") as out:
        shutil.copyfileobj(packed, out)
    checkpoint = load_training_checkpoint(checkpoint_path)
    saved = checkpoint["config"]
    assert "aug" not in saved and "ema_decay" not in saved["trainer"]  # written before these keys existed
    overrides = ["data=synthetic", "data.train_size=128", "data.val_size=64", "trainer.epochs=3",
                 "trainer.limit_train_batches=2", "trainer.progress=false", "logger=[]",
                 "trainer.device=cpu"]
    from omegaconf import OmegaConf

    today = OmegaConf.to_container(compose_train(overrides), resolve=True)
    today.pop("hydra", None)
    assert _check_trajectory(checkpoint, today, checkpoint_path) == {}
    cutout = OmegaConf.to_container(compose_train([*overrides, "aug.cutout=8"]), resolve=True)
    with pytest.raises(ConfigError, match=r"aug.cutout: 0 -> 8"):
        _check_trajectory(checkpoint, cutout, checkpoint_path)
    # And the whole run resumes from it: epochs 2 and 3 on top of the stored epoch 1.
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(checkpoint_path, run_dir / "checkpoints" / "last.pt")
    result = run_script("train.py", [*overrides, f"hydra.run.dir={run_dir}"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Resumed from" in (run_dir / "train.log").read_text()
    import json

    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed" and [r["epoch"] for r in results["history"]] == [1, 2, 3]
    assert math.isfinite(results["final"]["loss"])


def test_evaluate_weights_ema_needs_a_run_that_kept_an_average(tmp_path):
    trainer = make_trainer(tmp_path / "run", epochs=1)
    trainer.fit()
    checkpoint = load_training_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert _checkpoint_weights(checkpoint, "model", "last.pt") is checkpoint["model"]
    with pytest.raises(ConfigError, match="holds no weight average: its run was trained without"):
        _checkpoint_weights(checkpoint, "ema", "last.pt")


def test_the_docs_callback_example_runs_and_logs_the_gradient_norm(tmp_path):
    readme = (Path(__file__).resolve().parents[1] / "docs" / "recipes.md").read_text()
    section = readme[readme.index("## Your own callback"):]
    code = section[section.index("```python") + len("```python"):]
    code = code[:code.index("```")]
    namespace: dict = {}
    exec(compile(code, "docs/recipes.md", "exec"), namespace)
    callback = namespace["GradNormLog"]()
    trainer = make_trainer(tmp_path, epochs=2, callbacks=[callback])
    trainer.fit()
    assert [r["grad_norm_mean"] > 0 for r in trainer.history] == [True, True]
    assert callback.norms == []


# ------------------------------------------------------------ objectives and mixing
def test_mixup_blends_images_and_targets_with_the_same_lam():
    mix = BatchMix(num_classes=3, mixup=0.4, seed=1)
    images = torch.rand(4, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([0, 1, 2, 1])
    draw = mix.draw(epoch=2, batch=5, height=6, width=6)
    assert draw.kind == "mixup" and mix.draw(2, 5, 6, 6) == draw and mix.draw(2, 6, 6, 6) != draw
    mixed, soft = BatchMix.apply(images, smooth_one_hot(targets, 3), draw)
    # lam read back from the pixels: mixed = lam * x + (1 - lam) * x[::-1]
    partner = images.flip(0)
    lam = ((mixed - partner) / (images - partner))[0].median().item()
    assert lam == pytest.approx(draw.lam, abs=1e-4)
    expected = lam * F.one_hot(targets, 3).float() + (1 - lam) * F.one_hot(targets.flip(0), 3).float()
    assert torch.allclose(soft, expected, atol=1e-4)


def test_cutmix_pastes_a_box_whose_area_sets_the_target_weights():
    mix = BatchMix(num_classes=4, cutmix=1.0, seed=3)
    images = torch.arange(4.0)[:, None, None, None].expand(4, 3, 16, 16).clone()  # image i is all i
    targets = torch.tensor([0, 1, 2, 3])
    for batch in range(20):
        draw = mix.draw(0, batch, 16, 16)
        mixed, soft = BatchMix.apply(images, smooth_one_hot(targets, 4), draw)
        pasted = (mixed[0, 0] == 3).float().mean().item()  # image 0 received pixels of image 3
        assert pasted == pytest.approx(1 - draw.lam, abs=1e-6)
        assert soft[0].tolist() == pytest.approx([1 - pasted, 0, 0, pasted], abs=1e-6)
        y0, y1, x0, x1 = draw.box
        assert torch.all(mixed[0, :, y0:y1, x0:x1] == 3) and (y1 - y0) * (x1 - x0) == round(pasted * 256)


def test_mixing_draws_follow_their_probabilities_and_the_beta_law():
    mix = BatchMix(num_classes=10, mixup=0.2, cutmix=1.0, mix_prob=0.6, switch_prob=0.25, seed=0)
    draws = [mix.draw(0, batch, 32, 32) for batch in range(4000)]
    kinds = [draw.kind for draw in draws]
    assert kinds.count(None) / 4000 == pytest.approx(0.4, abs=0.03)
    mixed = [d for d in draws if d.kind is not None]
    assert sum(d.kind == "cutmix" for d in mixed) / len(mixed) == pytest.approx(0.25, abs=0.03)
    lams = np.array([d.lam for d in mixed if d.kind == "mixup"])
    # Beta(0.2, 0.2): mean 1/2, variance 1 / (4 (2 * 0.2 + 1)) = 0.17857
    assert lams.mean() == pytest.approx(0.5, abs=0.02) and lams.var() == pytest.approx(1 / 5.6, abs=0.01)
    off = BatchMix(num_classes=10, mixup=0.2, mix_off_epoch=3)
    assert off.draw(2, 0, 8, 8).kind == "mixup" and off.draw(3, 0, 8, 8).kind is None


def test_soft_cross_entropy_and_bce_against_their_formulas():
    logits = torch.randn(6, 5, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([0, 4, 2, 2, 1, 3])
    soft = smooth_one_hot(targets, 5, 0.1)
    assert torch.allclose(soft.sum(1), torch.ones(6)) and soft[0, 0].item() == pytest.approx(0.92)
    ce = Objective("ce", label_smoothing=0.1)
    by_hand = -(soft * torch.log(torch.softmax(logits, 1))).sum(1).mean()
    assert ce(logits, targets, soft).item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert ce(logits, targets, None).item() == pytest.approx(by_hand.item(), rel=1e-6)  # the hard-label path
    sigmoid = torch.sigmoid(logits)

    def bce_by_hand(goal):
        return -(goal * torch.log(sigmoid) + (1 - goal) * torch.log(1 - sigmoid)).mean().item()

    assert Objective("bce", 0.1)(logits, targets, None).item() == pytest.approx(bce_by_hand(soft), rel=1e-5)
    mixed = 0.7 * soft + 0.3 * soft.flip(0)
    thresholded = Objective("bce", 0.1, bce_target_threshold=0.2)(logits, targets, mixed)
    assert thresholded.item() == pytest.approx(bce_by_hand((mixed > 0.2).float()), rel=1e-5)


def test_training_accuracy_under_mixing_counts_the_heavier_label(tmp_path):
    objective = Objective("ce", mix=BatchMix(num_classes=4, mixup=1.0, seed=0))
    images, targets = torch.zeros(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    for batch in range(10):
        _, soft, hard = objective.batch(images, targets, 0, batch)
        assert torch.equal(hard, soft.argmax(1)) or soft.max(1).values.min() == 0.5


def test_a_run_with_ema_mixing_and_bce_resumed_after_epoch_one_ends_bit_exactly(tmp_path):
    def run(folder, epochs, checkpoint=None):
        objective = Objective("bce", 0.1, 0.2, mix=BatchMix(4, mixup=0.2, cutmix=1.0, mix_prob=0.7, seed=0))
        trainer = make_trainer(folder, model=tiny_model(dropout=0.3), train_size=12, epochs=epochs,
                               ema_decay=0.8, ema_warmup=True, objective=objective)
        if checkpoint is not None:
            trainer.load_state_dict(load_training_checkpoint(checkpoint))
        trainer.fit()
        return trainer

    whole = run(tmp_path / "whole", 3)
    run(tmp_path / "part", 1)
    resumed = run(tmp_path / "resumed", 3, tmp_path / "part" / "checkpoints" / "last.pt")
    for a, b in ((whole.model, resumed.model), (whole.callbacks.callbacks[0].module,
                                                 resumed.callbacks.callbacks[0].module)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert whole.history[-1]["train_loss"] == resumed.history[-1]["train_loss"]


# ------------------------------------------------------------------ drop path
def test_drop_path_rates_rise_linearly_with_depth_in_both_block_types():
    from attn_resnet.models import ResidualNet

    for depth, blocks in ((18, 8), (50, 16)):
        model = ResidualNet("CIFAR10", depth, 10, "SE", drop_path=0.2)
        rates = [getattr(block.drop_path, "p", 0.0) for stage in (model.layer1, model.layer2, model.layer3,
                                                                   model.layer4) for block in stage]
        assert rates == pytest.approx([0.2 * i / (blocks - 1) for i in range(blocks)])
        plain = ResidualNet("CIFAR10", depth, 10, "SE")
        assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in plain.parameters())
        assert model.state_dict().keys() == plain.state_dict().keys()  # checkpoints stay interchangeable


def test_a_dropped_branch_leaves_the_shortcut_and_kept_ones_are_scaled_to_keep_the_expectation():
    from attn_resnet.models.resnet import BasicBlock

    torch.manual_seed(0)
    block = BasicBlock(4, 4, drop_path=0.3)
    x = torch.randn(4000, 4, 3, 3)
    block.train()
    out = block(x)
    dropped = torch.isclose(out, torch.relu(x)).flatten(1).all(1)  # the branch added nothing
    assert dropped.float().mean().item() == pytest.approx(0.3, abs=0.03)
    # Survivors carry the branch times 1 / (1 - 0.3): over many samples the branch's mean is kept.
    branch_scaled = block.drop_path(torch.ones(20000, 1, 1, 1))
    assert branch_scaled.unique().tolist() == [0.0, pytest.approx(1 / 0.7)]
    assert branch_scaled.mean().item() == pytest.approx(1.0, abs=0.02)
    block.eval()
    assert torch.equal(block.drop_path(x), x)  # evaluation: every branch, unscaled


# --------------------------------------------------- augmentation policies, random erasing
from attn_resnet.data.policies import (_draws, _erasing_boxes, _space, apply_policy,  # noqa: E402
                                       apply_random_erasing, hash_seeds)


def test_seed_hashes_are_the_same_alone_and_in_a_batch_and_spread_evenly():
    seeds = torch.tensor([mix_seed(3, i) for i in range(20000)])
    batch = hash_seeds(seeds, 17)
    assert torch.equal(hash_seeds(seeds[5:6], 17), batch[5:6]) and bool((batch >= 0).all())
    assert not torch.equal(hash_seeds(seeds, 18), batch)
    counts = torch.bincount(batch % 7, minlength=7).double() / len(seeds)
    assert torch.allclose(counts, torch.full((7,), 1 / 7, dtype=torch.float64), atol=0.01)


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment"])
def test_policy_op_statistics(policy):
    spec = AugmentSpec(policy=policy, num_ops=2, magnitude=9)
    seeds = torch.tensor([mix_seed(0, i) for i in range(28000)])
    space = _space(policy, 32, 32)
    assert [name for name, _, _ in space][:3] == ["Identity", "ShearX", "ShearY"] and len(space) == 14
    draws = _draws(seeds, spec, len(space))
    assert len(draws) == (2 if policy == "randaugment" else 1)
    for op, bin_, negate in draws:
        share = torch.bincount(op, minlength=14).double() / len(seeds)
        assert torch.allclose(share, torch.full((14,), 1 / 14, dtype=torch.float64), atol=0.01)  # uniform over ops
        assert negate.double().mean().item() == pytest.approx(0.5, abs=0.01)
        if policy == "randaugment":
            assert bool((bin_ == 9).all())  # one fixed magnitude
        else:
            bins = torch.bincount(bin_, minlength=31).double() / len(seeds)  # TrivialAugment: uniform bins
            assert torch.allclose(bins, torch.full((31,), 1 / 31, dtype=torch.float64), atol=0.005)
    if policy == "randaugment":
        assert not torch.equal(draws[0][0], draws[1][0])  # the two rounds draw independently


def _seed_drawing(policy, op_name, magnitude=9):
    """A seed whose single TrivialAugment/RandAugment round (num_ops=1) draws ``op_name``, and its bin."""
    spec = AugmentSpec(policy=policy, num_ops=1, magnitude=magnitude)
    names = [name for name, _, _ in _space(policy, 16, 16)]
    seeds = torch.tensor([mix_seed(9, i) for i in range(400)])
    (op, bin_, negate), = _draws(seeds, spec, len(names))
    hit = int((op == names.index(op_name)).nonzero()[0])
    return spec, seeds[hit], int(bin_[hit])


def test_policy_ops_match_their_formulas():
    image = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    spec, seed, _ = _seed_drawing("randaugment", "Identity")
    assert torch.equal(apply_policy(image, seed, spec), image)
    spec, seed, bin_ = _seed_drawing("trivialaugment", "Solarize")
    threshold = 255.0 * (1 - bin_ / 30)  # torchvision's Solarize bins: 255 down to 0
    expected = torch.where(image.float() >= threshold, 255 - image, image)
    assert torch.equal(apply_policy(image, seed, spec), expected)
    spec, seed, bin_ = _seed_drawing("trivialaugment", "Posterize")
    bits = 8 - round(bin_ / 5)  # TrivialAugmentWide: 8 bits down to 2 over the 31 bins
    assert torch.equal(apply_policy(image, seed, spec), image & (0xFF << (8 - bits) & 0xFF))


def _shifted_columns(image: torch.Tensor, dx: int) -> torch.Tensor:
    """``image`` moved ``dx`` pixels to the right (left when negative), the columns let in black."""
    out = torch.zeros_like(image)
    if dx >= 0:
        out[..., dx:] = image[..., :image.shape[-1] - dx]
    else:
        out[..., :dx] = image[..., -dx:]
    return out


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment"])
def test_a_negative_draw_moves_the_image_the_other_way(policy):
    # TranslateX moves the image by whole pixels (the bin's magnitude, truncated): a column shift, by hand.
    # RandAugment at magnitude 20, not the default 9; TrivialAugmentWide draws the bin too.
    spec = AugmentSpec(policy=policy, num_ops=1, magnitude=20)
    space = _space(policy, 8, 40)
    names = [name for name, _, _ in space]
    seeds = torch.tensor([mix_seed(9, i) for i in range(3000)])
    (op, bin_, negate), = _draws(seeds, spec, len(names))
    drawn = (op == names.index("TranslateX")).nonzero().flatten()
    magnitudes = space[names.index("TranslateX")][1]
    pixels = [int(magnitudes[bin_[i]]) for i in drawn]
    shifts = [-p if bool(negate[i]) else p for i, p in zip(drawn, pixels)]
    # Both signs at one magnitude in the batch: the batch path must apply them as two calls, not one.
    assert {shift for shift in shifts if shift > 0} & {-shift for shift in shifts if shift < 0}
    image = torch.randint(1, 256, (3, 8, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    out = apply_policy(image.expand(len(drawn), -1, -1, -1), seeds[drawn], spec)
    for index, shift in enumerate(shifts):
        assert torch.equal(out[index], _shifted_columns(image, shift)), shift
    negative = shifts.index(min(shifts))
    assert torch.equal(apply_policy(image, seeds[drawn[negative]], spec), _shifted_columns(image, min(shifts)))


def test_device_loader_equals_the_workers_path_with_every_per_image_op():
    dataset = cifar_like(count=24)
    dataset.set_augment(AugmentSpec(policy="trivialaugment", cutout=8, random_erasing=0.5))
    loader = DeviceImageLoader(dataset, batch_size=8, train=True, seed=2)
    workers = build_loader(dataset, 8, train=True, seed=2, num_workers=0)
    changed = 0
    for (device_images, _), (worker_images, _) in zip(loader, workers):
        assert torch.equal(device_images, worker_images)
        changed += 1
    assert changed == 3
    plain = cifar_like(count=24)
    assert not torch.equal(next(iter(DeviceImageLoader(plain, batch_size=8, train=True, seed=2)))[0],
                           next(iter(loader))[0])


def test_random_erasing_boxes_follow_torchvisions_ranges():
    seeds = torch.tensor([mix_seed(1, i) for i in range(5000)])
    boxes = _erasing_boxes(seeds, 0.4, 32, 32)
    height, width = boxes[:, 1] - boxes[:, 0], boxes[:, 3] - boxes[:, 2]
    erased = height > 0
    assert erased.double().mean().item() == pytest.approx(0.4, abs=0.02)  # some tries never fit: a bit under p
    area = (height * width)[erased].double() / 1024
    assert area.min() >= 0.015 and area.max() <= 0.35  # 2-33% of the image, up to rounding
    aspect = (height.double() / width.double())[erased]
    assert aspect.min() >= 0.25 and aspect.max() <= 4.0  # 0.3-3.3, up to rounding
    assert bool((boxes[erased, 1] <= 32).all() & (boxes[erased, 3] <= 32).all())
    images = torch.full((5000, 3, 32, 32), 7, dtype=torch.uint8)[:50]
    fill = torch.tensor([1, 2, 3], dtype=torch.uint8)
    out = apply_random_erasing(images, seeds[:50], 0.4, fill)
    for image, (y0, y1, x0, x1) in zip(out, boxes[:50].tolist()):
        assert bool((image[:, y0:y1, x0:x1] == fill.view(3, 1, 1)).all())
        assert int((image != 7).any(0).sum()) == (y1 - y0) * (x1 - x0)


# ------------------------------------------------------------ repeated augmentation
def test_repeated_augmentation_takes_each_image_n_times_with_its_own_seeds():
    from attn_resnet.data.sampler import ResumableBatchSampler

    sampler = ResumableBatchSampler(12, 4, shuffle=True, seed=3, drop_last=True)
    sampler.set_repeats(3)
    sampler.set_epoch(1)
    keys = [key for batch in sampler for key in batch]
    indices = [index for index, _ in keys]
    assert len(keys) == 12 and len(set(indices)) == 4  # the epoch's length, 12 / 3 distinct images
    assert all(indices[i] == indices[i - i % 3] for i in range(12))  # each three times in a row
    assert len({seed for _, seed in keys}) == 12  # every copy augmented anew
    # Two ranks: each takes every other position, so an image's copies go to both ranks.
    ranks = []
    for rank in (0, 1):
        shard = ResumableBatchSampler(12, 2, shuffle=True, seed=3, drop_last=True, num_replicas=2, rank=rank)
        shard.set_repeats(3)
        shard.set_epoch(1)
        ranks.append([key for batch in shard for key in batch])
    assert sorted(ranks[0] + ranks[1]) == sorted(keys)
    assert set(i for i, _ in ranks[0]) & set(i for i, _ in ranks[1])
    # A resume mid-epoch continues with the same keys.
    sampler.set_epoch(1)
    sampler.set_start_batch(2)
    assert [key for batch in sampler for key in batch] == keys[8:]
    with pytest.raises(ValueError, match="repeat_aug=0 is not valid"):
        sampler.set_repeats(0)


def test_repeat_aug_reaches_the_training_loader_only():
    from attn_resnet.build import make_loaders

    loaders = make_loaders({"name": "synthetic", "network_type": "CIFAR10", "num_classes": 4, "image_size": 8,
                            "train_size": 24, "val_size": 8, "batch_size": 4, "num_workers": 0, "repeat_aug": 2,
                            "loader": "workers"}, seed=0, device=torch.device("cpu"))
    assert loaders.train.batch_sampler.repeats == 2 and loaders.val.batch_sampler.repeats == 1


def test_image_folders_take_the_per_image_ops_and_evaluate_at_their_own_size(tmp_path):
    from attn_resnet.data.imagefolder import build_imagefolder

    from helpers import write_imagefolder

    root = write_imagefolder(tmp_path / "folders", classes=2, per_class=4, size=40)
    splits = build_imagefolder("imagefolder", root=root, image_size=24, val_image_size=32)
    assert splits.test[0][0].shape == (3, 32, 32) and splits.train[0][0].shape == (3, 24, 24)
    plain = splits.train.uint8_items()
    splits.train.set_augment(AugmentSpec(policy="randaugment", num_ops=2, magnitude=9, cutout=6))
    augmented = splits.train.uint8_items()
    seeds = [mix_seed(5, i) for i in range(8)]
    changed = [not torch.equal(augmented[(i, seed)][0], plain[(i, seed)][0]) for i, seed in enumerate(seeds)]
    assert all(changed)  # cutout alone changes every image
    again = [torch.equal(augmented[(i, seed)][0], augmented[(i, seed)][0]) for i, seed in enumerate(seeds)]
    assert all(again)  # the same key, the same image
    normalized = splits.train[(0, seeds[0])][0]
    assert normalized.dtype == torch.float32 and normalized.shape == (3, 24, 24)
    assert splits.test.augment.active is False


@pytest.mark.parametrize("experiment", ["imagenet_tv_recipe", "imagenet_rsb_a3"])
def test_the_imagenet_recipes_run_end_to_end_on_a_tiny_folder(tmp_path, experiment):
    from helpers import write_imagefolder

    root = write_imagefolder(tmp_path / "folders", classes=3, per_class=6, size=48)
    small = ["model.depth=18", "data.image_size=32", "data.val_image_size=40", "data.batch_size=6",
             "data.val_batch_size=6", "data.num_workers=0", "trainer.epochs=2", "trainer.device=cpu",
             "trainer.compile=false", "trainer.precision=32", "trainer.channels_last=false",
             "trainer.progress=false", "sched.warmup_epochs=1", "optim.reference_batch_size=null"]
    result = run_script("train.py", [f"experiment={experiment}", f"data.root={root}", *small,
                                     f"hydra.run.dir={tmp_path / 'run'}"])
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    results = json.loads((tmp_path / "run" / "results.json").read_text())
    config = results["config"]
    assert results["status"] == "completed" and results["data"]["image_size"] == [40, 40]
    if experiment == "imagenet_tv_recipe":
        assert config["aug"]["policy"] == "trivialaugment" and config["data"]["repeat_aug"] == 4
        assert results["ema_decay"] == 0.99997 and "ema" in load_training_checkpoint(
            tmp_path / "run" / "checkpoints" / "last.pt")["callbacks"]
    else:
        assert results["loss"] == "bce" and config["optim"]["name"] == "lamb" and config["aug"]["magnitude"] == 18


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment"])
def test_dali_runs_the_policy_with_its_own_auto_augment(tmp_path, policy):
    pytest.importorskip("nvidia.dali", reason="needs NVIDIA DALI (the test extras install it on Linux)")
    from attn_resnet.data.dali import DaliImageLoader
    from attn_resnet.data.imagefolder import build_imagefolder

    from helpers import write_imagefolder

    root = write_imagefolder(tmp_path / "folders", classes=2, per_class=8, size=40)
    splits = build_imagefolder("imagefolder", root=root, image_size=24)
    plain = next(iter(DaliImageLoader(splits.train, batch_size=8, train=True, device=torch.device("cpu"), seed=3)))
    splits.train.set_augment(AugmentSpec(policy=policy, num_ops=2, magnitude=20))
    loader = DaliImageLoader(splits.train, batch_size=8, train=True, device=torch.device("cpu"), seed=3)
    images, labels = next(iter(loader))
    assert images.shape == plain[0].shape == (8, 3, 24, 24) and torch.equal(labels, plain[1])
    assert not torch.equal(images, plain[0])  # the same crops, then the policy's ops
    again, _ = next(iter(DaliImageLoader(splits.train, batch_size=8, train=True, device=torch.device("cpu"), seed=3)))
    assert torch.equal(again, images)  # seeded per (seed, epoch, rank): repeatable


# ------------------------------------------------------------------ what the console says about a recipe
def _messages(log_text: str) -> list[str]:
    return [line.split("] - ", 1)[-1] for line in log_text.splitlines()]


def test_a_short_run_of_a_long_recipe_says_what_is_on_what_it_cannot_reach_and_how_it_was_measured(tmp_path):
    from helpers import FAST

    run = tmp_path / "run"
    result = run_script("train.py", [*FAST, "trainer.epochs=2", "recipe=modern", f"hydra.run.dir={run}"])
    assert result.returncode == 0, result.stderr[-2000:]
    console, log = result.stdout + result.stderr, (run / "train.log").read_text()
    # The 5-epoch warmup of recipe=modern outlasts a 2-epoch run: the lr never reaches its peak.
    warning = next(line for line in log.splitlines() if "sched.warmup_epochs=5" in line)
    assert "[WARNING]" in warning and "trainer.epochs=2" in warning and warning.split("] - ", 1)[1] in console
    features = next(line for line in _messages(log) if line.startswith("Recipe modern:"))
    for feature in ("EMA", "TTA flip", "mixup 0.2", "CutMix 1", "TrivialAugment", "cutout 16", "label smoothing 0.1",
                    "stochastic depth 0.05", "lr warmup 5 epochs"):
        assert feature in features, (feature, features)
    done = next(line for line in _messages(log) if line.startswith("Done:"))
    assert "the EMA weights with TTA flip" in done and "compile" not in done, done


def test_a_plain_run_says_so_and_the_end_line_shows_compile_time_when_there_was_some(tmp_path, caplog, monkeypatch):
    from attn_resnet.app import train
    from attn_resnet.config.recipe import short_run_warnings
    from helpers import FAST

    original = Trainer.summary
    monkeypatch.setattr(Trainer, "summary", lambda self: {**original(self), "compile_seconds": 65.4})
    with caplog.at_level("INFO"):
        train(compose_train(FAST), tmp_path)
    messages = [record.getMessage() for record in caplog.records]
    assert any(message.startswith("Recipe: plain") for message in messages), messages
    done = next(message for message in messages if message.startswith("Done:"))
    assert "the trained weights without TTA" in done and "compile 65 s" in done, done
    assert not [record for record in caplog.records
                if record.levelname == "WARNING" and "trainer.epochs" in record.getMessage()]
    # Every epoch-counted setting that lies beyond the run is named.
    config = compose_train(FAST + ["trainer.epochs=3", "sched=multistep", "sched.milestones=[2,3,5]",
                                   "sched.warmup_epochs=3", "aug.mixup=0.2", "aug.mix_off_epoch=4"])
    warnings = short_run_warnings(OmegaConf.to_container(config, resolve=True))
    assert len(warnings) == 3 and all("trainer.epochs=3" in warning for warning in warnings), warnings
    assert "sched.warmup_epochs=3" in warnings[0] and "aug.mix_off_epoch=4" in " ".join(warnings)
    assert "sched.milestones 3, 5" in " ".join(warnings)
    step = compose_train(FAST + ["trainer.epochs=30", "sched=step", "sched.step_size=30"])
    assert "sched.step_size=30" in short_run_warnings(OmegaConf.to_container(step, resolve=True))[0]
