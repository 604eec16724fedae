"""The run folder's own files: atomic writes, the lock a training process holds, and clear errors.

Imported before torch (it needs only the standard library), so that an unusable run folder
fails in a second with a sentence that says how to fix it, not after the slow imports.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Callable

_ELSEWHERE = "point hydra.run.dir (hydra.sweep.dir for --multirun) at another folder"
# What write_file_atomic leaves behind when it is killed: ".<name>.<random>.tmp" (mkstemp),
# and ".<name>.tmp", the fixed temp name that earlier versions used.
_TEMP_FILE = re.compile(r"\..+\.tmp")


class RunFolderError(OSError):
    """A run folder, or a file in it, that cannot be created or written; the message says how to fix it."""


class RunFolderBusyError(RunFolderError):
    """Another live training process holds the run folder's lock."""

    def __init__(self, message: str, holder: dict | None = None):
        super().__init__(message)
        self.holder = holder or {}


def _quoted(path: str | os.PathLike) -> str:
    return repr(os.fspath(path))


def _nearest_folder(path: Path) -> Path:
    """``path`` itself when it is a folder, else its closest existing ancestor: the folder that refused."""
    for candidate in (path, *path.parents):
        try:
            if candidate.is_dir():
                return candidate
        except OSError:
            continue
    return path


def _file_in_the_way(path: Path) -> Path | None:
    """The first component of ``path`` (from the root down) that exists but is not a folder."""
    for candidate in (*reversed(path.parents), path):
        try:
            if candidate.exists() and not candidate.is_dir():
                return candidate
        except OSError:
            return None
    return None


def describe_os_error(error: OSError, path: str | os.PathLike, action: str) -> RunFolderError:
    """The RunFolderError for ``error`` raised while trying to ``action`` ``path``: what went wrong, how to fix it.

    ``action`` completes "Could not ...", e.g. "write" or "save the checkpoint".
    """
    path = Path(path)
    code = error.errno
    reason = error.strerror or str(error) or type(error).__name__
    start = f"Could not {action} {_quoted(path)}"
    if code in (errno.ENOSPC, errno.EDQUOT):
        quota = " (or your quota on it is used up)" if code == errno.EDQUOT else ""
        message = (
            f"{start}: the disk holding {_quoted(_nearest_folder(path))} is full{quota} ({reason}). "
            f"Free space on it, or {_ELSEWHERE} on a disk with room."
        )
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        message = (
            f"{start}: {_quoted(_nearest_folder(path))} is not writable ({reason}: a read-only file "
            f"system or missing permissions). Make it writable, or {_ELSEWHERE} that you can write to."
        )
    elif code in (errno.ENOTDIR, errno.EEXIST) and (blocker := _file_in_the_way(path)) is not None:
        message = (
            f"{start}: a file is in the way: {_quoted(blocker)} is a file, not a folder. Remove or "
            f"rename it, or choose another run folder (hydra.run.dir=... or hydra.sweep.dir=...)."
        )
    elif code == errno.EISDIR and path.is_dir():
        message = (
            f"{start}: it is a folder, not a file. Remove or rename it, or choose another run folder "
            f"(hydra.run.dir=... or hydra.sweep.dir=...)."
        )
    else:
        name = errno.errorcode.get(code, "no errno") if code is not None else "no errno"
        message = f"{start}: {reason} ({name}). Check the disk and the folder, or {_ELSEWHERE}."
    folder_error = RunFolderError(message)
    folder_error.errno = code  # for callers that branch on it; str() stays the message
    return folder_error


def _os_error_in(error: BaseException | None) -> OSError | None:
    """The OSError that caused ``error`` (torch.save can wrap a failed write in a RuntimeError)."""
    while error is not None:
        if isinstance(error, OSError):
            return error
        error = error.__cause__ or error.__context__
    return None


def _remove_if_present(path: str | os.PathLike) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def usual_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0666 less the umask (``mkstemp`` makes its files 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_file_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], Any], action: str = "write") -> None:
    """Call ``write(stream)`` on a temp file beside ``path``, fsync it, then rename it over ``path``.

    A crash at any moment leaves either the old file or the new one, never a torn file; a
    failed write removes the temp file and leaves the old file untouched. An OSError becomes
    a RunFolderError that names ``path`` and says how to fix it (``action`` as in
    describe_os_error).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise describe_os_error(error, path, action) from error
    try:
        with os.fdopen(handle, "wb") as stream:
            os.fchmod(stream.fileno(), usual_file_mode())  # mkstemp creates 0600
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except BaseException as error:
        _remove_if_present(temp_name)
        cause = _os_error_in(error) if isinstance(error, Exception) else None
        if cause is None:
            raise
        raise describe_os_error(cause, path, action) from error
    try:
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)  # makes the rename itself survive a power cut
        finally:
            os.close(folder)
    except OSError as error:
        raise describe_os_error(error, path, action) from error


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    """Write ``payload`` as indented JSON (non-JSON values via str) atomically, see write_file_atomic."""
    text = json.dumps(payload, indent=2, default=str) + "\n"
    write_file_atomic(path, lambda stream: stream.write(text.encode("utf-8")))


def ensure_run_folder(path: str | os.PathLike) -> Path:
    """Create the run folder (with its parents) and prove that files can be created in it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise describe_os_error(error, path, "create the run folder") from error
    action = "write into the run folder"
    if not os.access(path, os.W_OK | os.X_OK):
        denied = OSError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        raise describe_os_error(denied, path, action)
    # os.access trusts permission bits alone: root passes it on a read-only mount, so also try it.
    try:
        handle, probe = tempfile.mkstemp(prefix=".write-probe.", suffix=".tmp", dir=path)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise describe_os_error(error, path, action) from error
    return path


