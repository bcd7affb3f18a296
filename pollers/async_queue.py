"""The queue accepted asynchronous events wait in: a source, read like the others.

Two stores behind `AsyncEventQueue`:
- `SqliteEventQueue`: a table in the checkpoint file, WAL with synchronous=FULL, so an `Event`
  invoke is on disk (fsync'd) before its 202. One process owns it (a sidecar lock file).
- `SqsEventQueue`: a standard SQS queue every replica shares; an event is accepted once
  SendMessage succeeded. A retry is a new message delayed until it is due (then the old one is
  deleted), so the queue, not this process, holds it while it waits.

Either way an event leaves the store only when the router says it is finished, so a crash
invokes it again (at least once, as Lambda's own queue does).
"""

from __future__ import annotations

import abc
import math
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from sluiceway.config.invocation import AsyncConfig
from sluiceway.config.sources import parse_source
from sluiceway.core.aws import LONG_POLL_SECONDS, AwsClients
from sluiceway.core.aws_retry import call_with_retry
from sluiceway.core.errors import SluicewayError
from sluiceway.pollers import lock_file
from sluiceway.router.async_events import AsyncEvent
from sluiceway.router.async_runner import AsyncSettlement, Finished

_SCHEMA = """
CREATE TABLE IF NOT EXISTS async_events (
    request_id TEXT PRIMARY KEY,
    function TEXT NOT NULL,
    event BLOB NOT NULL,
    due_at REAL NOT NULL,
    received_at REAL NOT NULL
)
"""
_DUE_INDEX = "CREATE INDEX IF NOT EXISTS async_events_due ON async_events (due_at)"
SQS_BATCH = 10


class AsyncQueueError(SluicewayError, RuntimeError):
    """The event queue cannot be opened (its file is another process's)."""


class AsyncEventQueue(abc.ABC):
    """Where accepted events wait until they are due; `put` returns once the event is durable."""

    async def start(self) -> None:
        return None

    @abc.abstractmethod
    async def put(self, event: AsyncEvent) -> None:
        """Store the event, due now; durable when this returns."""

    @abc.abstractmethod
    async def take(self, limit: int, wait: float) -> list[AsyncEvent]:
        """Up to `limit` due events not already taken, waiting up to `wait` seconds for one."""

    @abc.abstractmethod
    async def settle(self, event: AsyncEvent, settlement: AsyncSettlement) -> None:
        """Delete a finished event, or keep its updated state until it is due again."""

    async def close(self) -> None:
        return None


