"""Checkpoints in a local SQLite file, owned by one process at a time.

Two processes reading the same shards from one file would each advance the other's checkpoints
past records they never finished, so the file is guarded by an exclusive lock on a sidecar
`.lock` file (removed on close): a second process refuses to start instead of silently sharing.
(Sharing shards between replicas is the DynamoDB lease backend's job.) sqlite3 blocks, so calls
run in a worker thread, one at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from pathlib import Path

import anyio
from sluiceway.core.errors import SluicewayError
from sluiceway.pollers.checkpoints import CheckpointStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    scope TEXT NOT NULL,
    shard_id TEXT NOT NULL,
    checkpoint TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (scope, shard_id)
)
"""
# Added with tumbling windows; CREATE IF NOT EXISTS is the whole migration for older files.
_WINDOWS_SCHEMA = """
CREATE TABLE IF NOT EXISTS windows (
    scope TEXT NOT NULL,
    shard_id TEXT NOT NULL,
    state TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (scope, shard_id)
)
"""


class CheckpointLockError(SluicewayError, RuntimeError):
    """Another process holds the checkpoint file."""


class CheckpointFileError(SluicewayError):
    """The checkpoint file or its folder cannot be created, opened or read as SQLite."""


class SqliteCheckpoints(CheckpointStore):
    """`CheckpointStore` on a WAL-mode SQLite file; `open()` takes the file's exclusive lock."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._limiter = anyio.CapacityLimiter(1)

    def open(self) -> SqliteCheckpoints:
        """Lock and open the file (synchronously: it runs once, before any poller starts).

        Raises CheckpointLockError when another process holds it, CheckpointFileError when the
        file or its folder cannot be used."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = self._lock()
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(_SCHEMA)
                conn.execute(_WINDOWS_SCHEMA)
            except sqlite3.Error:
                conn.close()
                raise
        except (OSError, sqlite3.Error) as exc:
            self.close_sync()
            reason = str(exc)
            if isinstance(exc, OSError) and exc.strerror:
                reason = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
            raise CheckpointFileError(
                f"checkpoint file {self.path} cannot be used: {reason}; give "
                "SLUICEWAY_CHECKPOINTS__PATH a writable file, or another backend with "
                "SLUICEWAY_CHECKPOINTS__BACKEND"
            ) from None
        self._conn = conn
        return self

    def _lock(self) -> int:
        """Take the lock file, which the owner removes on close.

        The lock taken must be on the file now at `lock_path`: a process that opened the file
        just before its owner removed it would otherwise lock a file no one else can see."""
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise CheckpointLockError(
                    f"checkpoint file {self.path} is in use by another Sluiceway process "
                    f"(lock {self.lock_path} is held); stop that process, or give this one its "
                    "own file with SLUICEWAY_CHECKPOINTS__PATH"
                ) from None
            except OSError:
                os.close(fd)
                raise
            try:
                current = os.stat(self.lock_path).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(fd).st_ino:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                return fd
            os.close(fd)  # removed by its owner meanwhile: take the new one

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("checkpoint store is not open")
        return self._conn

    def _get(self, scope: str, shard_id: str) -> str | None:
        row = (
            self._db()
            .execute(
                "SELECT checkpoint FROM checkpoints WHERE scope = ? AND shard_id = ?",
                (scope, shard_id),
            )
            .fetchone()
        )
        return None if row is None else str(row[0])

    def _set(self, scope: str, shard_id: str, checkpoint: str) -> None:
        self._db().execute(
            "INSERT INTO checkpoints (scope, shard_id, checkpoint, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (scope, shard_id) DO UPDATE SET checkpoint = excluded.checkpoint, "
            "updated_at = excluded.updated_at",
            (scope, shard_id, checkpoint, time.time()),
        )

    def _get_window(self, scope: str, shard_id: str) -> str | None:
        row = (
            self._db()
            .execute(
                "SELECT state FROM windows WHERE scope = ? AND shard_id = ?", (scope, shard_id)
            )
            .fetchone()
        )
        return None if row is None else str(row[0])

    def _set_window(self, scope: str, shard_id: str, window: str | None) -> None:
        if window is None:
            self._db().execute(
                "DELETE FROM windows WHERE scope = ? AND shard_id = ?", (scope, shard_id)
            )
            return
        self._db().execute(
            "INSERT INTO windows (scope, shard_id, state, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (scope, shard_id) DO UPDATE SET state = excluded.state, "
            "updated_at = excluded.updated_at",
            (scope, shard_id, window, time.time()),
        )

    async def get_window(self, scope: str, shard_id: str) -> str | None:
        return await anyio.to_thread.run_sync(
            self._get_window, scope, shard_id, limiter=self._limiter
        )

    async def set_window(self, scope: str, shard_id: str, window: str | None) -> None:
        await anyio.to_thread.run_sync(
            self._set_window, scope, shard_id, window, limiter=self._limiter
        )

    async def get(self, scope: str, shard_id: str) -> str | None:
        return await anyio.to_thread.run_sync(self._get, scope, shard_id, limiter=self._limiter)

    async def set(self, scope: str, shard_id: str, checkpoint: str) -> None:
        await anyio.to_thread.run_sync(
            self._set, scope, shard_id, checkpoint, limiter=self._limiter
        )

    def close_sync(self) -> None:
        """Close the file and remove its lock file (while still holding the lock)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._lock_fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.lock_path)
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self.close_sync, limiter=self._limiter)
