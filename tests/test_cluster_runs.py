"""Cluster-grade runs on one machine: stop signals (the ranks agree, one checkpoint, the requeue status), attempts
in results.json, two torchrun "nodes" on localhost, a SIGKILLed rank under --max-restarts, and submitit's local
executor requeueing a job after a simulated preemption and a time limit."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from attn_resnet.attempts import new_attempt, previous_attempts
from attn_resnet.signals import REQUEUE_EXIT_CODE, RunStopped, StopRequest, signal_numbers, stop_on_signals

from helpers import REPO, descendants, launch_env

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
# Tiny runs: synthetic 8x8 images, ResNet-18, deterministic kernels, one thread per rank; the ranks read their
# meters (and so agree on a stop) every 2 batches.
TINY = [
    "data=synthetic",
    "data.image_size=8",
    "data.val_size=16",
    "data.batch_size=8",
    "model.depth=18",
    "trainer.device=cpu",
    "trainer.progress=false",
    "trainer.deterministic=true",
    "trainer.attention_maps_every=0",
    "trainer.log_every_steps=2",
    "trainer.dist_timeout=60",
]
# Two epochs of 12 steps with two processes (batch 2 x 8).
TWO_RANKS = [*TINY, "data.train_size=192", "trainer.epochs=2"]


def _env() -> dict:
    """The child's environment: this tree's package first on the path (torchrun's workers import it too)."""
    env = launch_env()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests"), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _weights(run: Path, name: str = "last.pt") -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / name, map_location="cpu", weights_only=True)["model"]


def _assert_same_weights(run: Path, reference: Path) -> None:
    mine, theirs = _weights(run), _weights(reference)
    assert mine.keys() == theirs.keys()
    different = [key for key in theirs if not torch.equal(mine[key], theirs[key])]
    assert not different, different[:5]


def _results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def _run(command: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=_env())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _only_run_folder(cwd: Path) -> Path:
    runs = [path for path in (cwd / "outputs").glob("*/*") if path.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def _environ(pid: int) -> dict[str, str]:
    try:
        items = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return {}
    return dict(item.decode(errors="replace").split("=", 1) for item in items if b"=" in item)


def _wait_for(condition, timeout: float, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _training_started(run: Path):
    """True once rank 0 has logged the recipe line, written just before the loop starts (after every rank
    installed its stop handlers and joined the process group)."""
    log = run / "train.log"
    return lambda: log.is_file() and "Recipe:" in log.read_text()


@pytest.fixture(scope="module")
def two_rank_reference(module_tmp) -> Path:
    """The uninterrupted run that the stopped, restarted and two-node runs must equal: one node, two processes."""
    folder = module_tmp("reference")
    run = folder / "run"
    _run([*TORCHRUN, "--standalone", "--nproc_per_node=2", str(REPO / "train.py"), *TWO_RANKS,
          f"hydra.run.dir={run}"], cwd=folder)
    assert _results(run)["world_size"] == 2
    return run


# ------------------------------------------------------------------ pieces, in one process
def test_a_stop_signal_only_sets_the_flag_and_the_handlers_come_back():
    stop = StopRequest()
    before = signal.getsignal(signal.SIGUSR2)
    with stop_on_signals(stop, ["SIGTERM", "SIGUSR2"]):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGUSR2)
        os.kill(os.getpid(), signal.SIGUSR2)  # sent again (torchrun forwards what Slurm sent): one request
        assert stop.requested and stop.signals == ["SIGTERM", "SIGUSR2"]
        error = stop.error("after batch 3", (5, 9))
    assert signal.getsignal(signal.SIGUSR2) is before
    assert isinstance(error, RunStopped) and error.steps == (5, 9)
    assert str(error).startswith("Stopped on SIGTERM then SIGUSR2 after batch 3")
    assert 0 <= error.seconds < 5


def test_bad_stop_signal_names_are_refused_before_anything_runs():
    assert signal_numbers(["SIGTERM", "SIGUSR2"]) == {"SIGTERM": 15, "SIGUSR2": 12}
    for bad in ("SIGKILL", "TERM", "SIGFOO"):
        with pytest.raises(ValueError, match=f"Invalid signal '{bad}' in trainer.stop_signals"):
            signal_numbers([bad])
    from attn_resnet.config.validate import ConfigError, validate_train_config

    from helpers import compose_train

    with pytest.raises(ConfigError, match="SIGUSR3"):
        validate_train_config(compose_train(["trainer.stop_signals=[SIGTERM,SIGUSR3]"]))


def test_the_stop_flag_of_one_rank_reaches_every_rank_in_the_meter_reading():
    from attn_resnet.engine.metrics import TrainingMeters

    # Each rank's row: loss sum, hits, images, bad batch, bad loss, then the extras: finite weights and the stop
    # flag (1: none; minus the signal's number: a stop signal, here rank 1's SIGUSR2).
    rows = [[10.0, 3.0, 8.0, -1.0, 0.0, 1.0, 1.0], [20.0, 5.0, 8.0, -1.0, 0.0, 1.0, -float(signal.SIGUSR2)]]
    reading = TrainingMeters._reading_of(rows)
    assert reading.extra == (1.0, -float(signal.SIGUSR2))  # every rank reads rank 1's request, and its signal


def test_attempts_say_why_each_started_and_how_the_one_before_ended(tmp_path):
    first = new_attempt([], {})
    assert (first["attempt"], first["reason"]) == (1, "start")
    stopped = {**first, "status": "stopped", "signals": ["SIGTERM", "SIGUSR2"], "steps": [0, 7]}
    second = new_attempt([stopped], {"SLURM_RESTART_COUNT": "1", "SLURM_JOB_ID": "42"})
    assert second["reason"] == "Slurm requeue 1 of job 42, after attempt 1 stopped on SIGTERM then SIGUSR2"
    assert second["slurm_job_id"] == "42"
    killed = {**second, "status": "running"}
    third = new_attempt([stopped, killed], {"TORCHELASTIC_RESTART_COUNT": "1", "TORCHELASTIC_MAX_RESTARTS": "3",
                                            "TORCHELASTIC_RUN_ID": "abc"})
    assert third["reason"] == ("torchrun restart 1 of at most 3 (run id abc), after attempt 2 ended without a "
                               "record (the process was killed)")
    (tmp_path / "results.json").write_text(json.dumps({"status": "stopped", "attempts": [stopped, killed]}))
    assert previous_attempts(tmp_path) == [stopped, killed]
    # A completed run's later attempt writes results.last_attempt.json: its longer list is the newer one.
    (tmp_path / "results.last_attempt.json").write_text(json.dumps({"attempts": [stopped, killed, third]}))
    assert previous_attempts(tmp_path) == [stopped, killed, third]


# ------------------------------------------------------------------ stop signals, end to end
def _stopped_single_run(tmp_path: Path, signals: list[int]) -> tuple[Path, subprocess.CompletedProcess, list[str]]:
    run = tmp_path / "run"
    args = [*TINY, "data.train_size=128", "trainer.epochs=2", f"hydra.run.dir={run}"]
    process = subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=tmp_path, env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(_training_started(run), 240, "the training loop", process)
        for number in signals:
            process.send_signal(number)
            time.sleep(0.05)
        output, _ = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
    return run, subprocess.CompletedProcess(process.args, process.returncode, output, ""), args


def test_sigterm_then_sigusr2_stops_at_a_step_with_one_checkpoint_and_the_requeue_status(tmp_path):
    run, stopped, args = _stopped_single_run(tmp_path, [signal.SIGTERM, signal.SIGUSR2])
    assert stopped.returncode == REQUEUE_EXIT_CODE, stopped.stdout[-3000:]
    assert "Traceback" not in stopped.stdout
    results = _results(run)
    assert results["status"] == "stopped" and results["requeue"] is True
    # Outside a launcher the message gives the command that resumes it: its overrides and its folder.
    assert results["error"].endswith(" ".join(["by hand, the same command resumes it: python train.py",
                                               *args[:-1], f"hydra.run.dir={run}"]))
    (attempt,) = results["attempts"]
    # Both, each once (Python runs the handlers of signals pending together in the order of their numbers).
    assert sorted(attempt["signals"]) == ["SIGTERM", "SIGUSR2"] and attempt["status"] == "stopped"
    state = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    # Written by the stop alone: mid-epoch (no epoch had ended, so no other checkpoint was due), at the step
    # the attempt records; the log says so once.
    assert state["epoch"] == 0 and 0 < state["batch_in_epoch"] < 16
    assert attempt["steps"] == [0, state["global_step"]]
    assert not (run / "checkpoints" / "best.pt").exists()
    log = (run / "train.log").read_text()
    assert log.count("Stop requested") == 1
    assert f"Stop requested ({', '.join(attempt['signals'])})" in log
    assert re.search(r"Signal to exit: \d+\.\d s", log)

    # The same command continues in the same folder, to the weights of a run that was never stopped.
    _run([sys.executable, str(REPO / "train.py"), *args], cwd=tmp_path)
    results = _results(run)
    assert results["status"] == "completed" and [a["status"] for a in results["attempts"]] == ["stopped",
                                                                                             "completed"]
    assert results["attempts"][1]["reason"] == ("started again in the same folder, after attempt 1 stopped on "
                                                f"{' then '.join(attempt['signals'])}")
    assert log in (run / "train.log").read_text()  # the log goes on after the first attempt's lines
    reference = tmp_path / "reference"
    _run([sys.executable, str(REPO / "train.py"), *args[:-1], f"hydra.run.dir={reference}"], cwd=tmp_path)
    _assert_same_weights(run, reference)


# torchrun's own signal handling with USR2 added, as docs/clusters.md's sbatch script starts it.
FORWARD_USR2 = "--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR2"


def _torchrun_stop(tmp_path: Path, signals: list[int], ranks: tuple[int, ...]) -> tuple[Path, str, int]:
    """A 2-process run sent ``signals`` to the workers of ``ranks`` (as Slurm signals every process of a step), or,
    with no ranks, to torchrun itself, which forwards them to the workers."""
    run = tmp_path / "run"
    process = subprocess.Popen([*TORCHRUN, "--standalone", "--nproc_per_node=2", "--max-restarts=0", FORWARD_USR2,
                                str(REPO / "train.py"), *TWO_RANKS, f"hydra.run.dir={run}"], cwd=tmp_path,
                               env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        _wait_for(_training_started(run), 240, "the training loop", process)
        workers = {int(_environ(pid).get("RANK", -1)): pid for pid in descendants(process.pid)
                   if "train.py" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")}
        for number in signals:
            for pid in [workers[rank] for rank in ranks] or [process.pid]:
                os.kill(pid, number)
            time.sleep(0.05)
        output, _ = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    return run, output, process.returncode


def _exit_codes(torchrun_output: str) -> list[int]:
    """The workers' exit codes in torchrun's failure report."""
    return [int(code) for code in re.findall(r"exitcode\s*:\s*(-?\d+)", torchrun_output)]


@pytest.mark.slow  # a stopped and a resumed 2-process run: about 40 s on 2 cores
@pytest.mark.parametrize("signals, ranks", [([signal.SIGUSR2], (0, 1)), ([signal.SIGTERM, signal.SIGUSR2], (0, 1)),
                                            ([signal.SIGUSR2], (1,)), ([signal.SIGUSR2], ())],
                         ids=["usr2", "term-then-usr2", "one-rank", "to-torchrun"])
def test_a_signal_to_a_two_process_run_stops_every_rank_at_one_step_and_resumes_exactly(
        tmp_path, two_rank_reference, signals, ranks):
    run, output, status = _torchrun_stop(tmp_path, signals, ranks)
    assert status != 0
    if ranks:  # torchrun reports its workers' statuses when they end first; signalled itself, it does not
        assert _exit_codes(output) and set(_exit_codes(output)) == {REQUEUE_EXIT_CODE}, output[-3000:]
    results = _results(run)
    assert results["requeue"] is True
    assert results["status"] == "stopped", output[-3000:]
    state = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert state["world_size"] == 2 and state["epoch"] == 0 and state["batch_in_epoch"] % 2 == 0
    assert results["attempts"][0]["steps"] == [0, state["global_step"]]
    # One checkpoint, at one step: both ranks stopped at the reading where one of them asked.
    assert (run / "train.log").read_text().count("Stop requested") == 1
    assert output.count("Stop requested") == 2  # each rank's warning on the console, once
    _run([*TORCHRUN, "--standalone", "--nproc_per_node=2", str(REPO / "train.py"), *TWO_RANKS,
          f"hydra.run.dir={run}"], cwd=tmp_path)
    assert _results(run)["status"] == "completed"
    _assert_same_weights(run, two_rank_reference)


# ------------------------------------------------------------------ two torchrun "nodes", restarts
def _two_nodes(cwd: Path, rendezvous: str) -> list[subprocess.CompletedProcess]:
    """Two torchrun agents on localhost, one process each, started side by side in the same folder."""
    port = _free_port()
    if rendezvous == "static":
        nodes = [[f"--node_rank={rank}", "--master_addr=127.0.0.1", f"--master_port={port}"] for rank in (0, 1)]
    else:
        nodes = [["--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=two-nodes"]] * 2
    processes = [subprocess.Popen([*TORCHRUN, "--nnodes=2", "--nproc_per_node=1", *node, str(REPO / "train.py"),
                                   *TWO_RANKS], cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, start_new_session=True)
                  for node in nodes]
    try:
        finished = [process.communicate(timeout=300)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    for process, output in zip(processes, finished):
        assert process.returncode == 0, output[-3000:]
    return finished


@pytest.mark.parametrize("rendezvous", ["static", pytest.param("c10d", marks=pytest.mark.slow)])
def test_two_torchrun_nodes_share_one_run_folder_and_train_as_one_node_of_two(tmp_path, two_rank_reference,
                                                                            rendezvous):
    _two_nodes(tmp_path, rendezvous)
    run = _only_run_folder(tmp_path)  # both nodes' ranks resolved the same folder
    results = _results(run)
    assert results["status"] == "completed" and results["world_size"] == 2
    assert (run / "train.log").read_text().count("Process group: 2 processes") == 1  # rank 0's log only
    _assert_same_weights(run, two_rank_reference)


@pytest.mark.slow  # a run whose rank is killed, restarted by torchrun, and finished: about 40 s on 2 cores
def test_a_rank_killed_mid_epoch_under_max_restarts_finishes_in_the_same_folder_with_the_same_weights(
        tmp_path, two_rank_reference):
    process = subprocess.Popen([*TORCHRUN, "--standalone", "--nproc_per_node=2", "--max-restarts=1",
                                str(REPO / "train.py"), *TWO_RANKS, "trainer.checkpoint_every_steps=1"],
                               cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    killed_at = {}
    try:
        def mid_epoch_checkpoint() -> bool:
            for last in (tmp_path / "outputs").glob("*/*/checkpoints/last.pt"):
                try:
                    state = torch.load(last, map_location="cpu", weights_only=True)
                except Exception:  # noqa: BLE001 - replaced while being read; read it again
                    return False
                if state["epoch"] == 0 and state["global_step"] >= 3:
                    killed_at["step"] = state["global_step"]
                    return True
            return False

        _wait_for(mid_epoch_checkpoint, 240, "a mid-epoch checkpoint", process)
        workers = {int(_environ(pid).get("RANK", -1)): pid for pid in descendants(process.pid)
                   if "train.py" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")}
        os.kill(workers[1], signal.SIGKILL)
        output, _ = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, output[-4000:]
    run = _only_run_folder(tmp_path)  # the restarted ranks came back to the first attempt's folder
    results = _results(run)
    assert results["status"] == "completed"
    first, second = results["attempts"]
    assert first["status"] == "failed"  # rank 0 saw its peer go, and recorded it
    assert second["reason"].startswith("torchrun restart 1 of at most 1")
    resumed = (run / "train.log").read_text().split("Resumed from", 1)[1].split("\n")[0]
    assert "optimizer step" in resumed and int(re.search(r"optimizer step (\d+)", resumed).group(1)) >= \
        killed_at["step"]
    _assert_same_weights(run, two_rank_reference)


# ------------------------------------------------------------------ submitit's local executor through Hydra
ONE_PROCESS = [*TINY, "data.train_size=384", "trainer.epochs=2"]


@pytest.fixture(scope="module")
def one_process_reference(module_tmp) -> Path:
    folder = module_tmp("one_process_reference")
    run = folder / "run"
    _run([sys.executable, str(REPO / "train.py"), *ONE_PROCESS, f"hydra.run.dir={run}"], cwd=folder)
    return run


def _submitit_sweep(cwd: Path, launcher: list[str], interrupt=None, args: list[str] = ONE_PROCESS) -> tuple[Path, str]:
    """A one-job sweep on submitit's local executor; ``interrupt(job_folder, task_pids)`` runs once training started.
    The sweep folder is the default one (``multirun/<run stamp>``): a requeued job must find it again."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the sweep extra is not installed")
    process = subprocess.Popen([sys.executable, str(REPO / "train.py"), "--multirun", "hydra/launcher=submitit_local",
                                *launcher, *args], cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        if interrupt is not None:
            def job_started() -> bool:
                return any(_training_started(folder)() for folder in (cwd / "multirun").glob("*/0_*"))

            _wait_for(job_started, 240, "the job's training loop", process)
            (job,) = (cwd / "multirun").glob("*/0_*")
            tasks = [pid for pid in descendants(process.pid)
                     if "submitit.core._submit" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")]
            interrupt(job, tasks)
        output, _ = process.communicate(timeout=400)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, output[-3000:]
    (job,) = (cwd / "multirun").glob("*/0_*")  # one sweep folder, one job folder: the requeued job came back
    return job, output


def _preempt(job: Path, tasks: list[int]) -> None:
    """submitit's model of a Slurm preemption (``SlurmJob._interrupt``): SIGTERM, then its USR2."""
    assert len(tasks) == 1, tasks
    os.kill(tasks[0], signal.SIGTERM)
    time.sleep(0.05)
    os.kill(tasks[0], signal.SIGUSR2)


@pytest.mark.slow  # a submitit job preempted, requeued and finished, and its reference run: about 50 s on 2 cores
def test_a_preempted_submitit_job_requeues_resumes_and_equals_an_uninterrupted_run(tmp_path, one_process_reference):
    job, output = _submitit_sweep(tmp_path, ["hydra.launcher.timeout_min=60"], _preempt)
    results = _results(job)
    assert results["status"] == "completed", output[-3000:]
    first, second = results["attempts"]
    assert first["status"] == "stopped" and sorted(first["signals"]) == ["SIGTERM", "SIGUSR2"]
    assert second["reason"] == f"started again in the same folder, after attempt 1 stopped on {' then '.join(first['signals'])}"
    submitit_log = "".join(path.read_text() for path in (job.parent / ".submitit").glob("*/*_log.err"))
    assert "this job is preempted" in submitit_log  # submitit's own requeue handler decided
    _assert_same_weights(job, one_process_reference)


@pytest.mark.slow  # a job that reaches its time limit, is requeued and finishes, and its reference: about 100 s
def test_a_submitit_job_at_its_time_limit_requeues_resumes_and_equals_an_uninterrupted_run(tmp_path):
    # The local executor sends USR2 30 s before each attempt's time limit of 1 minute (its signal_delay_s), 30 s
    # after the attempt starts. The first attempt cannot finish by then: it waits 0.4 s after each of its 96 steps.
    # A resumed attempt runs at full speed, a few seconds here.
    args = [*TINY, "data.train_size=768", "trainer.epochs=1"]
    slow = ["+callbacks.slow._target_=slow_first_attempt.SlowFirstAttempt"]
    job, output = _submitit_sweep(tmp_path, ["hydra.launcher.timeout_min=1"], args=args + slow)
    results = _results(job)
    assert results["status"] == "completed", output[-3000:]
    attempts = results["attempts"]
    assert len(attempts) >= 2 and attempts[0]["status"] == "stopped" and attempts[0]["signals"] == ["SIGUSR2"]
    assert all(attempt["steps"][1] > attempt["steps"][0] for attempt in attempts[:-1])  # each made progress
    submitit_log = "".join(path.read_text() for path in (job.parent / ".submitit").glob("*/*_log.err"))
    assert "this job is timed-out" in submitit_log
    reference = tmp_path / "reference"
    _run([sys.executable, str(REPO / "train.py"), *args, f"hydra.run.dir={reference}"], cwd=tmp_path)
    _assert_same_weights(job, reference)


def test_a_run_requeued_by_slurm_finds_the_folder_of_its_first_attempt(tmp_path, monkeypatch):
    from helpers import compose_train

    monkeypatch.chdir(tmp_path)
    for variable in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    first = compose_train(["data=synthetic"], return_hydra_config=True).hydra.run.dir
    assert first.startswith("outputs/synthetic_resnet18_none/") and first.endswith("_slurm4242")
    Path(first).mkdir(parents=True)
    # Another run in the same job (not requeued) gets a folder of its own; the requeued job gets the first one back.
    assert compose_train(["data=synthetic"], return_hydra_config=True).hydra.run.dir != first
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert compose_train(["data=synthetic"], return_hydra_config=True).hydra.run.dir == first
    monkeypatch.setenv("SLURM_JOB_ID", "4243")  # another job: its own folder
    assert compose_train(["data=synthetic"], return_hydra_config=True).hydra.run.dir.endswith("_slurm4243")
    # A job of an array: the array's id and the task's index.
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "500")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert compose_train([], return_hydra_config=True).hydra.run.dir.endswith("_slurm500_3")


def test_a_resume_with_another_number_of_processes_is_refused_or_continues_saying_it_is_not_exact(tmp_path, caplog):
    import logging

    from attn_resnet.app import train
    from attn_resnet.config.validate import ConfigError

    from helpers import FAST, compose_train

    run = tmp_path / "run"
    train(compose_train(FAST), run)
    last = run / "checkpoints" / "last.pt"
    state = torch.load(last, map_location="cpu", weights_only=True)
    state["world_size"] = 2  # as if written by a 2-process run
    torch.save(state, last)
    with pytest.raises(ConfigError, match=r"world_size \(processes\): 2 -> 1"):
        train(compose_train(FAST + ["trainer.epochs=2"]), run)
    with caplog.at_level(logging.WARNING):
        results = train(compose_train(FAST + ["trainer.epochs=2", "trainer.resume_allow_changes=true"]), run)
    assert "no longer bit-exact" in caplog.text
    assert results["resume_changes"]["world_size (processes)"] == {"checkpoint": 2, "now": 1}
