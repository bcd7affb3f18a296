"""The per-shard reader shared by Kinesis and DynamoDB Streams mappings.

One reader per shard reads in order and hands records to `ParallelizationFactor` lanes (by a
stable hash of the partition / item key, so order per key holds). Each lane runs one batch at a
time; the shard's checkpoint moves only to the end of the contiguous finished prefix, after the
batch is finished, and is written by the shard's `CheckpointWriter` while the lanes go on. A
failed batch is retried with backoff while the lane waits and the other lanes go on;
`RetryPolicy` holds the mapping's failure settings: attempt limits, record age, bisecting, the
on-failure destination (records given up on are finished only once it accepted them) and
tumbling windows.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Protocol

import anyio
import anyio.lowlevel
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from botocore.exceptions import ClientError
from sluiceway.core.aws_retry import call_with_retry, error_code
from sluiceway.core.stats import MappingStats
from sluiceway.pollers.checkpoint_writer import CheckpointWriter
from sluiceway.pollers.checkpoints import SHARD_END, CheckpointStore, CheckpointStoreFailed
from sluiceway.pollers.lanes import Backlog, ShardProgress, lane_for
from sluiceway.pollers.pacing import PollPacer
from sluiceway.pollers.positions import FinishedSubRecords
from sluiceway.pollers.shards import TRIM_HORIZON, Shard, StartPosition
from sluiceway.pollers.windows import Window, WindowTracker, runs_by_window, state_too_large
from sluiceway.router.batching import BatchBuilder
from sluiceway.router.records import SourceRecord
from sluiceway.router.runner import BatchOrigin, BatchRunner, Settlement

log = logging.getLogger(__name__)

IDLE_POLL_MAX_SECONDS = 1.0
"""Longest wait between GetRecords calls on a quiet shard by default, whatever the poll budget
(`pollers.pacing`) allows: Lambda's bound, every quiet shard polled at least once a second."""
WINDOW_GRACE_SECONDS = 1.0
"""How long after a tumbling window's end its final invoke waits for records still on their way
(Lambda waits up to 2 minutes on a quiet shard; a record that comes later opens a new window)."""
YIELD_EVERY_BATCHES = 32
"""A lane batching records it already holds lets other tasks run at least this often, even
when none of its batches waited (every invocation does; a batch filtered out entirely may not)."""

_record = itemgetter(0)
_checkpoint = itemgetter(1)


@dataclass
class RecordsPage:
    records: list[tuple[SourceRecord, str]]
    """(record, the checkpoint that marks it finished) in shard order (`ShardProgress`)."""
    next_iterator: str | None
    """None: the shard is closed and read to its end."""
    behind_ms: float | None = None


class StreamApi(Protocol):
    """The few source-specific calls a shard reader needs."""

    stream_arn: str
    min_poll_interval: float
    """Seconds between GetRecords calls per shard (Kinesis 5/s, DynamoDB Streams 4/s)."""

    async def resolve(self) -> None: ...
    async def describe(self) -> str:
        """The stream's status in a few words, after `resolve` (for `check`)."""
        ...

    async def list_shards(self) -> list[Shard]: ...
    async def get_iterator(self, shard_id: str, position: StartPosition) -> str: ...
    async def get_records(self, shard_id: str, iterator: str) -> RecordsPage: ...


