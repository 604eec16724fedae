"""The fast path of the loop: no host syncs in a step, non-finite losses caught later but exactly,
compile without recompiles, fused optimizers, and the CUDA behaviour (marked ``gpu``).

Tests taking a ``device`` run on the CPU everywhere and on CUDA where there is one; the CPU run
checks the logic, the CUDA run the kernels, RNG and layouts that only a GPU has.
"""

import logging
import math
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attn_resnet.data import build_loader
from attn_resnet.data.sampler import ResumableBatchSampler
from attn_resnet.engine.checkpoint import load_training_checkpoint
from attn_resnet.engine.compilation import compiling_calls
from attn_resnet.engine.optim import build_optimizer
from attn_resnet.engine.trainer import NonFiniteLossError, Trainer, TrainerSettings, evaluate_model

from helpers import tiny_dataset

REPO = Path(__file__).resolve().parents[1]
BATCH = 4
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
gpu = [pytest.mark.gpu, needs_cuda]
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=gpu)]


class MeanPool(nn.Module):
    """Global average pooling as a mean, whose CUDA backward is deterministic (adaptive pooling's is not)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))


def tiny_model(classes: int = 4, width: int = 6, dropout: float = 0.0) -> nn.Sequential:
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
    layers += [nn.Dropout(dropout)] if dropout else []
    return nn.Sequential(*layers, MeanPool(), nn.Linear(width, classes))




class PreloadedLoader:
    """Fixed batches held in memory: iterating reads no tensor, so every host read counted is the trainer's."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches = batches
        self.batch_sampler = ResumableBatchSampler(len(batches) * BATCH, BATCH, shuffle=False)

    def __iter__(self):
        return iter(self.batches[self.batch_sampler.start_batch:])

    def __len__(self) -> int:
        return len(self.batch_sampler)


def fixed_batches(count: int, device: str = "cpu", classes: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(BATCH, 3, 8, 8, generator=generator).to(device),
             torch.randint(0, classes, (BATCH,), generator=generator).to(device)) for _ in range(count)]


def make_trainer(run_dir, model=None, *, device="cpu", train_size=3 * BATCH, val_size=2 * BATCH, classes=4,
                 lr=0.1, loader=None, optimizer=None, **settings) -> Trainer:
    model = model if model is not None else tiny_model(classes)
    train_loader = loader or build_loader(tiny_dataset(train_size, classes), BATCH, train=True, num_workers=0)
    val_loader = build_loader(tiny_dataset(val_size, classes, seed=1, train=False), BATCH, train=False,
                              num_workers=0)
    optimizer = optimizer or build_optimizer(model, "sgd", lr, device=device)
    return Trainer(model, optimizer, lambda steps: (lambda step: 1.0), train_loader, val_loader,
                   TrainerSettings(**{"progress": False, **settings}), run_dir, torch.device(device))


def poison_forward(model: nn.Module, first_call: int, value: float = float("nan")) -> None:
    """From the ``first_call``-th training forward on (1-based), the model's logits are multiplied by ``value``."""
    calls = {"n": 0}

    def hook(module, inputs, output):
        if module.training:
            calls["n"] += 1
            if calls["n"] >= first_call:
                return output * value

    model.register_forward_hook(hook)


HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy")


@contextmanager
def counting_host_reads():
    """Count the tensor methods that copy a value to the host (on a GPU each one waits for the device)."""
    reads: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        for name in HOST_READS:
            original = getattr(torch.Tensor, name)

            def counted(self, *args, _original=original, _name=name, **kwargs):
                reads.append(_name)
                return _original(self, *args, **kwargs)

            patch.setattr(torch.Tensor, name, counted)
        yield reads


