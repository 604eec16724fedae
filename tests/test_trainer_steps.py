"""What each trainer option does to a step, checked against gradients and losses computed by hand.

A tiny convolutional model without BatchNorm on 8x8 in-memory images keeps every test to a
second or two and makes "k micro-batches == one batch of their concatenation" exact.
"""

import io
import logging
import math

import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from attn_resnet.data import build_loader
from attn_resnet.engine.checkpoint import load_training_checkpoint
from attn_resnet.engine.progress import ProgressReporter, format_duration
from attn_resnet.engine.loggers import TensorBoardLogger
from attn_resnet.engine.trainer import Trainer, TrainerSettings, evaluate_model

from helpers import tiny_dataset

CPU = torch.device("cpu")
BATCH = 4




def tiny_model(classes: int = 4) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(6, classes))


def make_trainer(run_dir, model=None, *, train_size=8, val_size=8, classes=4, lr=0.1, test_loader=None,
                 reporter=None, tensorboard=False, **settings) -> Trainer:
    """``tensorboard``: with a TensorBoardLogger writing into ``run_dir``."""
    model = model if model is not None else tiny_model(classes)
    train_loader = build_loader(tiny_dataset(train_size, classes), BATCH, train=True, num_workers=0)
    val_loader = build_loader(tiny_dataset(val_size, classes, seed=1, train=False), BATCH, train=False,
                              num_workers=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    return Trainer(model, optimizer, lambda steps: (lambda step: 1.0), train_loader, val_loader,
                   TrainerSettings(**{"progress": False, **settings}), run_dir, CPU,
                   loggers=[TensorBoardLogger()] if tensorboard else None,
                   test_loader=test_loader, progress=reporter)


def epoch_batches(loader, epoch: int = 0) -> list:
    """The (images, targets) batches the trainer sees in ``epoch``."""
    loader.batch_sampler.set_epoch(epoch)
    return list(loader)


def record_steps(optimizer) -> list[tuple[list[torch.Tensor], list[torch.Tensor]]]:
    """(parameters, gradients) as they are when each optimizer step starts."""
    steps = []

    def hook(opt, args, kwargs):
        params = [p for group in opt.param_groups for p in group["params"]]
        steps.append(([p.detach().clone() for p in params], [p.grad.detach().clone() for p in params]))

    optimizer.register_step_pre_hook(hook)
    return steps


def reference_gradient(params, images, targets, classes: int = 4, **loss_options) -> list[torch.Tensor]:
    """Gradient of the mean loss over one batch, for a fresh model holding ``params``."""
    model = tiny_model(classes)
    with torch.no_grad():
        for parameter, value in zip(model.parameters(), params):
            parameter.copy_(value)
    loss = F.cross_entropy(model(images), targets, **loss_options)
    return list(torch.autograd.grad(loss, list(model.parameters())))


def total_norm(tensors) -> float:
    return torch.linalg.vector_norm(torch.stack([t.norm() for t in tensors])).item()


# ----------------------------------------------------------------- the step
@pytest.mark.parametrize(("accumulate", "batches", "start"), [(2, 4, 0), (3, 5, 0), (3, 5, 3)])
def test_accumulated_gradient_is_that_of_the_whole_group(tmp_path, accumulate, batches, start):
    # (3, 5): the last group holds 2 batches and must not be divided by 3; (3, 5, 3) resumes into it.
    trainer = make_trainer(tmp_path, train_size=BATCH * batches, accumulate=accumulate)
    data = epoch_batches(trainer.train_loader)
    steps = record_steps(trainer.optimizer)
    trainer.batch_in_epoch = start
    trainer.train_epoch(0)
    groups = [range(first, min(first + accumulate, batches)) for first in range(start, batches, accumulate)]
    assert len(steps) == len(groups) == trainer.global_step
    for (params, grads), group in zip(steps, groups):
        images = torch.cat([data[i][0] for i in group])
        targets = torch.cat([data[i][1] for i in group])
        for got, expected in zip(grads, reference_gradient(params, images, targets)):
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


def test_gradient_clipping_bounds_the_norm_and_scales_the_update(tmp_path):
    clip, lr = 1e-3, 0.5
    unclipped = make_trainer(tmp_path / "free", lr=lr, limit_train_batches=1)
    free_steps = record_steps(unclipped.optimizer)
    unclipped.train_epoch(0)
    trainer = make_trainer(tmp_path / "clipped", lr=lr, grad_clip=clip, limit_train_batches=1)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    images, targets = epoch_batches(trainer.train_loader)[0]
    steps = record_steps(trainer.optimizer)
    trainer.train_epoch(0)

    raw = reference_gradient(before, images, targets)
    assert total_norm(free_steps[0][1]) == pytest.approx(total_norm(raw), rel=1e-5)
    assert total_norm(raw) > 10 * clip
    assert total_norm(steps[0][1]) <= clip * (1 + 1e-5)
    scale = clip / (total_norm(raw) + 1e-6)  # the coefficient clip_grad_norm_ applies
    for after, start, gradient in zip(trainer.model.parameters(), before, raw):
        torch.testing.assert_close(after.detach(), start - lr * scale * gradient, rtol=1e-5, atol=1e-8)


def test_reported_loss_is_the_label_smoothed_cross_entropy(tmp_path):
    model = tiny_model()
    captured = []
    model.register_forward_hook(lambda module, inputs, output: captured.append(output.detach().clone()))
    trainer = make_trainer(tmp_path, model, label_smoothing=0.2, limit_train_batches=1)
    _, targets = epoch_batches(trainer.train_loader)[0]
    reported = trainer.train_epoch(0)["loss"]
    (logits,) = captured
    assert reported == pytest.approx(F.cross_entropy(logits, targets, label_smoothing=0.2).item(), rel=1e-6)
    assert reported != pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-3)


