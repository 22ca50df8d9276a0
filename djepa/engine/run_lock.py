"""One writer per run directory: an exclusive `flock` on `run_dir/.lock`, which names its holder.

`flock` rather than a bare O_EXCL file: the kernel drops the lock when its process dies, however it
dies (SIGKILL, OOM, a node lost), so a stale lock never needs guessing from PIDs; it is simply free
and the next run takes it over. The file's text (pid, host, start time) only serves the message.
The lock is taken on a file descriptor of its own, so two runs in one process also exclude each other.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from djepa.errors import UsageError

LOCK_NAME = ".lock"


def prepare_run_dir(run_dir: str | Path) -> Path:
    """Create `run_dir` (and parents) and check it is writable; one-line errors naming the path."""
    path = Path(run_dir)
    for parent in (path, *path.parents):
        if parent.exists() and not parent.is_dir():
            raise UsageError(f"run_dir {path} cannot be created: {parent} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"run_dir {path} cannot be created: {err.strerror or err}") from err
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"run_dir {path} is not writable")
    return path


def describe_holder(text: str) -> str:
    """'pid 123 on host h since 2025-01-01 12:00:00' from the lock file's JSON, or what it says."""
    try:
        info = json.loads(text)
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["started"])))
        return f"pid {info['pid']} on host {info['host']} since {since}"
    except (ValueError, KeyError, TypeError):
        return "another process (its lock file is unreadable)"


class RunLock:
    """`with RunLock(run_dir):` holds the run directory; a second holder gets a UsageError."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_NAME
        self.fd: int | None = None
        self.previous: str | None = None  # the holder a stale lock named, if one was taken over

    def acquire(self) -> RunLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise UsageError(f"run_dir {self.path.parent} is not writable: {err.strerror or err}") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.read(fd, 4096).decode(errors="replace")
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UsageError(f"run_dir {self.path.parent}: cannot lock {self.path}: {err}") from err
            raise UsageError(
                f"run_dir {self.path.parent} is in use by {describe_holder(holder)}: "
                "wait for it to finish, stop it, or choose another run_dir"
            ) from None
        # We hold it; whatever the file says was left by a process that has died.
        old = os.read(fd, 4096).decode(errors="replace").strip()
        self.previous = describe_holder(old) if old else None
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)
        os.fsync(fd)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        # Empty the file before unlocking, so the next run does not report a stale holder that ended cleanly.
        os.ftruncate(self.fd, 0)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