def same_tensors(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


# ------------------------------------------------------------ host syncs
def reference_epoch(batches, lr: float = 0.1) -> dict[str, float]:
    """Mean loss and accuracy (%) of one epoch of a plain loop: the numbers the trainer must report."""
    model = tiny_model()
    optimizer = build_optimizer(model, "sgd", lr, device="cpu")
    loss_sum, correct, images = 0.0, 0, 0
    for x, y in batches:
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        images += len(y)
    return {"loss": loss_sum / images, "acc1": 100.0 * correct / images}


def test_a_train_epoch_reads_the_device_a_constant_number_of_times(tmp_path):
    reads = {}
    for count in (3, 9):
        batches = fixed_batches(count)
        trainer = make_trainer(tmp_path / str(count), loader=PreloadedLoader(batches), log_every_steps=100)
        with counting_host_reads() as counted:
            result = trainer.train_epoch(0)
        reads[count] = counted
        assert result == pytest.approx(reference_epoch(batches), rel=1e-6)
    assert reads[3] == reads[9] and len(reads[3]) == 1  # one read, at the end of the epoch


def test_the_meters_are_read_once_per_log_point(tmp_path):
    trainer = make_trainer(tmp_path, loader=PreloadedLoader(fixed_batches(8)), log_every_steps=2)
    with counting_host_reads() as counted:
        trainer.train_epoch(0)
    assert len(counted) == 4  # after batches 2, 4, 6 and 8; the epoch's end shares the last read


def test_save_reads_the_device_once_and_refuses_non_finite_weights(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.train_epoch(0)
    with counting_host_reads() as counted:
        path = trainer.save("last.pt")
    assert len(counted) == 1
    good = path.read_bytes()
    weight = trainer.model[0].weight
    with torch.no_grad():
        weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="Refusing to write last.pt: '0.weight' holds NaN/inf"):
        trainer.save("last.pt")
    with torch.no_grad():
        weight[0, 0, 0, 0] = 0.0
        trainer.model[1].running_var[0] = float("inf")  # a poisoned BatchNorm statistic is refused as well
    with pytest.raises(NonFiniteLossError, match="'1.running_var' holds NaN/inf"):
        trainer.save("best.pt")
    assert path.read_bytes() == good and not (tmp_path / "checkpoints" / "best.pt").exists()


# ------------------------------------------------------- non-finite loss
@pytest.mark.parametrize(("log_every", "checkpoint_every", "found_after", "batches"),
                         [(4, 0, 8, "batches 6-8"), (100, 3, 6, "batch 6")])
def test_a_nan_loss_stops_the_run_naming_the_steps_that_hold_it(tmp_path, log_every, checkpoint_every,
                                                                 found_after, batches):
    model = tiny_model()
    poison_forward(model, 6)
    trainer = make_trainer(tmp_path, model, train_size=12 * BATCH, log_every_steps=log_every,
                           checkpoint_every_steps=checkpoint_every)
    with pytest.raises(NonFiniteLossError) as error:
        trainer.train_epoch(0)
    message = str(error.value)
    assert "became nan at epoch 1, batch 6 (optimizer step 5)" in message
    assert f"between optimizer step 5 and {found_after} (epoch 1, {batches})" in message
    assert "discarded" in message and "trainer.grad_clip" in message
    last = tmp_path / "checkpoints" / "last.pt"
    if checkpoint_every:  # the save after step 6 was refused; the one after step 3 is kept
        kept = load_training_checkpoint(last)
        assert kept["global_step"] == 3
        assert f"{last} (during epoch 1/1, after batch 3 of 12; optimizer step 3)" in message
        assert all(torch.isfinite(value).all() for value in kept["model"].values())
    else:
        assert not last.exists() and "none (no checkpoint was written yet)" in message


@pytest.mark.parametrize("device", DEVICES)
def test_fp16_skips_a_non_finite_step_on_the_device_and_goes_on(tmp_path, device):
    model = tiny_model()
    weights, calls = [], {"n": 0}

    def hook(module, inputs, output):
        if module.training:
            calls["n"] += 1
            weights.append([p.detach().clone() for p in module.parameters()])
            if calls["n"] == 2:
                return output * float("inf")

    model.register_forward_hook(hook)
    trainer = make_trainer(tmp_path, model, device=device, precision="fp16", train_size=4 * BATCH,
                           max_nonfinite_skips=1)
    start_scale = trainer.scaler.get_scale()
    result = trainer.train_epoch(0)
    assert same_tensors(weights[1], weights[2])          # the poisoned second step changed nothing
    assert not same_tensors(weights[0], weights[3])      # the others trained
    assert trainer.scaler.get_scale() < start_scale
    assert math.isfinite(result["loss"]) and trainer.meters.read().images == 3 * BATCH


# ------------------------------------------------------------- precision
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("precision", "tolerance"), [("bf16", 0.02), ("fp16", 0.005)])
def test_low_precision_steps_agree_with_fp32(tmp_path, device, precision, tolerance):
    losses = {}
    for name in ("32", precision):  # one batch trained on five times: the loss at the start of each step
        trainer = make_trainer(tmp_path / name, device=device, precision=name, train_size=BATCH, epochs=5, lr=1.0)
        losses[name] = [epoch["train_loss"] for epoch in trainer.fit()["history"]]
    assert losses[precision] == pytest.approx(losses["32"], abs=tolerance)
    assert losses["32"][-1] < losses["32"][0] - 0.1  # the steps did train