@pytest.mark.parametrize(("precision", "autocast", "activation"),
                         [("bf16", True, torch.bfloat16), ("32", False, torch.float32)])
def test_the_step_runs_in_the_chosen_precision(tmp_path, precision, autocast, activation):
    model = tiny_model()
    seen = {}
    model.register_forward_pre_hook(lambda module, inputs: seen.update(
        autocast=torch.is_autocast_enabled("cpu"), dtype=torch.get_autocast_dtype("cpu")))
    model[0].register_forward_hook(lambda module, inputs, output: seen.update(conv=output.dtype))
    trainer = make_trainer(tmp_path, model, precision=precision, limit_train_batches=1)
    trainer.train_epoch(0)
    assert seen["autocast"] is autocast and seen["conv"] == activation
    if autocast:
        assert seen["dtype"] == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32


def test_channels_last_reaches_the_model(tmp_path):
    model = tiny_model()
    layouts = []
    model.register_forward_pre_hook(lambda module, inputs: layouts.append(
        inputs[0].is_contiguous(memory_format=torch.channels_last)))
    trainer = make_trainer(tmp_path, model, channels_last=True, limit_train_batches=1)
    trainer.train_epoch(0)
    assert layouts == [True] and model[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_fp16_scales_the_loss_steps_and_checkpoints_the_scale(tmp_path):
    model = tiny_model()
    logit_grads = []

    def watch_logit_gradient(module, inputs, output):
        output.register_hook(lambda grad: logit_grads.append(grad.abs().max()))

    model.register_forward_hook(watch_logit_gradient)
    trainer = make_trainer(tmp_path / "a", model, precision="fp16", limit_train_batches=2)
    assert isinstance(trainer.scaler, torch.amp.GradScaler)
    before = [p.detach().clone() for p in model.parameters()]
    steps = record_steps(trainer.optimizer)
    trainer.train_epoch(0)
    assert len(steps) == trainer.global_step == 2
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    # the backward pass saw the scaled loss (d loss / d logit is at most 1 / batch unscaled) ...
    assert min(logit_grads) > 100 / BATCH
    # ... while the optimizer saw true gradients
    assert max(total_norm(grads) for _, grads in steps) < 100
    state = load_training_checkpoint(trainer.save("last.pt"))
    assert state["scaler"]["scale"] == trainer.scaler.get_scale() > 1
    resumed = make_trainer(tmp_path / "b", tiny_model(), precision="fp16")
    resumed.load_state_dict(state)
    assert resumed.scaler.get_scale() == trainer.scaler.get_scale()


# ------------------------------------------------------------ top-5 metric
def test_top5_is_undefined_with_fewer_than_five_classes(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="attn_resnet.engine.trainer")
    trainer = make_trainer(tmp_path, classes=3, epochs=2, tensorboard=True)
    summary = trainer.fit()
    assert summary["final"]["acc5"] is None and 0 <= summary["final"]["acc1"] <= 100
    assert [epoch["val_acc5"] for epoch in summary["history"]] == [None, None]
    notes = [r.getMessage() for r in caplog.records if "Top-5 accuracy is undefined" in r.getMessage()]
    assert notes == ["Top-5 accuracy is undefined for 3 classes: acc5 is reported as None."]
    assert any("val loss" in r.getMessage() and "acc5 n/a" in r.getMessage() for r in caplog.records)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert "val/acc1" in tags and "val/acc5" not in tags

    ten = evaluate_model(tiny_model(10), build_loader(tiny_dataset(12, 10), BATCH, train=False, num_workers=0), CPU)
    assert isinstance(ten["acc5"], float) and ten["acc1"] <= ten["acc5"] < 100


# ------------------------------------------------------- held-out val split
def test_with_a_test_set_final_metrics_are_the_last_epochs_test_metrics(tmp_path):
    test_loader = build_loader(tiny_dataset(12, 10, seed=2, train=False), BATCH, train=False, num_workers=0)
    trainer = make_trainer(tmp_path, classes=10, epochs=2, lr=0.5, test_loader=test_loader, tensorboard=True)
    summary = trainer.fit()
    history = summary["history"]
    assert {"test_loss", "test_acc1", "test_acc5"} <= set(history[0])
    tested = evaluate_model(trainer.model, test_loader, CPU)
    assert summary["final"] == pytest.approx({k: tested[k] for k in ("acc1", "acc5", "loss")})
    assert summary["final"] == {k: history[-1][f"test_{k}"] for k in ("acc1", "acc5", "loss")}
    assert summary["final_val"] == {k: history[-1][f"val_{k}"] for k in ("acc1", "acc5", "loss")}
    assert summary["final_val"]["loss"] != summary["final"]["loss"]
    val_acc1 = [epoch["val_acc1"] for epoch in history]
    assert summary["best"] == {"acc1": max(val_acc1), "epoch": val_acc1.index(max(val_acc1)) + 1}
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert {"test/loss", "test/acc1", "test/acc5", "val/acc1"} <= set(events.Tags()["scalars"])
    assert [e.value for e in events.Scalars("test/loss")] == pytest.approx([e["test_loss"] for e in history])


def test_without_a_test_set_final_metrics_are_the_val_metrics(tmp_path):
    trainer = make_trainer(tmp_path, classes=10, epochs=1, tensorboard=True)
    summary = trainer.fit()
    (epoch,) = summary["history"]
    assert "final_val" not in summary and not any(key.startswith("test_") for key in epoch)
    assert summary["final"] == {k: epoch[f"val_{k}"] for k in ("acc1", "acc5", "loss")}
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert not any(tag.startswith("test/") for tag in events.Tags()["scalars"])


# ------------------------------------------------------ validation frequency
def test_val_every_epochs_validates_every_nth_and_the_last_epoch_without_changing_training(tmp_path, caplog):
    def dropout_model() -> nn.Sequential:  # dropout: any draw from the global RNG by evaluation would show
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Dropout(0.5), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(6, 10))

    def run(folder, **settings):
        test_loader = build_loader(tiny_dataset(12, 10, seed=2, train=False), BATCH, train=False, num_workers=0)
        trainer = make_trainer(tmp_path / folder, dropout_model(), classes=10, epochs=5, lr=0.5,
                               test_loader=test_loader, **settings)
        splits = []
        evaluate = trainer.evaluate
        trainer.evaluate = lambda loader, split: splits.append((trainer.epoch + 1, split)) or evaluate(loader, split)
        torch.manual_seed(1)
        return trainer, trainer.fit(), splits

    every, every_summary, every_splits = run("every")
    with caplog.at_level(logging.INFO, logger="attn_resnet.engine.trainer"):
        sparse, summary, splits = run("sparse", val_every_epochs=2, tensorboard=True)
    assert splits == [(2, "val"), (2, "test"), (4, "val"), (4, "test"), (5, "val"), (5, "test")]
    assert len(every_splits) == 10
    # the same training: equal weights, and equal metrics wherever both validated
    for a, b in zip(every.model.parameters(), sparse.model.parameters()):
        assert torch.equal(a, b)
    history = summary["history"]
    assert [record["epoch"] for record in history] == [1, 2, 3, 4, 5]
    for record, full in zip(history, every_summary["history"]):
        assert record["train_loss"] == full["train_loss"]
        if record["epoch"] in (2, 4, 5):
            assert {k: v for k, v in record.items() if k.startswith(("val_", "test_"))} == \
                   {k: v for k, v in full.items() if k.startswith(("val_", "test_"))}
        else:
            assert not any(key.startswith(("val_", "test_")) for key in record)
    assert summary["final"] == every_summary["final"] and summary["final_val"] == every_summary["final_val"]
    validated = {record["epoch"]: record["val_acc1"] for record in history if "val_acc1" in record}
    best_epoch = max(validated, key=lambda epoch: (validated[epoch], -epoch))
    assert summary["best"] == {"acc1": validated[best_epoch], "epoch": best_epoch}
    assert load_training_checkpoint(tmp_path / "sparse" / "checkpoints" / "best.pt")["epoch"] == best_epoch
    assert load_training_checkpoint(tmp_path / "sparse" / "checkpoints" / "last.pt")["epoch"] == 5
    events = EventAccumulator(str(tmp_path / "sparse"))
    events.Reload()
    assert [e.step for e in events.Scalars("val/acc1")] == [2, 4, 5]
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert lines[0].startswith("epoch 1/5  train loss") and "val" not in lines[0] and "| lr " in lines[0]
    assert "| val loss" in lines[1] and "| test loss" in lines[1]


