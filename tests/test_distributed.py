"""Data-parallel training on the CPU with gloo: torchrun runs, SyncBatchNorm, killed ranks, and the pieces."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from attn_resnet.distributed_env import STAMP_VARIABLE, ProcessEnv, process_env
from attn_resnet.engine.distributed import GlooSyncBatchNorm, convert_sync_batchnorm
from attn_resnet.engine.metrics import TrainingMeters

from helpers import REPO, descendants, launch_env

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
# Tiny runs: synthetic 16x16 images, ResNet-18, deterministic kernels, one thread per rank.
TINY = [
    "data=synthetic",
    "data.image_size=16",
    "data.train_size=64",
    "data.val_size=31",      # odd: the two val shards differ in size (16 + 15)
    "data.val_batch_size=8",
    "model.depth=18",
    "trainer.device=cpu",
    "trainer.progress=false",
    "trainer.deterministic=true",
    "trainer.attention_maps_every=0",
]


def _run(command: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=launch_env())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _weights(run: Path, name: str = "last.pt") -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / name, map_location="cpu", weights_only=True)["model"]


# ------------------------------------------------------------------ torchrun end to end
def test_torchrun_two_ranks_share_one_run_folder_and_count_every_val_image_once(tmp_path):
    _run([*TORCHRUN, str(REPO / "train.py"), *TINY, "data.batch_size=8", "trainer.epochs=1",
          "optim.reference_batch_size=8"], cwd=tmp_path)
    runs = [path for path in (tmp_path / "outputs").glob("*/*") if path.is_dir()]
    assert len(runs) == 1, runs  # both ranks resolved the same ${run_stamp:}
    run = runs[0]
    assert len(list(run.glob("events.out.tfevents.*"))) == 1  # only rank 0 writes TensorBoard
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    log_text = (run / "train.log").read_text()
    assert log_text.count("Process group: 2 processes") == 1  # one log, rank 0's
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "completed"
    assert (results["world_size"], results["batch_size_per_process"], results["global_batch_size"]) == (2, 8, 16)
    assert results["lr"] == pytest.approx(0.1 * 16 / 8)  # the scaling rule sees the global batch
    assert results["history"][-1]["val_images"] == 31  # 16 + 15: no duplicate padding
    assert results["global_step"] == 64 // 16

    # The reduced metrics are those of the whole val set, each image once: evaluate the final
    # weights in one process and compare.
    from attn_resnet.app import build_model
    from attn_resnet.build import make_eval_loader
    from attn_resnet.engine.trainer import evaluate_model

    checkpoint = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert checkpoint["world_size"] == 2
    model = build_model(checkpoint["model_spec"])
    model.load_state_dict(checkpoint["model"])
    loader, _ = make_eval_loader(checkpoint["config"]["data"], 0, torch.device("cpu"))
    single = evaluate_model(model, loader, torch.device("cpu"))
    assert single["images"] == 31
    assert results["final"]["acc1"] == pytest.approx(single["acc1"])
    assert results["final"]["loss"] == pytest.approx(single["loss"], rel=1e-5)


@pytest.mark.slow  # three torchrun or train.py launches: about 25 s on 2 cores
def test_sync_batchnorm_two_ranks_equal_one_process_with_the_same_global_batch(tmp_path):
    # lr 0.01: at 0.05 these random-label steps diverge (loss 6 after three steps), and float
    # rounding differences grow chaotically (4e-7 after one step, 2e-3 after three on an Intel Xeon).
    common = [*TINY, "trainer.epochs=1", "trainer.limit_train_batches=3", "optim.lr=0.01"]
    one = tmp_path / "one"
    _run([sys.executable, str(REPO / "train.py"), *common, "data.batch_size=8", f"hydra.run.dir={one}"],
         cwd=tmp_path)
    synced = tmp_path / "synced"
    _run([*TORCHRUN, str(REPO / "train.py"), *common, "data.batch_size=4", "trainer.sync_bn=true",
          f"hydra.run.dir={synced}"], cwd=tmp_path)
    plain = tmp_path / "plain"
    _run([*TORCHRUN, str(REPO / "train.py"), *common, "data.batch_size=4", f"hydra.run.dir={plain}"], cwd=tmp_path)

    reference, with_sync, without_sync = _weights(one), _weights(synced), _weights(plain)
    assert with_sync.keys() == reference.keys()  # SyncBatchNorm keeps BatchNorm's state_dict keys
    # Float tolerance: sums in another order, amplified by three momentum SGD steps (4e-5 measured).
    for key, value in reference.items():
        if value.is_floating_point():
            torch.testing.assert_close(with_sync[key], value, rtol=1e-3, atol=5e-4, msg=key)
    # Without SyncBatchNorm each rank normalizes by its own 4 images: the weights differ far more.
    def gap(weights):
        return max((weights[key] - value).abs().max().item() for key, value in reference.items()
                   if value.is_floating_point())

    assert gap(without_sync) > 100 * gap(with_sync)


def _rank_of(pid: int) -> int | None:
    try:
        environ = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in environ:
        if item.startswith(b"RANK="):
            return int(item[5:])
    return None


@pytest.mark.slow  # a killed and a resumed torchrun run: about 50 s on 2 cores
def test_sigkill_of_one_rank_stops_both_and_the_resumed_run_equals_an_uninterrupted_one(tmp_path):
    common = [*TINY, "data.train_size=192", "data.batch_size=8", "trainer.epochs=2",
              "trainer.checkpoint_every_steps=1", "trainer.dist_timeout=60"]
    killed = tmp_path / "killed"
    process = subprocess.Popen([*TORCHRUN, str(REPO / "train.py"), *common, f"hydra.run.dir={killed}"],
                               cwd=tmp_path, env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        last = killed / "checkpoints" / "last.pt"
        deadline = time.monotonic() + 180
        step = 0
        while time.monotonic() < deadline and process.poll() is None:
            if last.is_file():
                try:
                    step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
                except Exception:  # noqa: BLE001 - replaced while being read; try again
                    step = 0
                if step >= 3:
                    break
            time.sleep(0.05)
        assert process.poll() is None and step >= 3, "the run ended before it could be killed"
        ranks = {_rank_of(pid): pid for pid in descendants(process.pid)}
        os.kill(ranks[1], signal.SIGKILL)
        killed_at = time.monotonic()
        output, _ = process.communicate(timeout=120)
        stopped_after = time.monotonic() - killed_at
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode != 0
    assert stopped_after < 90, stopped_after
    for pid in ranks.values():
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    results = json.loads((killed / "results.json").read_text())
    assert results["status"] == "failed", results["status"]
    assert "SIGTERM" in results["error"] or "Connection" in results["error"] or "rank" in results["error"].lower()
    saved_step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert saved_step >= 3

    # Resume in the same folder: both ranks continue from the checkpoint's step.
    _run([*TORCHRUN, str(REPO / "train.py"), *common, f"hydra.run.dir={killed}"], cwd=tmp_path)
    resumed = json.loads((killed / "results.json").read_text())
    assert resumed["status"] == "completed" and resumed["global_step"] == 2 * 192 // 16
    assert f"step {saved_step}" in (killed / "train.log").read_text().split("Resumed from", 1)[1].split("\n")[0]

    whole = tmp_path / "whole"
    _run([*TORCHRUN, str(REPO / "train.py"), *common, f"hydra.run.dir={whole}"], cwd=tmp_path)
    for key, value in _weights(whole).items():
        torch.testing.assert_close(_weights(killed)[key], value, rtol=0, atol=0, msg=key)


def _failing_run(tmp_path: Path, run: Path, extra: list[str]) -> tuple[subprocess.CompletedProcess, dict]:
    started = time.monotonic()
    result = subprocess.run([*TORCHRUN, str(REPO / "train.py"), *TINY, "data.batch_size=8", "trainer.epochs=1",
                             "trainer.dist_timeout=60", f"hydra.run.dir={run}", *extra], cwd=tmp_path,
                            capture_output=True, text=True, timeout=240, env=launch_env())
    assert result.returncode != 0
    assert time.monotonic() - started < 120  # no rank was left waiting in a collective
    return result, json.loads((run / "results.json").read_text())


def test_a_non_finite_loss_stops_both_ranks_at_the_same_log_point(tmp_path):
    run = tmp_path / "run"
    result, results = _failing_run(tmp_path, run, ["optim.lr=1e12", "trainer.log_every_steps=1"])
    assert results["status"] == "failed" and "NonFiniteLossError" in results["error"]
    assert not (run / "checkpoints" / "last.pt").exists()  # nothing written from the bad weights
    # Both ranks stop at the same read with the same message (the meters are gathered), naming the same batch.
    reports = [line.split(" - ", 1)[1] for line in (result.stdout + result.stderr).splitlines()
               if "The training loss became" in line]
    assert len(reports) == 2 and reports[0] == reports[1], reports


def test_a_checkpoint_rank_0_cannot_write_stops_the_other_rank_too(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").write_text("a file where the checkpoint folder should be")
    result, results = _failing_run(tmp_path, run, [])
    assert results["status"] == "failed" and "checkpoints" in results["error"]
    assert "Rank 0 could not write checkpoints/last.pt" in result.stdout + result.stderr


def test_torchrun_refuses_multirun_with_a_clear_error(tmp_path):
    result = subprocess.run([*TORCHRUN, str(REPO / "train.py"), "--multirun", *TINY, "seed=0,1"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, env=launch_env())
    assert result.returncode != 0
    assert "torchrun runs one training run" in result.stderr + result.stdout
    assert not (tmp_path / "multirun").exists()


# ------------------------------------------------------------------ pieces, in one process
def test_process_env_reads_torchrun_and_defaults_to_a_single_process():
    assert process_env({}) == ProcessEnv()
    env = process_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"})
    assert (env.rank, env.world_size, env.local_rank, env.local_world_size, env.launcher) == (3, 8, 1, 4, "torchrun")
    assert not env.is_main and env.distributed
    submitit = process_env({"RANK": "0", "WORLD_SIZE": "2", "SUBMITIT_EXECUTOR": "slurm"})
    assert submitit.launcher == "submitit" and submitit.is_main


def test_run_stamp_resolver_uses_the_agreed_stamp(monkeypatch):
    from omegaconf import OmegaConf

    import attn_resnet.config.resolvers  # noqa: F401

    monkeypatch.setenv(STAMP_VARIABLE, "2026-01-02_03-04-05_abcd")
    assert OmegaConf.create({"dir": "outputs/${run_stamp:}"}).dir == "outputs/2026-01-02_03-04-05_abcd"
    monkeypatch.delenv(STAMP_VARIABLE)
    stamp = OmegaConf.create({"dir": "${run_stamp:}"}).dir
    assert len(stamp) == len("2026-01-02_03-04-05_abcd") and stamp[4] == "-"


def test_meter_readings_of_several_ranks_sum_and_name_the_earliest_bad_batch():
    meters = TrainingMeters(torch.device("cpu"))
    rows = [[10.0, 3.0, 8.0, -1.0, 0.0, 1.0], [20.0, 5.0, 8.0, 6.0, float("inf"), 0.0],
            [5.0, 1.0, 8.0, 4.0, float("nan"), 1.0]]
    reading = meters._reading_of(rows)
    assert (reading.loss_sum, reading.correct, reading.images) == (35.0, 9.0, 24)
    assert reading.bad_batch == 4  # the earliest of any rank
    assert reading.extra == (0.0,)  # a flag is true only if true on every rank
    one = meters._reading_of([[10.0, 3.0, 8.0, -1.0, 0.0]])
    assert one.bad_batch is None and one.extra == ()


def _sync_bn_worker(rank: int, world_size: int, init_file: str, queue) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)
        batch = torch.randn(8, 4, 5, 3) * 3 + 1
        flat = torch.randn(8, 6) * 2 - 1
        model = convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(4)), torch.device("cpu"))
        vector = convert_sync_batchnorm(nn.BatchNorm1d(6), torch.device("cpu"))
        assert isinstance(model[0], GlooSyncBatchNorm) and isinstance(vector, GlooSyncBatchNorm)
        shard = batch[rank * 4:(rank + 1) * 4].clone().requires_grad_()
        shard_flat = flat[rank * 4:(rank + 1) * 4].clone().requires_grad_()
        out = model(shard)
        out_flat = vector(shard_flat)
        # A loss that weighs channels differently, so the gradient through the statistics matters.
        weights = torch.arange(1.0, 5.0).view(1, 4, 1, 1)
        ((out * weights).pow(2).sum() + out_flat.pow(3).sum()).backward()
        tensors = (out.detach(), shard.grad, out_flat.detach(), shard_flat.grad,
                   model[0].running_mean, model[0].running_var, model[0].weight.grad)
        # Sent as numpy arrays, which pickle by value: a tensor on a torch queue travels as a shared-memory
        # handle that the receiver must fetch from this process, and this process may have exited by then.
        queue.put((rank, *(tensor.detach().numpy().copy() for tensor in tensors)))
    finally:
        dist.destroy_process_group()


def test_gloo_sync_batchnorm_equals_batchnorm_over_the_global_batch(tmp_path):
    context = mp.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=_sync_bn_worker, args=(rank, 2, str(tmp_path / "init"), queue))
                 for rank in range(2)]
    for process in processes:
        process.start()
    received = sorted((queue.get(timeout=120) for _ in processes), key=lambda item: item[0])
    results = [(rank, *(torch.from_numpy(array) for array in arrays)) for rank, *arrays in received]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0

    torch.manual_seed(0)
    batch = (torch.randn(8, 4, 5, 3) * 3 + 1).requires_grad_()
    flat = (torch.randn(8, 6) * 2 - 1).requires_grad_()
    norm, norm_flat = nn.BatchNorm2d(4), nn.BatchNorm1d(6)
    out, out_flat = norm(batch), norm_flat(flat)
    weights = torch.arange(1.0, 5.0).view(1, 4, 1, 1)
    ((out * weights).pow(2).sum() + out_flat.pow(3).sum()).backward()

    torch.testing.assert_close(torch.cat([r[1] for r in results]), out.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([r[2] for r in results]), batch.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.cat([r[3] for r in results]), out_flat.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([r[4] for r in results]), flat.grad, rtol=1e-4, atol=1e-5)
    for rank_result in results:
        torch.testing.assert_close(rank_result[5], norm.running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(rank_result[6], norm.running_var, rtol=1e-5, atol=1e-6)
    # Each rank holds the gradient of its own shard's loss; DDP's all-reduce would sum them.
    torch.testing.assert_close(results[0][7] + results[1][7], norm.weight.grad, rtol=1e-4, atol=1e-5)
