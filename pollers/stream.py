"""The per-shard reader shared by Kinesis and DynamoDB Streams mappings.

One reader per shard reads in order and hands records to `ParallelizationFactor` lanes (by a
stable hash of the partition / item key, so order per key holds). Each lane runs one batch at a
time; the shard's checkpoint moves only to the end of the contiguous finished prefix, after the
batch is finished. A failed batch is retried, with backoff, until it succeeds: the lane waits and
the other lanes go on (`RetryPolicy` is where attempt limits, record age, bisecting and
on-failure destinations plug in).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from botocore.exceptions import ClientError
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_result,
    stop_never,
    wait_exponential_jitter,
)

from pollers.checkpoints import SHARD_END, CheckpointStore
from pollers.lanes import ShardProgress, lane_for
from pollers.retry import call_with_retry, error_code
from pollers.shards import TRIM_HORIZON, Shard, StartPosition
from router.batching import BatchBuilder
from router.processor import BatchProcessor, Settlement
from router.records import SourceRecord
from router.stats import MappingStats

log = logging.getLogger(__name__)

IDLE_POLL_MAX_SECONDS = 1.0
"""Longest wait between GetRecords calls on an idle shard (Lambda polls once a second)."""
WARM_SECONDS = 30.0
"""A shard that returned records this recently is polled at the API's floor rate, so a trickle
of records is seen within a poll interval; only a shard quiet for longer backs off to a second."""
RETRY_MAX_SECONDS = 30.0


@dataclass
class RecordsPage:
    records: list[tuple[SourceRecord, bool]]
    """(record, checkpointable) in shard order."""
    next_iterator: str | None
    """None: the shard is closed and read to its end."""
    behind_ms: float | None = None


class StreamApi(Protocol):
    """The few source-specific calls a shard reader needs."""

    stream_arn: str
    min_poll_interval: float
    """Seconds between GetRecords calls per shard (Kinesis 5/s, DynamoDB Streams 4/s)."""

    async def resolve(self) -> None: ...
    async def list_shards(self) -> list[Shard]: ...
    async def get_iterator(self, shard_id: str, position: StartPosition) -> str: ...
    async def get_records(self, shard_id: str, iterator: str) -> RecordsPage: ...


_EXPIRED = "ExpiredIteratorException"
_TRIMMED = "TrimmedDataAccessException"


@dataclass
class RetryPolicy:
    """What to do with records a batch did not finish. Today: retry until they succeed."""

    wait: Any = field(
        default_factory=lambda: wait_exponential_jitter(initial=0.5, max=RETRY_MAX_SECONDS)
    )


def split_settlement(
    records: list[SourceRecord], settlement: Settlement
) -> tuple[list[SourceRecord], list[SourceRecord]]:
    """(finished, to retry): streams retry from the first failed record on, in shard order."""
    if not settlement.failed:
        return records, []
    failed = {id(r) for r in settlement.failed}
    cut = next(i for i, r in enumerate(records) if id(r) in failed)
    return records[:cut], records[cut:]


class ShardReader:
    """Reads one shard from `start` until its end or `stop()`."""

    def __init__(
        self,
        *,
        api: StreamApi,
        shard: Shard,
        start: StartPosition,
        scope: str,
        store: CheckpointStore,
        processor: BatchProcessor,
        stats: MappingStats,
        batch_size: int,
        window: float,
        parallelization: int = 1,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.api = api
        self.shard = shard
        self.start = start
        self._scope = scope
        self._store = store
        self._processor = processor
        self._stats = stats
        self._batch_size = batch_size
        self._window = window
        self._lanes = max(1, parallelization)
        self._policy = policy or RetryPolicy()
        self._progress = ShardProgress()
        self._stopping = anyio.Event()
        self._read_scope = anyio.CancelScope()
        self._room = anyio.Event()
        self._checkpoint_lock = anyio.Lock()
        self._max_outstanding = max(2 * batch_size * self._lanes, 10_000)
        self.ended = False

    def stop(self) -> None:
        """Stop reading; the batches in flight finish and are checkpointed, queued ones are left."""
        self._stopping.set()
        self._read_scope.cancel()

    async def run(self) -> None:
        """Read, dispatch and settle; on a clean end of shard, checkpoint SHARD_END."""
        sends: list[ObjectSendStream[SourceRecord]] = []
        async with anyio.create_task_group() as tg:
            for _ in range(self._lanes):
                send, receive = anyio.create_memory_object_stream[SourceRecord](math.inf)
                sends.append(send)
                tg.start_soon(self._lane, receive)
            try:
                with self._read_scope:
                    self.ended = await self._read(sends)
            finally:
                for send in sends:
                    send.close()
        if self.ended and not self._stopping.is_set() and self._progress.outstanding == 0:
            with anyio.CancelScope(shield=True):
                await self._store.set(self._scope, self.shard.shard_id, SHARD_END)
            log.info("shard %s finished", self.shard.shard_id)
        else:
            self.ended = False

    # ------------------------------------------------------------------ reading

    def _note_error(self, exc: BaseException) -> None:
        self._stats.last_error = f"{error_code(exc)}: {exc}"

    async def _iterator(self) -> str:
        """From the last record read (≥ the checkpoint) when renewing, else from `start`."""
        last = self._progress.last_read
        position = StartPosition.after(last) if last else self.start
        return await call_with_retry(
            self._iterator_at, position, on_error=self._note_error, retry_all=True
        )

    async def _iterator_at(self, position: StartPosition) -> str:
        """A position the stream has already trimmed (past retention) falls back to the oldest
        record still there, as Lambda does: retention, not Sluiceway, dropped what lay between."""
        try:
            return await self.api.get_iterator(self.shard.shard_id, position)
        except ClientError as exc:
            if error_code(exc) != _TRIMMED or position.kind == "TRIM_HORIZON":
                raise
        log.warning(
            "position %s of %s is past the stream's retention; reading from TRIM_HORIZON",
            position.sequence,
            self.shard.shard_id,
        )
        return await self.api.get_iterator(self.shard.shard_id, TRIM_HORIZON)

    async def _fetch(self, iterator: str) -> RecordsPage | None:
        """One GetRecords; None when the iterator expired (throttles are retried with backoff)."""
        try:
            return await self.api.get_records(self.shard.shard_id, iterator)
        except ClientError as exc:
            if error_code(exc) in (_EXPIRED, _TRIMMED):
                return None  # renewed from the last record read (or the oldest, if trimmed)
            raise

    async def _read(self, sends: list[ObjectSendStream[SourceRecord]]) -> bool:
        """Poll at once while records flow, back off to a second when idle; True at shard end."""
        iterator = await self._iterator()
        floor = self.api.min_poll_interval
        idle = floor
        last_records_at = -math.inf
        while True:
            while self._progress.outstanding >= self._max_outstanding:
                self._room = anyio.Event()
                await self._room.wait()
            began = time.monotonic()
            page = await call_with_retry(
                self._fetch, iterator, on_error=self._note_error, retry_all=True
            )
            if page is None:
                log.info("iterator of %s expired; renewing", self.shard.shard_id)
                iterator = await self._iterator()
                continue
            self._stats.last_error = None
            if page.records:
                self._dispatch(page.records, sends)
            if page.next_iterator is None:
                return True
            iterator = page.next_iterator
            busy = bool(page.records) or bool(page.behind_ms)
            if busy:
                last_records_at = began
            warm = busy or began - last_records_at < WARM_SECONDS
            idle = floor if warm else min(IDLE_POLL_MAX_SECONDS, idle * 2)
            await anyio.sleep(max(0.0, began + (floor if busy else idle) - time.monotonic()))

    def _dispatch(
        self, records: list[tuple[SourceRecord, bool]], sends: list[ObjectSendStream[SourceRecord]]
    ) -> None:
        self._stats.polled += len(records)
        for record, checkpointable in records:
            record.handle = self._progress.add(record.item_id, checkpointable)
            sends[lane_for(record.key, self._lanes)].send_nowait(record)

    # ------------------------------------------------------------------ lanes

    async def _lane(self, receive: ObjectReceiveStream[SourceRecord]) -> None:
        """One batch in flight at a time, in the lane's record order."""
        carry: SourceRecord | None = None
        async with receive:
            while True:
                if carry is None:
                    try:
                        carry = await receive.receive()
                    except anyio.EndOfStream:
                        return
                batch, carry = await self._collect(carry, receive)
                if self._stopping.is_set():
                    return
                await self._run_batch(batch)

    async def _collect(
        self, first: SourceRecord, receive: ObjectReceiveStream[SourceRecord]
    ) -> tuple[list[SourceRecord], SourceRecord | None]:
        """BatchSize, 6 MB and the batching window (from the first record) bound a batch."""
        builder = BatchBuilder(self._batch_size)
        builder.offer(first)
        deadline = time.monotonic() + self._window
        while not builder.full:
            record: SourceRecord | None = None
            try:
                record = receive.receive_nowait()
            except anyio.EndOfStream:
                break
            except anyio.WouldBlock:
                left = deadline - time.monotonic()
                if left <= 0 or self._stopping.is_set():
                    break
                with anyio.move_on_after(left), contextlib.suppress(anyio.EndOfStream):
                    record = await receive.receive()
                if record is None:
                    break
            if not builder.offer(record):
                return builder.records, record
        return builder.records, None

    async def _run_batch(self, records: list[SourceRecord]) -> None:
        """Invoke until every record is finished; give up only when stopping."""
        pending = records

        async def attempt() -> bool:
            nonlocal pending
            if self._stopping.is_set():
                return False
            settlement = await self._processor.process(pending)
            finished, pending = split_settlement(pending, settlement)
            await self._finish(finished)
            return bool(pending)

        retrying = AsyncRetrying(
            wait=self._policy.wait,
            retry=retry_if_result(bool),
            stop=stop_never,
            sleep=self._pause,
        )
        try:
            await retrying(attempt)
        except RetryError:
            return

    async def _pause(self, seconds: float) -> None:
        """Backoff that a graceful stop cuts short."""
        with anyio.move_on_after(seconds):
            await self._stopping.wait()

    async def _finish(self, records: list[SourceRecord]) -> None:
        if not records:
            return
        self._stats.iterator_age_ms = max(0.0, (time.time() - records[-1].arrival) * 1000)
        async with self._checkpoint_lock:
            moved = self._progress.finish([int(r.handle) for r in records])
            if moved is not None:
                with anyio.CancelScope(shield=True):
                    await self._store.set(self._scope, self.shard.shard_id, moved)
        self._room.set()
