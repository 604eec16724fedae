"""Run-folder files: atomic writes that fail cleanly, the run lock, stale temp files, checkpoint errors."""

import errno
import json
import os
import pickle
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from attn_resnet.engine.checkpoint import save_atomic
from attn_resnet.models.official import CheckpointError, read_checkpoint
from attn_resnet.runfiles import (
    RunFolderBusyError,
    RunFolderError,
    RunLock,
    check_room,
    describe_os_error,
    ensure_run_folder,
    remove_stale_temp_files,
    write_json_atomic,
)

from helpers import disk_with_free

REPO = Path(__file__).resolve().parents[1]


def fails_with(code):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return fail


def leftovers(folder):
    return sorted(path.name for path in Path(folder).iterdir() if path.name.endswith(".tmp"))


def test_imports_without_torch():
    check = "import attn_resnet.runfiles, sys; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", check], check=True, cwd=REPO)


# ------------------------------------------------------------------ error text
@pytest.mark.parametrize(
    "code,advice",
    [
        (errno.ENOSPC, "is full"),
        (errno.EDQUOT, "quota"),
        (errno.EACCES, "is not writable"),
        (errno.EPERM, "is not writable"),
        (errno.EROFS, "read-only"),
        (errno.EIO, "Input/output error"),
    ],
)
def test_os_errors_become_advice_naming_the_path(tmp_path, code, advice):
    path = tmp_path / "run" / "results.json"
    error = describe_os_error(OSError(code, os.strerror(code)), path, "write")
    message = str(error)
    assert isinstance(error, RunFolderError) and isinstance(error, OSError)
    assert error.errno == code
    assert message.startswith(f"Could not write {str(path)!r}")
    assert advice in message
    assert "hydra.run.dir" in message


def test_full_disk_and_read_only_name_the_folder_that_refused(tmp_path):
    path = tmp_path / "run" / "results.json"
    full = describe_os_error(OSError(errno.ENOSPC, "No space left on device"), path, "write")
    read_only = describe_os_error(OSError(errno.EROFS, "Read-only file system"), path, "write")
    assert f"the disk holding {str(tmp_path)!r} is full" in str(full)
    assert f"{str(tmp_path)!r} is not writable" in str(read_only)


def test_file_in_the_way_is_named(tmp_path):
    blocker = tmp_path / "outputs"
    blocker.write_text("not a folder")
    for code in (errno.ENOTDIR, errno.EEXIST):
        message = str(describe_os_error(OSError(code, os.strerror(code)), blocker / "run" / "x.json", "write"))
        assert f"a file is in the way: {str(blocker)!r} is a file, not a folder" in message
        assert "remove or rename it" in message.lower()


# ----------------------------------------------------------------- atomic JSON
def test_write_json_atomic_writes_indented_json_with_the_usual_mode(tmp_path):
    path = tmp_path / "new" / "results.json"
    payload = {"status": "completed", "run_dir": tmp_path, "top1": 0.5}
    write_json_atomic(path, payload)
    assert path.read_text() == json.dumps(payload, indent=2, default=str) + "\n"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    write_json_atomic(path, {"status": "failed"})
    assert json.loads(path.read_text()) == {"status": "failed"}
    assert leftovers(path.parent) == []


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_failed_json_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch, failing):
    path = tmp_path / "results.json"
    write_json_atomic(path, {"status": "completed"})
    before = path.read_bytes()
    monkeypatch.setattr(os, failing, fails_with(errno.ENOSPC))
    with pytest.raises(RunFolderError, match="is full") as error:
        write_json_atomic(path, {"status": "running"})
    assert str(path) in str(error.value)
    assert isinstance(error.value.__cause__, OSError)
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_json_write_into_a_file_names_the_file_in_the_way(tmp_path):
    (tmp_path / "run").write_text("")
    with pytest.raises(RunFolderError, match="a file is in the way") as error:
        write_json_atomic(tmp_path / "run" / "results.json", {})
    assert str(tmp_path / "run") in str(error.value)


