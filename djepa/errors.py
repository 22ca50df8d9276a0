"""Errors that mean the user asked for something impossible: printed as one line, no traceback."""

from __future__ import annotations

import contextlib
import errno
import re
from collections.abc import Iterator


class UsageError(ValueError):
    """A bad key, value or path in the command line or config; the message names it."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, as a scheduler sends before it kills a job: handled like Ctrl-C, exit status 143."""


# Why a write fails that the user can fix (free space, another folder), by errno.
DISK_PROBLEMS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def disk_problem(err: BaseException) -> tuple[str, str | None] | None:
    """(why, the file) when `err` is a write refused for space or permission: an OSError, or safetensors'
    SafetensorError, which wraps the OS error in its message and names no file; None for any other error."""
    if isinstance(err, OSError):
        code, filename = err.errno, err.filename
    elif type(err).__name__ == "SafetensorError":
        found = re.search(r"code: (\d+)", str(err))
        code, filename = (int(found.group(1)) if found else None), None
    else:
        return None
    why = DISK_PROBLEMS.get(code) if code is not None else None
    return None if why is None else (why, None if filename is None else str(filename))


@contextlib.contextmanager
def writing(key: str, path: object, hint: str = "") -> Iterator[None]:
    """Turn a write under `key`=`path` that fails for space or permission into one line naming the file."""
    try:
        yield
    except Exception as err:
        problem = disk_problem(err)
        if problem is None:
            raise
        why, filename = problem
        where = f"{filename} ({key}={path})" if filename and filename != str(path) else f"{key}={path}"
        raise UsageError(f"cannot write {where}: {why}{hint}") from err