def test_the_epoch_line_shows_the_lr_the_epoch_ended_at(tmp_path, caplog):
    from attn_resnet.engine.optim import lr_factor_schedule

    def run(folder, schedule):
        model = tiny_model()
        trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1),
                          lambda steps: lr_factor_schedule(schedule, 1, steps),
                          build_loader(tiny_dataset(16), BATCH, train=True, num_workers=0),
                          build_loader(tiny_dataset(8, seed=1, train=False), BATCH, train=False, num_workers=0),
                          TrainerSettings(epochs=1, progress=False), tmp_path / folder, CPU)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="attn_resnet.engine.trainer"):
            (record,) = trainer.fit()["history"]
        (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
        return record, line

    # One epoch of cosine in 4 steps: the steps ran at 0.1 x (1, 0.854, 0.5, 0.146).
    last = 0.1 * 0.5 * (1 + math.cos(math.pi * 3 / 4))
    record, line = run("cosine", "cosine")
    assert record["lr"] == pytest.approx(0.1) and record["lr_end"] == pytest.approx(last)  # lr keeps its meaning
    assert f"| lr 0.1 -> {last:.4g} |" in line, line
    record, line = run("constant", "constant")
    assert record["lr"] == record["lr_end"] == pytest.approx(0.1)
    assert "| lr 0.1 |" in line, line


def test_checkpoint_every_epochs_writes_every_nth_and_the_last_and_resumes_from_them(tmp_path):
    def dropout_model() -> nn.Sequential:  # dropout: the resumed run must restore the RNG too
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Dropout(0.5), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(6, 10))

    every = make_trainer(tmp_path / "every", dropout_model(), classes=10, epochs=5, lr=0.5)
    torch.manual_seed(1)
    every.fit()
    sparse = make_trainer(tmp_path / "sparse", dropout_model(), classes=10, epochs=5, lr=0.5,
                          checkpoint_every_epochs=2)
    written, kept = [], tmp_path / "after_epoch_2.pt"
    save = sparse.save

    def recording_save(name):
        path = save(name)
        written.append((sparse.epoch, name))
        if (sparse.epoch, name) == (2, "last.pt"):
            kept.write_bytes(path.read_bytes())
        return path

    sparse.save = recording_save
    torch.manual_seed(1)
    sparse.fit()
    assert [epoch for epoch, name in written if name == "last.pt"] == [2, 4, 5]
    best = [epoch for epoch, name in written if name == "best.pt"]
    assert best and best[-1] == sparse.best_epoch
    for a, b in zip(every.model.parameters(), sparse.model.parameters()):
        assert torch.equal(a, b)
    # a run stopped after epoch 3 resumes from epoch 2's checkpoint and ends with the same weights
    resumed = make_trainer(tmp_path / "resumed", dropout_model(), classes=10, epochs=5, lr=0.5,
                           checkpoint_every_epochs=2)
    torch.manual_seed(123)  # the checkpoint's RNG state, loaded with it, replaces this one
    resumed.load_state_dict(load_training_checkpoint(kept))
    assert resumed.epoch == 2
    resumed.fit()
    for a, b in zip(every.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


def test_validation_and_checkpoint_frequencies_must_be_positive_integers(tmp_path):
    for key in ("val_every_epochs", "checkpoint_every_epochs"):
        for value in (0, -1, 1.5, True):
            with pytest.raises(ValueError, match=f"trainer.{key}"):
                make_trainer(tmp_path, **{key: value})


# ----------------------------------------------------------------- progress
class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def progress_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "attn_resnet.engine.progress"]