# --------------------------------------------------------------- compile
@contextmanager
def recompile_log():
    """Dynamo's "Recompiling ..." messages while the block runs."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "Recompiling" in record.getMessage():
                messages.append(record.getMessage())

    handler, logger = Collect(), logging.getLogger("torch._dynamo")
    torch._logging.set_logs(recompiles=True)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        torch._logging.set_logs()


@pytest.mark.parametrize(("device", "mode"), [
    pytest.param("cpu", "default", id="cpu"),
    pytest.param("cuda", "default", id="cuda", marks=gpu),
    pytest.param("cuda", "reduce-overhead", id="cuda-reduce-overhead", marks=gpu),
])
def test_compiled_training_and_evaluation_never_recompile(tmp_path, device, mode):
    from torch._dynamo.utils import counters

    graphs = counters["stats"]["unique_graphs"]
    with recompile_log() as recompiles:
        # 10 val images in batches of 4: the last val batch holds 2 and is padded to 4
        trainer = make_trainer(tmp_path / "a", device=device, compile=True, compile_mode=mode, epochs=2,
                               val_size=10, classes=10)
        summary = trainer.fit()
        # the next job of a sweep, with another model, compiles afresh instead of recompiling
        other = make_trainer(tmp_path / "b", tiny_model(10, width=5), device=device, compile=True,
                             compile_mode=mode, val_size=10, classes=10)
        other.fit()
    assert recompiles == []
    assert counters["stats"]["unique_graphs"] - graphs >= 4  # train and eval, twice
    assert summary["compile_seconds"] > 0 and summary["images_per_sec"] > 0
    # the steps that compiled are left out of images/s: 2 epochs of 3 batches, less those
    assert trainer.throughput.images == (6 - compiling_calls(mode, torch.device(device))) * BATCH
    eager = evaluate_model(trainer.model, trainer.val_loader, torch.device(device))
    assert summary["final"]["loss"] == pytest.approx(eager["loss"], rel=1e-4)
    assert summary["final"]["acc1"] == pytest.approx(eager["acc1"], abs=10.0)  # at most one of 10 flips


def test_compile_eval_false_compiles_the_training_pass_only(tmp_path):
    from torch._dynamo.utils import counters

    trainer = make_trainer(tmp_path, compile=True, compile_eval=False, val_size=10, classes=10)
    graphs = counters["stats"]["unique_graphs"]
    metrics = trainer.evaluate()  # before any training step: nothing may compile
    assert counters["stats"]["unique_graphs"] == graphs and trainer.throughput.compile_seconds == 0
    eager = evaluate_model(trainer.model, trainer.val_loader, torch.device("cpu"))
    assert metrics == eager  # the same eager computation, unpadded: equal to the last bit
    trainer.train_epoch(0)
    assert counters["stats"]["unique_graphs"] > graphs and trainer.throughput.compile_seconds > 0
    compiled_graphs = counters["stats"]["unique_graphs"]
    assert trainer.evaluate() == evaluate_model(trainer.model, trainer.val_loader, torch.device("cpu"))
    assert counters["stats"]["unique_graphs"] == compiled_graphs


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=gpu)])
def test_compiled_training_gives_the_weights_and_batchnorm_statistics_of_eager_training(tmp_path, device):
    # The compiled forward mutates BatchNorm's running statistics inside the graph; they must move
    # exactly as in eager mode, or evaluation (which reads them) drifts from what training learned.
    initial = tiny_model(4).state_dict()
    trainers = {}
    for name, compile in (("eager", False), ("compiled", True)):
        model = tiny_model(4)
        model.load_state_dict(initial)
        trainers[name] = make_trainer(tmp_path / name, model, device=device, compile=compile, epochs=2)
        trainers[name].fit()
    expected, got = trainers["eager"].model.state_dict(), trainers["compiled"].model.state_dict()
    assert got.keys() == expected.keys()  # the state of the module itself, not of the compiled wrapper
    assert int(got["1.num_batches_tracked"]) == 6  # 2 epochs of 3 batches, each counted once
    assert not torch.allclose(got["1.running_mean"].cpu(), initial["1.running_mean"])
    # On CUDA, convolutions run in TF32 by default and the compiled graph may pick other kernels;
    # a statistic that did not move, or moved twice, is off by far more than either tolerance.
    tolerance = dict(rtol=1e-4, atol=1e-5) if device == "cpu" else dict(rtol=1e-2, atol=1e-3)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], **tolerance, msg=lambda m: f"{key}: {m}")


def test_a_padded_last_batch_gives_the_unpadded_metrics():
    model = tiny_model(classes=10)
    loader = build_loader(tiny_dataset(10, 10, seed=1, train=False), BATCH, train=False, num_workers=0)
    sizes = []
    model.register_forward_pre_hook(lambda module, inputs: sizes.append(inputs[0].shape[0]))
    plain = evaluate_model(model, loader, torch.device("cpu"))
    padded = evaluate_model(model, loader, torch.device("cpu"), pad_last_batch=True)
    assert sizes == [4, 4, 2, 4, 4, 4]
    assert padded["images"] == plain["images"] == 10
    assert (padded["acc1"], padded["acc5"]) == (plain["acc1"], plain["acc5"])
    assert padded["loss"] == pytest.approx(plain["loss"], rel=1e-6)


def test_settings_refuse_an_unknown_compile_mode_or_eval_precision(tmp_path):
    with pytest.raises(ValueError, match="trainer.compile_mode='fastest'.*reduce-overhead"):
        make_trainer(tmp_path, compile=True, compile_mode="fastest")
    with pytest.raises(ValueError, match="trainer.eval_precision='16'.*same"):
        make_trainer(tmp_path, eval_precision="16")


@pytest.mark.parametrize(("eval_precision", "expected"), [("32", False), ("same", True)])
def test_evaluation_runs_in_fp32_unless_told_otherwise(tmp_path, eval_precision, expected):
    model = tiny_model()
    seen = []
    model.register_forward_pre_hook(lambda module, inputs: seen.append((module.training,
                                                                        torch.is_autocast_enabled("cpu"))))
    trainer = make_trainer(tmp_path, model, precision="bf16", eval_precision=eval_precision)
    trainer.fit()
    assert {autocast for training, autocast in seen if training} == {True}
    assert {autocast for training, autocast in seen if not training} == {expected}


# ------------------------------------------------------------- optimizer
@pytest.mark.parametrize("device", DEVICES)
def test_the_optimizer_is_fused_on_cuda_and_foreach_elsewhere(device):
    model = tiny_model()  # built on the CPU, as the app builds it before the trainer moves it
    for name in ("sgd", "adamw"):
        optimizer = build_optimizer(model, name, 0.1, device=device)
        assert bool(optimizer.defaults.get("fused")) == (device == "cuda")
        assert bool(optimizer.defaults.get("foreach")) == (device != "cuda")
        forced = build_optimizer(model, name, 0.1, device=device, fused=False)
        assert forced.defaults["foreach"] and not forced.defaults.get("fused")


# ----------------------------------------------------------------- CUDA
def test_importing_the_engine_does_not_start_cuda():
    # CUBLAS_WORKSPACE_CONFIG only counts if it is set before CUDA starts, also for later jobs
    code = ("import importlib, pkgutil, torch, attn_resnet.engine as engine\n"
            "for module in pkgutil.iter_modules(engine.__path__):\n"
            "    importlib.import_module(f'attn_resnet.engine.{module.name}')\n"
            "print(torch.cuda.is_initialized())")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == "False"


class Interrupted(Exception):
    pass


def deterministic_runs(device: str, root: str) -> None:
    """Two runs give equal weights; a run stopped mid-epoch and resumed gives the uninterrupted weights.

    Runs in a fresh process, where CUBLAS_WORKSPACE_CONFIG is set before CUDA starts. Dropout
    draws from the device's RNG, so the resume also checks that the checkpoint restores it.
    """
    from attn_resnet.build import configure_determinism

    def run(folder: Path, stop_at_forward: int = 0, resume: bool = False) -> dict | None:
        configure_determinism(0, True)
        model = tiny_model(dropout=0.25)
        if stop_at_forward:
            calls = {"n": 0}

            def stop(module, inputs):
                calls["n"] += module.training
                if calls["n"] == stop_at_forward:
                    raise Interrupted

            model.register_forward_pre_hook(stop)
        trainer = make_trainer(folder, model, device=device, epochs=2, train_size=6 * BATCH,
                               checkpoint_every_steps=1)
        if resume:
            torch.manual_seed(123)  # whatever the RNGs hold now, loading the checkpoint must restore them
            if device == "cuda":
                torch.cuda.manual_seed_all(123)
            trainer.load_state_dict(load_training_checkpoint(folder / "checkpoints" / "last.pt"), "last.pt")
        try:
            trainer.fit()
        except Interrupted:
            return None
        return {key: value.cpu() for key, value in trainer.model.state_dict().items()}

    root = Path(root)
    first, second = run(root / "a"), run(root / "b")
    assert all(torch.equal(first[k], second[k]) for k in first), "two deterministic runs differ"
    assert run(root / "c", stop_at_forward=9) is None  # the third batch of the second epoch
    resumed = run(root / "c", resume=True)
    assert all(torch.equal(first[k], resumed[k]) for k in first), "the resumed run differs"


@pytest.mark.parametrize("device", DEVICES)
def test_deterministic_runs_and_a_resume_give_identical_weights(tmp_path, device):
    code = f"import test_trainer_fast as t; t.deterministic_runs({device!r}, {str(tmp_path)!r})"
    path = os.pathsep.join(filter(None, [str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env=env)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.gpu
@needs_cuda
def test_cuda_steps_between_log_points_never_sync(tmp_path):
    trainer = make_trainer(tmp_path, loader=PreloadedLoader(fixed_batches(6, "cuda")), device="cuda",
                           log_every_steps=100)
    calls = {"n": 0}

    def from_the_second_step(module, inputs):  # the first step may autotune and allocate
        calls["n"] += 1
        if calls["n"] == 2:
            torch.cuda.set_sync_debug_mode("error")

    def quiet(method):
        def call(*args, **kwargs):
            torch.cuda.set_sync_debug_mode(0)
            return method(*args, **kwargs)

        return call

    trainer.model.register_forward_pre_hook(from_the_second_step)
    trainer.throughput.stop = quiet(trainer.throughput.stop)  # the end of the epoch: reads are due here
    trainer.meters.read = quiet(trainer.meters.read)
    try:
        result = trainer.train_epoch(0)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert calls["n"] == 6 and trainer.global_step == 6 and math.isfinite(result["loss"])


@pytest.mark.gpu
@needs_cuda
def test_channels_last_on_cuda_trains_like_contiguous(tmp_path):
    losses = {}
    for channels_last in (False, True):
        model = tiny_model()
        layouts = []
        model.register_forward_pre_hook(lambda module, inputs: layouts.append(
            inputs[0].is_contiguous(memory_format=torch.channels_last)))
        trainer = make_trainer(tmp_path / str(channels_last), model, device="cuda", channels_last=channels_last)
        losses[channels_last] = trainer.train_epoch(0)["loss"]
        assert layouts == [channels_last] * 3
        assert model[0].weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert losses[True] == pytest.approx(losses[False], rel=1e-2)