class SqliteEventQueue(AsyncEventQueue):
    """Events in a table of the checkpoint file; the due time is a column, so a retry waits on
    disk, not in memory."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self.lock_path = self.path.with_name(self.path.name + ".async.lock")
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._limiter = anyio.CapacityLimiter(1)
        self._taken: set[str] = set()
        self._changed: anyio.Event | None = None

    def open(self) -> SqliteEventQueue:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = lock_file.take(self.lock_path)
        except lock_file.LockHeld:
            raise AsyncQueueError(
                f"the asynchronous event queue in {self.path} is in use by another Sluiceway "
                f"process (lock {self.lock_path} is held); give this one its own file with "
                "SLUICEWAY_CHECKPOINTS__PATH, or share events between replicas with "
                "SLUICEWAY_ASYNC__BACKEND=sqs"
            ) from None
        self._lock_fd = fd
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # each commit is fsync'd: a 202 means on disk
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute(_SCHEMA)
        conn.execute(_DUE_INDEX)
        self._conn = conn
        return self

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the event queue is not open")
        return self._conn

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    def _event(self) -> anyio.Event:
        if self._changed is None:
            self._changed = anyio.Event()
        return self._changed

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def put(self, event: AsyncEvent) -> None:
        await self._run(self._insert, event)
        self._wake()

    def _insert(self, event: AsyncEvent) -> None:
        self._db().execute(
            "INSERT OR IGNORE INTO async_events (request_id, function, event, due_at, received_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                event.request_id,
                event.function,
                event.to_json(),
                event.received_at,
                event.received_at,
            ),
        )

    async def take(self, limit: int, wait: float) -> list[AsyncEvent]:
        deadline = time.monotonic() + wait
        while True:
            changed = self._event()
            rows, next_due = await self._run(self._due, limit, time.time(), tuple(self._taken))
            if rows:
                events = [AsyncEvent.from_json(raw) for raw in rows]
                self._taken.update(e.request_id for e in events)
                return events
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            if next_due is not None:
                left = min(left, max(0.0, next_due - time.time()))
            with anyio.move_on_after(left):
                await changed.wait()

    def _due(
        self, limit: int, now: float, taken: tuple[str, ...]
    ) -> tuple[list[bytes], float | None]:
        db = self._db()
        skip = f"AND request_id NOT IN ({','.join('?' * len(taken))})" if taken else ""
        rows = db.execute(
            f"SELECT event FROM async_events WHERE due_at <= ? {skip} ORDER BY due_at LIMIT ?",
            (now, *taken, limit),
        ).fetchall()
        if rows:
            return [bytes(row[0]) for row in rows], None
        row = db.execute(f"SELECT MIN(due_at) FROM async_events WHERE 1 {skip}", taken).fetchone()
        return [], (None if row is None or row[0] is None else float(row[0]))

    async def settle(self, event: AsyncEvent, settlement: AsyncSettlement) -> None:
        try:
            if isinstance(settlement, Finished):
                await self._run(self._delete, event.request_id)
            else:
                await self._run(self._update, settlement.event, settlement.due_at)
        finally:
            self._taken.discard(event.request_id)
            self._wake()

    def _delete(self, request_id: str) -> None:
        self._db().execute("DELETE FROM async_events WHERE request_id = ?", (request_id,))

    def _update(self, event: AsyncEvent, due_at: float) -> None:
        self._db().execute(
            "UPDATE async_events SET event = ?, due_at = ? WHERE request_id = ?",
            (event.to_json(), due_at, event.request_id),
        )

    def pending(self) -> int:
        """Events waiting (for tests and status)."""
        row = self._db().execute("SELECT COUNT(*) FROM async_events").fetchone()
        return int(row[0])

    def close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._lock_fd is not None:
            lock_file.release(self._lock_fd, self.lock_path)
            self._lock_fd = None

    async def close(self) -> None:
        await self._run(self.close_sync)


class SqsEventQueue(AsyncEventQueue):
    """Events as messages of a standard SQS queue that replicas share, reached in the region of
    its ARN or URL (the service's default region otherwise)."""

    def __init__(
        self, queue: str, clients: AwsClients, region: str, visibility_seconds: float
    ) -> None:
        self._ref = parse_source(queue, region)
        self._clients = clients
        self._url: str | None = self._ref.queue_url
        self._visibility = int(min(43200, math.ceil(visibility_seconds)))

    async def start(self) -> None:
        await self._queue_url()

    async def _queue_url(self) -> str:
        if self._url is None:
            sqs = await self._clients.client("sqs", region=self._ref.region)
            response = await call_with_retry(
                sqs.get_queue_url,
                QueueName=self._ref.name,
                QueueOwnerAWSAccountId=self._ref.account,
            )
            self._url = str(response["QueueUrl"])
        return self._url

    async def put(self, event: AsyncEvent, delay: float = 0.0) -> None:
        sqs = await self._clients.client("sqs", region=self._ref.region)
        await sqs.send_message(
            QueueUrl=await self._queue_url(),
            MessageBody=event.to_json().decode(),
            DelaySeconds=int(min(900, max(0, math.ceil(delay)))),
        )

    async def take(self, limit: int, wait: float) -> list[AsyncEvent]:
        receiver = await self._clients.client("sqs", region=self._ref.region, long_poll=True)
        response = await call_with_retry(
            receiver.receive_message,
            QueueUrl=await self._queue_url(),
            MaxNumberOfMessages=max(1, min(SQS_BATCH, limit)),
            WaitTimeSeconds=int(max(0, min(LONG_POLL_SECONDS, wait))),
            VisibilityTimeout=self._visibility,
        )
        return [
            AsyncEvent.from_json(message["Body"], receipt=message["ReceiptHandle"])
            for message in response.get("Messages", [])
        ]

    async def settle(self, event: AsyncEvent, settlement: AsyncSettlement) -> None:
        sqs = await self._clients.client("sqs", region=self._ref.region)
        if not isinstance(settlement, Finished):
            # the new state first: a crash between the two leaves a duplicate, never a loss
            delay = settlement.due_at - time.time()
            await call_with_retry(self.put, settlement.event, delay)
        await call_with_retry(
            sqs.delete_message, QueueUrl=await self._queue_url(), ReceiptHandle=event.receipt
        )


def build_event_queue(
    config: AsyncConfig,
    sqlite_path: str,
    clients: AwsClients,
    region: str,
    visibility_seconds: float,
) -> AsyncEventQueue:
    """The configured store (SLUICEWAY_ASYNC__BACKEND)."""
    if config.backend == "sqs" and config.queue:
        return SqsEventQueue(config.queue, clients, region, visibility_seconds)
    return SqliteEventQueue(sqlite_path).open()