def test_progress_lines_off_a_terminal_for_training_and_validation(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="attn_resnet.engine.progress")
    clock, stream = FakeClock(), io.StringIO()
    model = tiny_model()
    model.register_forward_hook(lambda *args: setattr(clock, "now", clock.now + 10.0))  # 10 s per batch
    reporter = ProgressReporter(interval=30, stream=stream, clock=clock)
    trainer = make_trainer(tmp_path, model, train_size=6 * BATCH, val_size=4 * BATCH, reporter=reporter)

    trainer.train_epoch(0)
    train_lines = progress_lines(caplog)
    assert len(train_lines) == 2
    assert train_lines[0].startswith("train epoch 1/1: 3/6 batches (50%), 0.4 img/s, elapsed 0:30, ETA 0:30, loss ")
    assert train_lines[1].startswith("train epoch 1/1: 6/6 batches (100%), 0.4 img/s, elapsed 1:00, ETA 0:00, ")
    assert ", acc " in train_lines[0] and ", lr 0.1" in train_lines[0]

    caplog.clear()
    trainer.evaluate()
    assert progress_lines(caplog) == ["val: 3/4 batches (75%), 0.4 img/s, elapsed 0:30, ETA 0:10"]
    assert stream.getvalue() == ""  # no bar off a terminal