def megabytes(size: int) -> str:
    """``size`` bytes for a message, in MB (10**6 bytes) or GB."""
    return f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"


def check_room(folder: str | os.PathLike, needed: int, what: str) -> None:
    """Refuse (RunFolderError) when the disk holding ``folder`` has less than ``needed`` bytes free.

    Called before the expensive work, so that a run does not train for an epoch and then find
    that its first checkpoint cannot be written. ``what`` names what the room is for, as the
    subject of "need(s) about N MB". A disk whose free space cannot be read is not refused:
    the writes themselves report a full disk clearly.
    """
    where = _nearest_folder(Path(folder))
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return
    if free < needed:
        raise RunFolderError(
            f"The disk holding {_quoted(where)} has {megabytes(free)} free, but {what} need about "
            f"{megabytes(needed)}. Free space on it, or {_ELSEWHERE} on a disk with room."
        )


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Remove the temp files that interrupted atomic writes left directly in ``folder``; return them.

    Only names of the form ``.<name>.<anything>.tmp`` or ``.<name>.tmp`` that are plain files
    are touched, and subfolders are not searched. Call it only while holding the folder's
    RunLock: another live process's temp file looks exactly the same.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if _TEMP_FILE.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
            removed.append(Path(entry.path))
    return sorted(removed)


def _read_holder(handle: int) -> dict:
    """The ``{pid, host, started}`` the holder wrote; None for each it has not written (yet)."""
    holder: dict = {"pid": None, "host": None, "started": None}
    try:
        recorded = json.loads(os.pread(handle, 4096, 0).decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return holder
    if isinstance(recorded, dict):
        holder.update({key: recorded.get(key) for key in holder})
    return holder


def _describe_holder(holder: dict) -> str:
    parts = [
        f"pid {holder['pid']}" if holder.get("pid") is not None else "pid unknown",
        f"on host {holder['host']!r}" if holder.get("host") else None,
        f"started {holder['started']}" if holder.get("started") else None,
    ]
    return ", ".join(part for part in parts if part)


class RunLock:
    """An exclusive lock on a run folder, held by one training process for its whole life.

    ``flock`` on ``<folder>/.lock``: the operating system releases it when the process ends,
    even by SIGKILL, so a crashed run never leaves the folder locked. The lock file holds
    ``{pid, host, started}`` of the holder, for the error another process gets. The lock
    belongs to the open file, which forked children (e.g. data loader workers) share.
    """

    FILE_NAME = ".lock"

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / self.FILE_NAME
        self._handle: int | None = None

    @property
    def held(self) -> bool:
        return self._handle is not None

    def acquire(self) -> RunLock:
        """Take the lock, or raise RunFolderBusyError naming the process that holds it."""
        if self._handle is not None:
            return self
        try:
            handle = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as error:
            raise describe_os_error(error, self.path, "create the lock file") from error
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(handle)
                raise RunFolderBusyError(
                    f"Run folder {_quoted(self.folder)} is in use by another training process "
                    f"({_describe_holder(holder)}). Wait for it to finish, stop it, or choose another "
                    f"run folder (hydra.run.dir=... on the command line; hydra.sweep.dir=... for --multirun).",
                    holder,
                ) from None
            record = {"pid": os.getpid(), "host": socket.gethostname(),
                      "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
            os.ftruncate(handle, 0)
            os.pwrite(handle, (json.dumps(record) + "\n").encode("utf-8"), 0)
        except BaseException as error:
            os.close(handle)  # closing the file also releases the lock if it was taken
            if isinstance(error, OSError) and not isinstance(error, RunFolderError):
                raise describe_os_error(error, self.path, "write the lock file") from error
            raise
        self._handle = handle
        return self

    def release(self) -> None:
        """Give the lock up (idempotent). The empty lock file stays: removing it would race a new holder."""
        if self._handle is None:
            return
        handle, self._handle = self._handle, None
        try:
            os.ftruncate(handle, 0)
        except OSError:
            pass  # the content is only a hint for others; unlocking is what matters
        finally:
            os.close(handle)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def run_folder_in_use(folder: str | os.PathLike) -> bool:
    """Whether a training process holds ``folder``'s ``RunLock`` now, without taking it (a shared, non-blocking
    ``flock`` that fails while the holder's exclusive one stands); False where there is no lock file."""
    try:
        handle = os.open(Path(folder) / RunLock.FILE_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(handle)
    return False
