"""Ctrl-C: a first SIGINT stops the run at the next step boundary with a checkpoint, a second at once; either way
one paragraph names the run folder and the command that resumes it, and results.json says "interrupted"."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from attn_resnet.app import train
from attn_resnet.engine.checkpoint import load_training_checkpoint
from attn_resnet.engine.trainer import Trainer
from attn_resnet.models.official import CheckpointError
from attn_resnet.signals import RunInterrupted

from helpers import FAST, REPO, compose_train, run_script

ARGS = FAST + ["trainer.epochs=2", "data.train_size=64", "aug.cutout=4", "trainer.ema_decay=0.9"]


def read_results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


def _ctrl_c_at_step(monkeypatch, step: int, presses: int = 1) -> None:
    """Deliver real SIGINTs to this process right after optimizer step ``step``."""
    original = Trainer._optimizer_step

    def step_then_signal(self):
        original(self)
        if self.global_step == step:
            for _ in range(presses):
                os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(Trainer, "_optimizer_step", step_then_signal)


def _same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def test_ctrl_c_stops_after_the_step_with_a_checkpoint_that_resumes_exactly(tmp_path, monkeypatch, caplog):
    train(compose_train(ARGS), tmp_path / "reference")
    run = tmp_path / "run"
    _ctrl_c_at_step(monkeypatch, step=11)  # 8 steps an epoch: the 3rd step of the 2nd epoch
    with pytest.raises(RunInterrupted) as error:
        train(compose_train(ARGS), run)
    message = str(error.value)
    assert "during epoch 2/2, after batch 3 of 8" in message and f"Run folder: {run}" in message
    assert f"hydra.run.dir={run}" in message and "python train.py" in message and "\n" not in message
    state = load_training_checkpoint(run / "checkpoints" / "last.pt")
    assert (state["epoch"], state["batch_in_epoch"], state["global_step"]) == (1, 3, 11)
    results = read_results(run)
    assert results["status"] == "interrupted" and results["error"] == message

    monkeypatch.undo()
    with caplog.at_level(logging.INFO):
        train(compose_train(ARGS), run)
    # The resume names the place the stop named, in the same words (epochs from 1, as the epoch lines).
    assert "Resumed from" in caplog.text and "during epoch 2/2, after batch 3 of 8" in caplog.text
    reference = load_training_checkpoint(tmp_path / "reference" / "checkpoints" / "last.pt")
    resumed = load_training_checkpoint(run / "checkpoints" / "last.pt")
    assert _same_weights(reference["model"], resumed["model"])
    assert _same_weights(reference["callbacks"]["ema"]["weights"], resumed["callbacks"]["ema"]["weights"])
    assert read_results(run)["final"] == read_results(tmp_path / "reference")["final"]
    assert read_results(run)["status"] == "completed"


def test_ctrl_c_with_accumulation_stops_at_the_end_of_a_group_and_resumes_exactly(tmp_path, monkeypatch):
    # With trainer.accumulate=3 the 8 batches of an epoch form the groups 1-3, 4-6 and 7-8: a stop
    # between two micro-batches of a group would drop the gradients summed so far.
    args = FAST + ["data.train_size=64", "trainer.accumulate=3"]
    train(compose_train(args), tmp_path / "reference")
    run = tmp_path / "run"
    _ctrl_c_at_step(monkeypatch, step=1)  # the first group's step, after batch 3
    with pytest.raises(RunInterrupted, match="during epoch 1/1, after batch 3 of 8"):
        train(compose_train(args), run)
    state = load_training_checkpoint(run / "checkpoints" / "last.pt")
    assert (state["epoch"], state["batch_in_epoch"], state["global_step"]) == (0, 3, 1)

    monkeypatch.undo()
    train(compose_train(args), run)
    reference = load_training_checkpoint(tmp_path / "reference" / "checkpoints" / "last.pt")
    resumed = load_training_checkpoint(run / "checkpoints" / "last.pt")
    assert resumed["global_step"] == reference["global_step"] == 3
    assert _same_weights(reference["model"], resumed["model"])
    assert read_results(run)["final"] == read_results(tmp_path / "reference")["final"]


def test_ctrl_c_at_an_epoch_end_stops_there(tmp_path, monkeypatch, caplog):
    _ctrl_c_at_step(monkeypatch, step=8)  # the last step of the first epoch: it validates, saves, then stops
    with pytest.raises(RunInterrupted, match="after epoch 1/2"):
        train(compose_train(ARGS), tmp_path)
    state = load_training_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert (state["epoch"], state["batch_in_epoch"]) == (1, 0)
    assert read_results(tmp_path)["status"] == "interrupted"
    monkeypatch.undo()
    with caplog.at_level(logging.INFO):
        train(compose_train(ARGS), tmp_path)
    resumed = next(line for line in caplog.text.splitlines() if "Resumed from" in line)
    assert "after epoch 1/2" in resumed and "epoch 0" not in resumed, resumed


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    _ctrl_c_at_step(monkeypatch, step=11, presses=2)
    with pytest.raises(RunInterrupted) as error:
        train(compose_train(ARGS), tmp_path)
    assert "at once" in str(error.value) and "is kept" in str(error.value)
    state = load_training_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert (state["epoch"], state["batch_in_epoch"]) == (1, 0)  # the end of epoch 1: the last one written
    assert read_results(tmp_path)["status"] == "interrupted"


def test_rerunning_a_folder_without_a_checkpoint_says_it_starts_afresh(tmp_path, caplog):
    (tmp_path / "results.json").write_text(json.dumps({"status": "interrupted"}))
    with caplog.at_level(logging.WARNING):
        train(compose_train(FAST), tmp_path)
    assert "No checkpoint to resume from" in caplog.text and "interrupted" in caplog.text


def test_a_real_ctrl_c_exits_130_with_one_paragraph_and_resumes(tmp_path):
    run = tmp_path / "run"
    args = ARGS + ["trainer.epochs=3", "trainer.checkpoint_every_steps=2", f"hydra.run.dir={run}"]
    process = subprocess.Popen([sys.executable, "train.py", *args], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    last, deadline, sent = run / "checkpoints" / "last.pt", time.time() + 240, False
    while time.time() < deadline and process.poll() is None and not sent:
        if last.is_file():
            try:
                state = load_training_checkpoint(last)
            except CheckpointError:
                continue
            if state["epoch"] >= 1:  # the second epoch has started
                process.send_signal(signal.SIGINT)
                sent = True
        time.sleep(0.05)
    stdout, stderr = process.communicate(timeout=240)
    assert sent, "the run finished before it could be interrupted"
    output = stdout + stderr
    assert process.returncode == 130, output[-3000:]
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
    assert "Interrupted (Ctrl-C)" in output and f"hydra.run.dir={run}" in output
    assert read_results(run)["status"] == "interrupted"
    resumed = run_script("train.py", args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Resumed from" in (run / "train.log").read_text() and read_results(run)["status"] == "completed"
