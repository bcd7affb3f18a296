"""The lock file beside a SQLite store: one process at a time, removed by its owner on close.

The checkpoint store and the asynchronous event queue each keep one, so a second process on the
same file refuses to start instead of silently sharing it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


def identity(stat: os.stat_result) -> tuple[int, int]:
    """What a path names (device, inode): the same path may come to name another file."""
    return stat.st_dev, stat.st_ino


class LockHeld(Exception):
    """Another process holds the lock; the store raises its own error, which says what to do."""


def take(lock_path: Path) -> int:
    """Lock `lock_path` (created when absent) and return its descriptor; LockHeld if taken.

    The lock taken must be on the file now at `lock_path`: a process that opened the file just
    before its owner removed it would otherwise lock a file no one else can see."""
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockHeld(str(lock_path)) from None
        except OSError:
            os.close(fd)
            raise
        try:
            current: tuple[int, int] | None = identity(os.stat(lock_path))
        except FileNotFoundError:
            current = None
        if current == identity(os.fstat(fd)):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)  # removed by its owner meanwhile: take the new one


def release(fd: int, lock_path: Path) -> None:
    """Remove the lock file (while still holding it, and only while the path still names it:
    else it is another process's now), then unlock."""
    with contextlib.suppress(FileNotFoundError):
        if identity(os.stat(lock_path)) == identity(os.fstat(fd)):
            os.unlink(lock_path)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
