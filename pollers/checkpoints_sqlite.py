"""Checkpoints in a local SQLite file, owned by one process at a time.

Two processes reading the same shards from one file would each advance the other's checkpoints
past records they never finished, so the file is guarded by an exclusive lock on a sidecar
`.lock` file: a second process refuses to start instead of silently sharing. (Sharing shards
between replicas is the DynamoDB lease backend's job.) sqlite3 blocks, so calls run in a worker
thread, one at a time; checkpoints that arrive while one is being written are written together
in the next transaction (`pollers.group_commit`), so many shards cost one thread hop and one commit.

A file removed or replaced while the service runs (`rm -rf` of its directory, a restore over it)
would otherwise take checkpoints into an unlinked inode, and its lock with it, so a second process
could start on the same path and replay the stream. Before every write the store checks that the
path still names the file and lock it opened; if not, it fails for good (`CheckpointStoreLost`)
and writes nothing more.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import NoReturn

import anyio
from sluiceway.core.errors import SluicewayError
from sluiceway.pollers import lock_file
from sluiceway.pollers.checkpoints import CheckpointStore, CheckpointStoreFailed
from sluiceway.pollers.group_commit import GroupCommit
from sluiceway.pollers.lock_file import identity

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


_UPSERT_CHECKPOINT = (
    "INSERT INTO checkpoints (scope, shard_id, checkpoint, updated_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (scope, shard_id) DO UPDATE SET checkpoint = excluded.checkpoint, "
    "updated_at = excluded.updated_at"
)

COMMIT_SPACING_SECONDS = 0.005
"""While shards keep finishing batches, checkpoint commits start at least this far apart: one
commit (a thread hop, the file checks, a write to the log: about 0.1 ms of CPU) then takes what
every shard finished meanwhile. A crash reads again at most what these few milliseconds
finished, beyond the batches in flight."""

_RESTART_HINT = (
    "restore the file first, or each shard starts again from STARTING_POSITION: TRIM_HORIZON "
    "handles records again, LATEST skips those that came meanwhile"
)


class CheckpointLockError(SluicewayError, RuntimeError):
    """Another process holds the checkpoint file."""


class CheckpointStoreCorrupt(CheckpointStoreFailed):
    """The file at the checkpoint path is not a SQLite database (or is damaged)."""


class CheckpointStoreUnwritable(CheckpointStoreFailed):
    """The checkpoint file or its directory cannot be created or written."""


class CheckpointStoreLost(CheckpointStoreFailed):
    """The checkpoint file (or its lock) was removed or replaced while the service ran."""


class SqliteCheckpoints(CheckpointStore):
    """`CheckpointStore` on a WAL-mode SQLite file; `open()` takes the file's exclusive lock."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._file_fd: int | None = None
        """Held open so a removal shows as a link count of 0."""
        self._identity: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))
        self._limiter = anyio.CapacityLimiter(1)
        self._checkpoints = GroupCommit[tuple[str, str], str](
            self._commit_checkpoints, spacing=COMMIT_SPACING_SECONDS
        )
        self.failure: CheckpointStoreFailed | None = None
        """Set once the store failed; every later call raises it."""

    def open(self) -> SqliteCheckpoints:
        """Lock and open the file (synchronously: it runs once, before any poller starts).

        Every way the file can be unusable ends in one `CheckpointStoreFailed` that names the
        path and what to do, never a traceback."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = self._lock()
        except FileExistsError as exc:  # a file where a directory should be
            raise self._unwritable("not a directory", exc.filename) from None
        except OSError as exc:
            raise self._unwritable(exc.strerror or str(exc), exc.filename) from None
        self._lock_fd = fd
        try:
            self._conn = self._connect()
            self._file_fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            self.close_sync()
            raise self._unwritable(exc.strerror or str(exc), exc.filename) from None
        except BaseException:
            self.close_sync()
            raise
        self._identity = (identity(os.fstat(self._file_fd)), identity(os.fstat(fd)))
        return self

    def _lock(self) -> int:
        try:
            return lock_file.take(self.lock_path)
        except lock_file.LockHeld:
            raise CheckpointLockError(
                f"checkpoint file {self.path} is in use by another Sluiceway process "
                f"(lock {self.lock_path} is held); stop that process, or give this one its "
                "own file with SLUICEWAY_CHECKPOINTS__PATH"
            ) from None

    def _connect(self) -> sqlite3.Connection:
        """Open, migrate, and prove the file writable now rather than at the first checkpoint
        (a read-only file in WAL mode opens fine and fails only on its first write)."""
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(_SCHEMA)
            conn.execute(_WINDOWS_SCHEMA)
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            conn.execute(f"PRAGMA user_version = {version}")
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            raise self._failure(exc) from None
        return conn

    def _unwritable(self, reason: str, where: object = None) -> CheckpointStoreUnwritable:
        place = f" at {where}" if where and str(where) != str(self.path) else ""
        return CheckpointStoreUnwritable(
            f"checkpoint file {self.path} cannot be written ({reason}{place}); make it and its "
            "directory writable by the service, or point SLUICEWAY_CHECKPOINTS__PATH at a "
            "writable path"
        )

    def _failure(self, exc: sqlite3.DatabaseError) -> CheckpointStoreFailed:
        """The one-line error for what SQLite answered."""
        reason = str(exc)
        if isinstance(exc, sqlite3.OperationalError) or "readonly" in reason:
            return self._unwritable(reason)
        return CheckpointStoreCorrupt(
            f"checkpoint file {self.path} is not a usable SQLite database ({reason}); move it "
            "aside or restore it from a backup (without it, each shard starts from "
            "STARTING_POSITION), or point SLUICEWAY_CHECKPOINTS__PATH at another file"
        )

    def _check_still_ours(self) -> None:
        """Fail for good when the path no longer names the file (or lock) this store opened."""
        if self.failure is not None:
            raise self.failure
        assert self._file_fd is not None and self._lock_fd is not None
        file_id, lock_id = self._identity
        for fd, path, opened in (
            (self._file_fd, self.path, file_id),
            (self._lock_fd, self.lock_path, lock_id),
        ):
            what = "checkpoint file" if path == self.path else "its lock file"
            try:
                now: tuple[int, int] | None = identity(os.stat(path))
            except FileNotFoundError:
                now = None
            if now is not None and now != opened:
                self._lose(f"{what} {path} was replaced by another file while the service ran")
            if now is None or os.fstat(fd).st_nlink == 0:
                self._lose(f"{what} {path} was removed while the service ran")

    def _lose(self, what: str) -> NoReturn:
        self.failure = CheckpointStoreLost(
            f"{what}: the stream mappings on it stop and write no more checkpoints; restart the "
            f"service ({_RESTART_HINT})"
        )
        raise self.failure

    def _write(self, sql: str, params: tuple[object, ...]) -> None:
        """Every write: only into the file this store opened, and a SQLite error becomes the
        store's failure (stream mappings stop rather than go on without checkpoints)."""
        self._write_many(sql, [params])

    def _write_many(self, sql: str, rows: list[tuple[object, ...]]) -> None:
        """`_write` for several rows in one transaction (one commit)."""
        self._check_still_ours()
        db = self._db()
        try:
            if len(rows) == 1:
                db.execute(sql, rows[0])
                return
            db.execute("BEGIN")
            try:
                db.executemany(sql, rows)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            self.failure = self._failure(exc)
            raise self.failure from None

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

    def _set_many(self, checkpoints: dict[tuple[str, str], str]) -> None:
        now = time.time()
        self._write_many(
            _UPSERT_CHECKPOINT,
            [
                (scope, shard_id, checkpoint, now)
                for (scope, shard_id), checkpoint in checkpoints.items()
            ],
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
            self._write("DELETE FROM windows WHERE scope = ? AND shard_id = ?", (scope, shard_id))
            return
        self._write(
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
        await self._checkpoints.put((scope, shard_id), checkpoint)

    async def _commit_checkpoints(self, checkpoints: dict[tuple[str, str], str]) -> None:
        await anyio.to_thread.run_sync(self._set_many, checkpoints, limiter=self._limiter)

    def close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._file_fd is not None:
            os.close(self._file_fd)
            self._file_fd = None
        if self._lock_fd is not None:
            lock_file.release(self._lock_fd, self.lock_path)
            self._lock_fd = None

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self.close_sync, limiter=self._limiter)