# ------------------------------------------------------------------ run folder
def test_ensure_run_folder_creates_parents_and_leaves_no_probe(tmp_path):
    folder = ensure_run_folder(tmp_path / "outputs" / "2024-01-01" / "run")
    assert folder.is_dir() and list(folder.iterdir()) == []


@pytest.mark.parametrize("blocker", ["outputs/run", "outputs"])
def test_ensure_run_folder_with_a_file_in_the_way(tmp_path, blocker):
    folder = tmp_path / "outputs" / "run"
    in_the_way = tmp_path / blocker
    in_the_way.parent.mkdir(parents=True, exist_ok=True)
    in_the_way.write_text("a file where a folder belongs")
    with pytest.raises(RunFolderError, match="a file is in the way") as error:
        ensure_run_folder(folder)
    assert f"{str(in_the_way)!r} is a file, not a folder" in str(error.value)


def test_ensure_run_folder_refuses_when_permissions_deny(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)
    with pytest.raises(RunFolderError, match="is not writable") as error:
        ensure_run_folder(tmp_path / "run")
    assert error.value.errno == errno.EACCES
    assert str(tmp_path / "run") in str(error.value)


def test_ensure_run_folder_probes_with_a_real_file(tmp_path, monkeypatch):
    # Root passes os.access even on a read-only mount; only creating a file tells.
    (tmp_path / "run").mkdir()
    monkeypatch.setattr(tempfile, "mkstemp", fails_with(errno.EROFS))
    with pytest.raises(RunFolderError, match="read-only") as error:
        ensure_run_folder(tmp_path / "run")
    assert str(tmp_path / "run") in str(error.value)


def test_remove_stale_temp_files_removes_only_our_temp_names(tmp_path):
    ours = [".last.pt.k3j_x9ab.tmp", ".results.json.tmp", ".results.json.a1b2c3d4.tmp", ".write-probe.zz.tmp"]
    kept = ["last.pt", "results.json", "notes.tmp", ".tmp", ".lock", ".last.pt.tmp.bak", "events.tfevents.1"]
    for name in ours + kept:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".hydra.tmp").mkdir()  # a folder with a temp-like name is left alone
    (tmp_path / ".link.tmp").symlink_to(tmp_path / "last.pt")  # so is a link
    nested = tmp_path / "checkpoints"
    nested.mkdir()
    (nested / ".best.pt.abc.tmp").write_bytes(b"x")  # subfolders are the caller's to name

    removed = remove_stale_temp_files(tmp_path)

    assert sorted(path.name for path in removed) == sorted(ours)
    assert all(path.parent == tmp_path for path in removed)
    remaining = {path.name for path in tmp_path.iterdir()}
    assert remaining == set(kept) | {".hydra.tmp", ".link.tmp", "checkpoints"}
    assert (nested / ".best.pt.abc.tmp").exists()
    assert remove_stale_temp_files(nested) == [nested / ".best.pt.abc.tmp"]
    assert remove_stale_temp_files(tmp_path / "missing") == []