def test_progress_line_after_a_mid_epoch_resume_counts_from_the_resume(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="attn_resnet.engine.progress")
    clock = FakeClock()
    model = tiny_model()
    model.register_forward_hook(lambda *args: setattr(clock, "now", clock.now + 10.0))
    reporter = ProgressReporter(interval=20, stream=io.StringIO(), clock=clock)
    trainer = make_trainer(tmp_path, model, train_size=6 * BATCH, reporter=reporter)
    trainer.batch_in_epoch = 2
    trainer.train_epoch(0)
    assert progress_lines(caplog)[0].startswith("train epoch 1/1: 4/6 batches (67%), 0.4 img/s, elapsed 0:20, "
                                                "ETA 0:20")


def test_statistics_are_read_only_when_a_line_is_due():
    clock, reads = FakeClock(), []
    reporter = ProgressReporter(interval=30, stream=io.StringIO(), clock=clock)
    with reporter.phase("train", 10, stats=lambda: reads.append(clock.now) or {"loss": "1.0"}) as progress:
        for _ in range(10):
            clock.now += 10
            progress.update(BATCH)
    assert reads == [1030.0, 1060.0, 1090.0]


def test_progress_off_reports_nothing_and_a_terminal_gets_a_bar(tmp_path, caplog, capsys):
    caplog.set_level(logging.INFO, logger="attn_resnet.engine.progress")
    # settings.progress=false: no lines even when one would be due after every batch
    quiet = make_trainer(tmp_path / "quiet", progress=False, progress_interval=1e-9)
    quiet.train_epoch(0)
    quiet.evaluate()
    assert progress_lines(caplog) == [] and capsys.readouterr().err == ""
    chatty = make_trainer(tmp_path / "chatty", progress=True, progress_interval=1e-9)
    chatty.train_epoch(0)
    chatty.evaluate()
    assert [line.split(":")[0] for line in progress_lines(caplog)] == ["train epoch 1/1"] * 2 + ["val"] * 2
    caplog.clear()
    # progress_interval=0: no lines, but a terminal still gets its bar
    terminal = FakeTerminal()
    make_trainer(tmp_path / "bar", reporter=make_reporter(interval=0, stream=terminal)).train_epoch(0)
    assert "train epoch 1/1" in terminal.getvalue() and progress_lines(caplog) == []
    silent = FakeTerminal()
    make_trainer(tmp_path / "off", reporter=make_reporter(enabled=False, stream=silent)).train_epoch(0)
    assert silent.getvalue() == ""