_EXPIRED = "ExpiredIteratorException"
_TRIMMED = "TrimmedDataAccessException"


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
        runner: BatchRunner,
        stats: MappingStats,
        batch_size: int,
        window: float,
        parallelization: int = 1,
        tumbling_window_seconds: int = 0,
        idle_poll_max: float = IDLE_POLL_MAX_SECONDS,
        pacer: PollPacer | None = None,
        poll_interval: float | None = None,
        on_store_failed: Callable[[CheckpointStoreFailed], None] | None = None,
    ) -> None:
        self.api = api
        self.shard = shard
        self.start = start
        self._scope = scope
        self._store = store
        self._runner = runner
        self._stats = stats
        self._batch_size = batch_size
        self._window = window
        self._lanes = max(1, parallelization)
        self._floor = max(api.min_poll_interval, poll_interval or 0.0)
        """Shortest time between GetRecords calls: the API's limit, or the mapping's slower pace."""
        self._idle_poll_max = max(idle_poll_max, self._floor)
        self._pacer = pacer or PollPacer()  # alone, a reader polls at the floor
        self._tumbling_seconds = tumbling_window_seconds
        self._origin = BatchOrigin(api.stream_arn, shard.shard_id)
        self._progress = ShardProgress()
        self._finished: FinishedSubRecords | None = None
        """Sub-records of the aggregate the iterator starts at that are already finished."""
        self._stopping = anyio.Event()
        self._read_scope = anyio.CancelScope()
        self._room = anyio.Event()
        self._writer = CheckpointWriter(
            self._write_checkpoint,
            spacing=0.0 if tumbling_window_seconds > 0 else store.write_spacing,
        )
        """With tumbling windows a lane waits for each checkpoint: no spacing to wait out."""
        self._view = stats.shard(shard.shard_id)
        """The shard's entry in /status (iterator age, checkpoint)."""
        self._max_outstanding = max(2 * batch_size * self._lanes, 10_000)
        self.ended = False
        self.store_failure: CheckpointStoreFailed | None = None
        """Set when the checkpoint store failed: the reader stopped, and wrote nothing after."""
        self._on_store_failed = on_store_failed
        """Told at once, while batches of other lanes may still be in flight."""

    def stop(self) -> None:
        """Stop reading; the batches in flight finish and are checkpointed, queued ones are left."""
        self._stopping.set()
        self._read_scope.cancel()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self) -> None:
        """Read, dispatch and settle; on a clean end of shard, checkpoint SHARD_END. Returns
        only once the last finished position is written (a lease may be released after)."""
        async with anyio.create_task_group() as writing:
            writing.start_soon(self._writer.run)
            try:
                await self._read_and_run_lanes()
            finally:
                self._writer.close()
        if self.ended and not self._stopping.is_set() and self._progress.outstanding == 0:
            with anyio.CancelScope(shield=True):
                await self._save(self._store.set, self.shard.shard_id, SHARD_END)
            if self.store_failure is None:
                log.info("shard %s finished", self.shard.shard_id)
                return
        self.ended = False

    async def _read_and_run_lanes(self) -> None:
        sends: list[ObjectSendStream[list[SourceRecord]]] = []
        async with anyio.create_task_group() as tg:
            for lane in range(self._lanes):
                send, receive = anyio.create_memory_object_stream[list[SourceRecord]](math.inf)
                sends.append(send)
                tg.start_soon(self._lane, receive, lane)
            try:
                with self._read_scope, self._pacer.reading():
                    self.ended = await self._read(sends)
            finally:
                for send in sends:
                    send.close()

    async def _save(
        self, write: Callable[[str, str, Any], Awaitable[None]], key: str, value: str | None
    ) -> bool:
        """A checkpoint or window write; a store that failed stops the reader (once failed, a
        store writes nothing more, so every later write of any lane is refused too)."""
        try:
            await write(self._scope, key, value)
        except CheckpointStoreFailed as exc:
            if self.store_failure is None:
                self.store_failure = exc
                if self._on_store_failed is not None:
                    self._on_store_failed(exc)
            self.stop()
            return False
        return True

    # ------------------------------------------------------------------ reading

    def _note_error(self, exc: BaseException) -> None:
        self._stats.last_error = f"{error_code(exc)}: {exc}"

    async def _iterator(self) -> str:
        """From the last record read (≥ the checkpoint) when renewing, else from `start`."""
        last = self._progress.last_read
        position = StartPosition.resume(last) if last else self.start
        self._finished = position.finished
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

    async def _read(self, sends: list[ObjectSendStream[list[SourceRecord]]]) -> bool:
        """Poll at the floor while records flow, at the pacer's rate when quiet; True at shard end."""
        iterator = await self._iterator()
        floor = self._floor
        first_quiet = True  # started, or records just stopped: the next quiet wait sets a phase
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
            if not page.records:
                self._stats.empty_polls += 1
            records = page.records
            if records and self._finished is not None:
                records, self._finished = self._finished.drop(records), None
            if records:
                self._dispatch(records, sends)
            if page.next_iterator is None:
                return True
            iterator = page.next_iterator
            busy = bool(page.records) or bool(page.behind_ms)
            if busy:
                due = began + floor
            else:
                due = self._pacer.next_poll(began, floor, self._idle_poll_max, first=first_quiet)
            first_quiet = busy
            await anyio.sleep(max(0.0, due - time.monotonic()))

    def _dispatch(
        self,
        records: list[tuple[SourceRecord, str]],
        sends: list[ObjectSendStream[list[SourceRecord]]],
    ) -> None:
        """Per page, not per record: positions in one call, one list per lane (no hashing for
        a single lane), so a 10,000-record page costs a few sends instead of 10,000."""
        self._stats.polled += len(records)
        first = self._progress.add_many(list(map(_checkpoint, records)))
        page = list(map(_record, records))
        for position, record in enumerate(page, first):
            record.handle = position
        lanes = self._lanes
        if lanes == 1:
            sends[0].send_nowait(page)
            return
        groups: list[list[SourceRecord]] = [[] for _ in range(lanes)]
        for record in page:
            groups[lane_for(record.key, lanes)].append(record)
        for send, group in zip(sends, groups, strict=True):
            if group:
                send.send_nowait(group)

    # ------------------------------------------------------------------ lanes

    async def _lane(self, receive: ObjectReceiveStream[list[SourceRecord]], lane: int = 0) -> None:
        """One batch in flight at a time, in the lane's record order."""
        window = await self._load_window(lane)
        backlog = Backlog()  # received from the reader, not yet batched
        unyielded = 0  # batches taken from the backlog since the lane last let others run
        async with receive:
            while True:
                if backlog and (window is None or window.current is None):
                    unyielded += 1
                    if unyielded >= YIELD_EVERY_BATCHES:
                        unyielded = 0
                        await anyio.lowlevel.checkpoint()
                else:
                    unyielded = 0
                    try:
                        if not await self._await_records(receive, backlog, window, lane):
                            continue
                    except anyio.EndOfStream:
                        if window is not None and self.ended and not self._stopping.is_set():
                            await self._close_window(window, lane)  # windows end at shard end
                        return
                batch = await self._collect(receive, backlog)
                if self._stopping.is_set():
                    return
                if window is None:
                    await self._run_batch(batch)
                    continue
                for run in runs_by_window(batch, window.seconds):
                    if window.must_close_before(run[0]):
                        await self._close_window(window, lane)
                    if self._stopping.is_set():
                        return
                    await self._run_batch(run, window, lane)

    async def _await_records(
        self,
        receive: ObjectReceiveStream[list[SourceRecord]],
        backlog: Backlog,
        window: WindowTracker | None,
        lane: int,
    ) -> bool:
        """Wait for the backlog to hold a record; False when an open window's end came first
        (and it was closed). A cancellation while waiting loses nothing (the page stays in the
        stream)."""
        wait = (
            None if window is None else window.seconds_until_due(time.time(), WINDOW_GRACE_SECONDS)
        )
        if wait is None:
            await self._fill(receive, backlog)
            return True
        with anyio.move_on_after(wait):
            await self._fill(receive, backlog)
            return True
        await self._close_window(window, lane)  # type: ignore[arg-type]
        return False

    @staticmethod
    async def _fill(receive: ObjectReceiveStream[list[SourceRecord]], backlog: Backlog) -> None:
        if backlog:
            await anyio.lowlevel.checkpoint()
        else:
            backlog.add(await receive.receive())

    async def _collect(
        self, receive: ObjectReceiveStream[list[SourceRecord]], backlog: Backlog
    ) -> list[SourceRecord]:
        """BatchSize, 6 MB and the batching window (from the first record) bound a batch; the
        backlog holds at least one record. A record that does not fit stays in the backlog."""
        builder = BatchBuilder(self._batch_size)
        deadline = time.monotonic() + self._window
        while True:
            if backlog:
                chunk = backlog.peek(builder.remaining)
                taken = builder.offer_many(chunk)
                backlog.skip(taken)
                if taken < len(chunk) or builder.full:
                    return builder.records
                continue
            try:
                backlog.add(receive.receive_nowait())
                continue
            except anyio.EndOfStream:
                return builder.records
            except anyio.WouldBlock:
                pass
            left = deadline - time.monotonic()
            if left <= 0 or self._stopping.is_set():
                return builder.records
            page: list[SourceRecord] | None = None
            with anyio.move_on_after(left), contextlib.suppress(anyio.EndOfStream):
                page = await receive.receive()
            if page is None:
                return builder.records
            backlog.add(page)

    async def _run_batch(
        self, records: list[SourceRecord], window: WindowTracker | None = None, lane: int = 0
    ) -> None:
        """The router runs the batch to its end (or to a stop); each finished part is
        checkpointed as soon as the router settles it."""
        hooks = None if window is None else _WindowState(self, window, lane)
        await self._runner.run(
            records, self._settle, self._origin, stopping=self._stopping, window=hooks
        )

    async def _settle(self, settlement: Settlement) -> None:
        """Move the shard's checkpoint; the write is the writer's (with tumbling windows the
        lane waits for it, so a window's state and its checkpoint are written in step)."""
        self._mark_finished(settlement.finished)
        if self._tumbling_seconds > 0:
            await self._writer.flush()

    # ------------------------------------------------------------------ tumbling windows

    def _window_key(self, lane: int) -> str:
        """Window state is per shard, and per lane when a parallelization factor splits it."""
        return self.shard.shard_id if self._lanes == 1 else f"{self.shard.shard_id}#{lane}"

    async def _load_window(self, lane: int) -> WindowTracker | None:
        seconds = self._tumbling_seconds
        if seconds <= 0:
            return None
        tracker = WindowTracker(seconds)
        saved = await self._store.get_window(self._scope, self._window_key(lane))
        if saved:
            tracker.current = Window.loads(saved)
        return tracker

    async def _close_window(self, window: WindowTracker, lane: int, *, early: bool = False) -> None:
        """The final invoke (no records, isFinalInvokeForWindow): retried until it succeeds, as
        Lambda suspends the shard until then; afterwards the state is dropped."""
        current = window.current
        if current is None:
            return
        extra = current.event_fields(
            self.shard.shard_id, self.api.stream_arn, final=True, early=early
        )
        if await self._runner.invoke_until_accepted(extra, self._stopping):
            window.current = None
            await self._save(self._store.set_window, self._window_key(lane), None)

    def _mark_finished(self, records: list[SourceRecord]) -> None:
        if not records:
            return
        age = max(0.0, (time.time() - records[-1].arrival) * 1000)
        self._stats.iterator_age_ms = age
        self._view["iterator_age_ms"] = round(age, 1)
        moved = self._progress.finish([record.handle for record in records])
        if moved is not None:
            self._writer.offer(moved)
        self._room.set()

    async def _write_checkpoint(self, position: str) -> bool:
        """The writer's one write; /status shows the checkpoint once it is stored."""
        if not await self._save(self._store.set, self.shard.shard_id, position):
            return False
        self._view["checkpoint"] = position
        return True


class _WindowState:
    """A lane's tumbling window as the router sees it: the fields an invocation carries, and
    the state it returns (saved beside the checkpoint, or closing the window when too large)."""

    def __init__(self, reader: ShardReader, window: WindowTracker, lane: int) -> None:
        self._reader = reader
        self._window = window
        self._lane = lane
        self._opened: Window | None = None

    def fields(self, records: list[SourceRecord]) -> dict[str, Any]:
        self._opened = self._window.window_for(records[0])
        reader = self._reader
        return self._opened.event_fields(reader.shard.shard_id, reader.api.stream_arn)

    async def returned(self, state: dict[str, Any]) -> None:
        opened = self._opened
        if opened is None:
            return
        opened.state = state
        self._window.current = opened
        reader = self._reader
        if state_too_large(opened.state):
            await reader._close_window(self._window, self._lane, early=True)
        else:
            key = reader._window_key(self._lane)
            await reader._save(reader._store.set_window, key, opened.dumps())