# -------------------------------------------------------------------- run lock
HOLD_LOCK = """
import sys, time
from attn_resnet.runfiles import RunLock
RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_run_lock_refuses_a_second_process_until_the_holder_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderBusyError) as error:
            RunLock(tmp_path).acquire()
        message = str(error.value)
        assert f"pid {holder.pid}" in message and socket.gethostname() in message and "started 20" in message
        assert "Wait for it to finish, stop it, or choose another run folder (hydra.run.dir=" in message
        assert str(tmp_path) in message
        assert error.value.holder["pid"] == holder.pid
        holder.kill()  # SIGKILL: no cleanup code runs, the operating system drops the lock
        holder.wait()
        with RunLock(tmp_path) as lock:  # the killed holder's lock is gone with it
            assert lock.held
            assert json.loads(lock.path.read_text())["pid"] == os.getpid()
        assert not lock.held
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        holder.stdout.close()


def test_run_lock_release_lets_the_next_holder_in(tmp_path):
    assert not (tmp_path / ".lock").exists()
    first = RunLock(tmp_path).acquire()
    with pytest.raises(RunFolderBusyError, match=f"pid {os.getpid()}"):
        RunLock(tmp_path).acquire()  # a second open file conflicts even within one process
    first.release()
    first.release()
    with RunLock(tmp_path):
        pass
    assert remove_stale_temp_files(tmp_path) == [] and (tmp_path / ".lock").exists()


# ------------------------------------------------------------ checkpoint saves
def test_save_atomic_with_a_file_named_checkpoints(tmp_path):
    (tmp_path / "checkpoints").write_text("")
    path = tmp_path / "checkpoints" / "last.pt"
    with pytest.raises(RunFolderError, match="a file is in the way") as error:
        save_atomic({"weights": torch.zeros(2)}, path)
    message = str(error.value)
    assert message.startswith(f"Could not save the checkpoint {str(path)!r}")
    assert f"{str(tmp_path / 'checkpoints')!r} is a file, not a folder" in message


def _partial_save_then(error):
    def save(payload, stream):
        stream.write(b"half a checkpoint")
        raise error

    return save


def _wrapped_full_disk(payload, stream):
    stream.write(b"half a checkpoint")
    try:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    except OSError:
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")


@pytest.mark.parametrize(
    "target,replacement",
    [
        ("save", _partial_save_then(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))),
        ("save", _wrapped_full_disk),
        ("fsync", fails_with(errno.ENOSPC)),
    ],
    ids=["torch.save", "torch.save wrapping the OSError", "os.fsync"],
)
def test_full_disk_during_save_keeps_the_old_checkpoint(tmp_path, monkeypatch, target, replacement):
    path = tmp_path / "checkpoints" / "last.pt"
    save_atomic({"epoch": 1, "weights": torch.arange(4.0)}, path)
    before = path.read_bytes()
    monkeypatch.setattr(torch if target == "save" else os, target, replacement)
    with pytest.raises(RunFolderError, match="is full") as error:
        save_atomic({"epoch": 2, "weights": torch.arange(8.0)}, path)
    assert str(path) in str(error.value)
    assert path.read_bytes() == before
    assert leftovers(path.parent) == []


def test_other_errors_during_save_still_remove_the_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    monkeypatch.setattr(torch, "save", _partial_save_then(TypeError("cannot pickle 'generator' object")))
    with pytest.raises(TypeError, match="cannot pickle"):
        save_atomic({"bad": (i for i in range(2))}, path)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------ checkpoint reads
class RunsACommand:
    def __reduce__(self):
        return (os.system, ("true",))


UNSAFE_GLOBAL = f"{os.system.__module__}.system"  # posix.system on Linux and macOS


def assert_never_advises_unsafe_loading(message):
    assert "weights_only=False" not in message and "weights_only" not in message
    assert "safe_globals" not in message


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_unsafe_checkpoint_is_refused_naming_the_global(tmp_path, writer):
    path = tmp_path / "evil.pt"
    payload = {"state_dict": {"conv1.weight": torch.zeros(1)}, "payload": RunsACommand()}
    if writer == "torch.save":
        torch.save(payload, path)
    else:  # protocol 4+: torch's safe loader stops at the first frame, before it sees any global
        with open(path, "wb") as handle:
            pickle.dump(payload, handle)
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    message = str(error.value)
    assert UNSAFE_GLOBAL in message
    assert str(path) in message and "was not loaded" in message and "arbitrary code" in message
    assert "torch.save(model.state_dict(), path)" in message and "trusted source" in message
    assert "corrupt" not in message
    assert_never_advises_unsafe_loading(message)


def test_pickled_module_names_its_classes(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    message = str(error.value)
    assert "torch.nn.modules.linear.Linear" in message
    assert "torch._utils" not in message and "OrderedDict" not in message  # what torch itself allows is not blamed
    assert_never_advises_unsafe_loading(message)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_checkpoint_says_re_copy(tmp_path, damage):
    good = tmp_path / "good.pt"
    torch.save({"weights": torch.zeros(1000)}, good)
    path = tmp_path / "bad.pt"
    path.write_bytes({"truncated": good.read_bytes()[:1000], "garbage": b"\x00not a pickle" * 50, "empty": b""}[damage])
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    message = str(error.value)
    assert "corrupt or truncated" in message and "Re-copy it or re-download it" in message
    assert str(path) in message and "arbitrary code" not in message
    assert_never_advises_unsafe_loading(message)
    assert torch.equal(read_checkpoint(good)["weights"], torch.zeros(1000))


# ------------------------------------------------------------------ room on the disk
def test_check_room_refuses_a_disk_with_too_little_free_space(tmp_path, monkeypatch):
    asked = disk_with_free(monkeypatch, 120 * 10**6)
    folder = tmp_path / "run" / "checkpoints"  # not created yet: its nearest existing folder is asked
    with pytest.raises(RunFolderError) as error:
        check_room(folder, 270 * 10**6, "this run's checkpoints")
    message = str(error.value)
    assert asked == [str(tmp_path)]
    assert f"The disk holding {str(tmp_path)!r} has 120.0 MB free" in message
    assert "this run's checkpoints need about 270.0 MB" in message
    assert "Free space on it, or point hydra.run.dir" in message
    check_room(folder, 119 * 10**6, "this run's checkpoints")  # enough room: no error


def test_check_room_does_not_refuse_when_the_free_space_cannot_be_read(tmp_path, monkeypatch):
    import attn_resnet.runfiles as runfiles

    monkeypatch.setattr(runfiles.shutil, "disk_usage", fails_with(errno.EIO))
    check_room(tmp_path, 10**15, "anything")


def test_room_for_checkpoints_counts_three_less_the_ones_they_replace(tmp_path, monkeypatch):
    from attn_resnet.engine.checkpointing import check_room_for_checkpoints

    checkpoints = tmp_path / "checkpoints"
    size = 100_000
    disk_with_free(monkeypatch, 250_000)
    with pytest.raises(RunFolderError, match=r"last.pt and best.pt of about 0.1 MB each.* need about 0.3 MB"):
        check_room_for_checkpoints(checkpoints, size)  # a new run needs room for three
    checkpoints.mkdir()
    (checkpoints / "last.pt").write_bytes(b"x" * size)
    check_room_for_checkpoints(checkpoints, size)  # resuming: last.pt is replaced, two more are enough
    disk_with_free(monkeypatch, size - 1)
    with pytest.raises(RunFolderError):
        check_room_for_checkpoints(checkpoints, size)  # a temporary copy always needs room


@pytest.mark.parametrize(("name", "options", "slots"), [
    ("sgd", {"momentum": 0.9}, 1), ("sgd", {"momentum": 0.0}, 0), ("adamw", {}, 2)])
def test_checkpoint_size_estimate_is_a_close_lower_bound(name, options, slots):
    import io

    from torch import nn

    from attn_resnet.engine.checkpointing import checkpoint_size_estimate
    from attn_resnet.engine.optim import build_optimizer

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 64, 3), nn.BatchNorm2d(64), nn.Flatten(), nn.Linear(64 * 30 * 30, 10))
    optimizer = build_optimizer(model, name, 0.1, **options)
    estimate = checkpoint_size_estimate(model, optimizer)
    weights = sum(p.numel() * 4 for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    assert estimate == weights * (1 + slots) + buffers
    # After a step the optimizer holds its state; the saved file is a little larger than the estimate.
    nn.functional.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([0, 1])).backward()
    optimizer.step()
    stream = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, stream)
    assert estimate <= stream.tell() <= estimate * 1.02