def test_a_terminal_of_zero_columns_gets_log_lines_instead_of_a_bar(tmp_path, caplog, monkeypatch):
    # Some consoles (an IDE's run pane, a container without a size) say they are terminals of 0 columns:
    # a bar there shows nothing at all, and log lines would have been skipped for the bar.
    import os

    import attn_resnet.engine.progress as progress

    class SizedTerminal(FakeTerminal):
        def fileno(self) -> int:
            return 2

    caplog.set_level(logging.INFO, logger="attn_resnet.engine.progress")
    columns = {"now": 0}
    monkeypatch.setattr(progress.os, "get_terminal_size", lambda fd: os.terminal_size((columns["now"], 24)))
    narrow = SizedTerminal()
    make_trainer(tmp_path / "narrow", reporter=make_reporter(interval=1e-9, stream=narrow)).train_epoch(0)
    assert narrow.getvalue() == ""  # no bar
    assert [line.split(":")[0] for line in progress_lines(caplog)] == ["train epoch 1/1"] * 2
    caplog.clear()
    columns["now"] = 120  # a terminal of a usable width keeps its bar
    wide = SizedTerminal()
    make_trainer(tmp_path / "wide", reporter=make_reporter(interval=1e-9, stream=wide)).train_epoch(0)
    assert "train epoch 1/1" in wide.getvalue() and progress_lines(caplog) == []


def make_reporter(**options) -> ProgressReporter:
    return ProgressReporter(**{"interval": 30, **options})


def test_format_duration():
    assert [format_duration(s) for s in (0, 59.6, 61, 3599, 3600, 90061)] == \
        ["0:00", "1:00", "1:01", "59:59", "1:00:00", "25:01:01"]
    assert format_duration(float("inf")) == "?"
