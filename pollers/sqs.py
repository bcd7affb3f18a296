"""The SQS poller: long-poll, batch, invoke through the router, then delete what finished.

Guarantees (at least once, like Lambda):
- a message leaves the queue only after its batch finished and it succeeded or was filtered out;
- a failed message stays in the queue and reappears when its visibility timeout ends (the queue's
  redrive policy moves it to the DLQ after maxReceiveCount receives);
- while Sluiceway holds a message (collecting a batch or running the handler) its visibility is
  extended, so a slow handler never causes a duplicate, whatever the function timeout;
- on a graceful stop, messages received but not yet handed to the handler are made visible at once.
FIFO queues: messages are batched per message group, groups run in parallel, one batch per group
is ever in flight (SQS itself withholds a group while any of its messages is in flight), and a
failure returns the rest of its group's batch for retry, so order within a group never breaks.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from typing import Any

import anyio
from anyio.abc import TaskGroup
from sluiceway.config.mapping import MappingConfig
from sluiceway.core.aws import LONG_POLL_SECONDS, AwsClients
from sluiceway.core.aws_retry import call_with_retry, error_code
from sluiceway.core.stats import MappingStats
from sluiceway.core.telemetry import poll_span
from sluiceway.pollers.poller import Poller
from sluiceway.pollers.queue_info import read_queue
from sluiceway.pollers.scaling import LAMBDA_SQS_MAX_CONCURRENCY, ConcurrencyScaler
from sluiceway.pollers.sqs_records import to_source_record
from sluiceway.router import tracing
from sluiceway.router.batching import BatchBuilder, split_by_key
from sluiceway.router.outcomes import BatchFailed
from sluiceway.router.records import SourceRecord
from sluiceway.router.runner import BatchOrigin, BatchRunner, Settlement, receive_count

log = logging.getLogger(__name__)

SQS_BATCH_LIMIT = 10
"""Entries per ReceiveMessage / DeleteMessageBatch / ChangeMessageVisibilityBatch call."""
SCALE_UP_INTERVAL = 0.2
"""Lambda adds up to 300 concurrent batches a minute to a queue with a backlog: one per 0.2 s."""


def chunks(items: list[Any], size: int = SQS_BATCH_LIMIT) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def concurrency_cap(mapping: MappingConfig) -> int:
    """Most batches in flight: MaximumConcurrency (else Lambda's ceiling), and never more than the
    function's reserved concurrency, since a batch over it would be throttled and its messages
    sent back to the queue, a receive closer to the DLQ without reaching the handler."""
    cap = LAMBDA_SQS_MAX_CONCURRENCY
    if mapping.scaling_config and mapping.scaling_config.maximum_concurrency:
        cap = mapping.scaling_config.maximum_concurrency
    if mapping.reserved_concurrency is not None:
        cap = min(cap, max(1, mapping.reserved_concurrency))
    return cap


class SqsPoller(Poller):
    """Polls one queue for one mapping until `stop()` (graceful) or cancellation."""

    def __init__(
        self,
        mapping: MappingConfig,
        clients: AwsClients,
        runner: BatchRunner,
        stats: MappingStats,
        *,
        wait_seconds: int = LONG_POLL_SECONDS,
    ) -> None:
        self.mapping = mapping
        self.source = mapping.source_ref
        self._clients = clients
        self._runner = runner
        self._stats = stats
        self._wait_seconds = wait_seconds
        self._batch_size = mapping.effective_batch_size
        self._window = float(mapping.maximum_batching_window_in_seconds)
        cap = concurrency_cap(mapping)
        self._scaler = ConcurrencyScaler(maximum=cap)
        runner.limiter = anyio.CapacityLimiter(cap)
        self._stopping = anyio.Event()
        self._receive_scopes: set[anyio.CancelScope] = set()
        self._resolve_scope = anyio.CancelScope()
        self._held: dict[str, float] = {}  # receipt handle -> monotonic time it becomes visible
        self._active_slots = 0
        self._grown_at = -math.inf
        self._slots: TaskGroup | None = None
        self._sqs: Any = None
        self._receiver: Any = None
        self._deleter: Any = None
        self._gathering = anyio.Lock()
        self.queue_url = ""
        self.queue_arn = self.source.arn
        self.visibility_timeout = 30
        self.fifo = self.source.fifo
        self.redrive_policy: str | None = None

    # ------------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        """Stop receiving; batches in flight finish, unstarted messages are released."""
        self._stopping.set()
        self._resolve_scope.cancel()
        for scope in list(self._receive_scopes):
            scope.cancel()

    async def resolve(self) -> None:
        """Find the queue and read the attributes the poller depends on (retries until reachable)."""
        region = self.source.region  # the queue's own, whatever AWS_REGION says
        sqs = self._sqs = await self._clients.client("sqs", region=region)
        self._receiver = await self._clients.fast("sqs", region=region, long_poll=True)
        self._deleter = await self._clients.fast("sqs", region=region)
        info = await call_with_retry(
            read_queue, sqs, self.source, on_error=self._note_error, retry_all=True
        )
        self.queue_url = info.url
        self.visibility_timeout = info.visibility_timeout
        self.fifo = info.fifo
        self.queue_arn = info.arn
        self.redrive_policy = info.redrive_policy
        failures = self._runner.failures
        if self.redrive_policy and failures.destination is not None and not failures.retry_in_place:
            log.warning(
                "mapping %s: the queue has a redrive policy and the mapping an on-failure "
                "destination; a message goes to whichever limit it reaches first",
                self.mapping.name,
            )
        if self.mapping.function_timeout > self.visibility_timeout:
            log.info(
                "mapping %s: function timeout %.0fs exceeds the queue's visibility timeout %ds; "
                "visibility is extended while batches run",
                self.mapping.name,
                self.mapping.function_timeout,
                self.visibility_timeout,
            )

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        self._stats.state = "Enabling"
        with self._resolve_scope:
            await self.resolve()
        if self._stopping.is_set():
            task_status.started()
            self._stats.state = "Disabled"
            return
        self._stats.state = "Enabled"
        self._stats.last_error = None
        task_status.started()
        async with anyio.create_task_group() as outer:
            outer.start_soon(self._heartbeat_loop)
            async with anyio.create_task_group() as slots:
                self._slots = slots
                for _ in range(self._scaler.target):
                    self._spawn_slot()
            outer.cancel_scope.cancel()
        self._stats.state = "Disabled"

    def _spawn_slot(self) -> None:
        assert self._slots is not None
        self._active_slots += 1
        self._stats.concurrency_target = self._scaler.target
        self._slots.start_soon(self._slot)

    def _note_error(self, exc: BaseException) -> None:
        self._stats.last_error = f"{error_code(exc)}: {exc}"

    # ------------------------------------------------------------------ the poller loop

    async def _slot(self) -> None:
        """One concurrent poller: collect a batch, run it, settle it, repeat."""
        carry: list[SourceRecord] = []
        try:
            while not self._stopping.is_set():
                if self._active_slots > self._scaler.target:
                    return
                batch = await self._next_batch(carry)
                if self._stopping.is_set():
                    await self._release(batch + carry)
                    carry.clear()
                    return
                if not batch:
                    self._scaler.idle()
                    continue
                if (len(batch) >= self._batch_size or carry) and self._may_grow():
                    self._spawn_slot()
                await self._run_batch(batch)
        finally:
            self._active_slots -= 1
            if carry:
                with anyio.CancelScope(shield=True):
                    await self._release(carry)

    async def _next_batch(self, carry: list[SourceRecord]) -> list[SourceRecord]:
        """With a batching window, one poller gathers at a time (the others' batches still run),
        so the window fills one batch instead of splitting the messages between pollers."""
        if self._window <= 0 or self.fifo:
            return await self._collect(carry)
        async with self._gathering:
            return await self._collect(carry)

    def _may_grow(self) -> bool:
        """A backlog adds a poller at Lambda's pace (SCALE_UP_INTERVAL), and only while the
        handler could run one more batch at once (invokers that cannot tell, e.g. HTTP, could):
        a poller per full batch outran both, and each idle one costs CPU and holds messages."""
        now = time.monotonic()
        if now - self._grown_at < SCALE_UP_INTERVAL:
            return False
        if not self._runner.invoker.has_room():
            return False
        if not self._scaler.backlog():
            return False
        self._grown_at = now
        return True

    async def _collect(self, carry: list[SourceRecord]) -> list[SourceRecord]:
        """Build one batch: BatchSize, the window (from the first message) and 6 MB all bound it."""
        builder = BatchBuilder(self._batch_size)
        while carry and builder.offer(carry[0]):
            carry.pop(0)
        if not builder.records:
            first = await self._receive(min(SQS_BATCH_LIMIT, self._batch_size), self._wait_seconds)
            for record in first:
                if not builder.offer(record):
                    carry.append(record)
            if not builder.records:
                return []
        if self.fifo or self._window <= 0 or builder.full or carry:
            return builder.records
        await self._fill(builder, carry, time.monotonic() + self._window)
        return builder.records

    async def _fill(
        self, builder: BatchBuilder, carry: list[SourceRecord], deadline: float
    ) -> None:
        """Receive in parallel until the batch is full, the window ends or 6 MB is reached."""
        reserved = 0
        closed = False

        async def receiver() -> None:
            nonlocal reserved, closed
            while not closed and not self._stopping.is_set():
                left = deadline - time.monotonic()
                want = min(SQS_BATCH_LIMIT, builder.remaining - reserved)
                if left <= 0 or want <= 0:
                    return
                wait = min(self._wait_seconds, int(left))
                reserved += want
                try:
                    records = await self._receive(want, wait)
                finally:
                    reserved -= want
                for record in records:
                    if closed or not builder.offer(record):
                        closed = True
                        carry.append(record)
                if builder.full:
                    closed = True
                elif not records and wait == 0:
                    await anyio.sleep(max(0.0, deadline - time.monotonic()))

        lanes = max(1, min(10, math.ceil(builder.remaining / SQS_BATCH_LIMIT)))
        async with anyio.create_task_group() as tg:
            for _ in range(lanes):
                tg.start_soon(receiver)

    async def _receive(self, count: int, wait: int) -> list[SourceRecord]:
        """One ReceiveMessage call; a graceful stop cancels a long poll that is waiting (it
        returned nothing: no trace, and not counted as an empty poll)."""
        if self._stopping.is_set():
            return []
        records: list[SourceRecord] = []
        with poll_span(self.source.name, "sqs") as poll, anyio.CancelScope() as scope:
            self._receive_scopes.add(scope)
            try:
                sent_at = time.monotonic()
                response = await call_with_retry(
                    self._receiver.call,
                    "ReceiveMessage",
                    {
                        "QueueUrl": self.queue_url,
                        "MaxNumberOfMessages": count,
                        "WaitTimeSeconds": wait,
                        "MessageSystemAttributeNames": ["All"],
                        "MessageAttributeNames": ["All"],
                    },
                    on_error=self._note_error,
                    retry_all=True,
                )
            finally:
                self._receive_scopes.discard(scope)
            visible_at = sent_at + self.visibility_timeout
            for message in response.get("Messages") or []:
                record = to_source_record(
                    message, queue_arn=self.queue_arn, region=self.source.region, fifo=self.fifo
                )
                self._held[record.handle] = visible_at
                records.append(record)
            tracing.received(poll, records)
        if not records:
            if not scope.cancel_called:
                self._stats.empty_polls += 1
            return []
        self._stats.last_error = None
        self._stats.polled += len(records)
        return records

    # ------------------------------------------------------------------ running and settling

    async def _run_batch(self, records: list[SourceRecord]) -> None:
        if not self.fifo:
            await self._run_group(records)
            return
        async with anyio.create_task_group() as tg:
            for group in split_by_key(records):
                tg.start_soon(self._run_group, group)

    async def _run_group(self, records: list[SourceRecord]) -> None:
        """The router runs the batch and calls `_settle` inside the batch's span, so the deletes
        show under their batch."""
        origin = BatchOrigin(self.queue_arn)
        try:
            await self._runner.run(records, self._settle, origin, stopping=self._stopping)
        except BaseException:
            # Nothing was settled: the messages reappear after their visibility timeout.
            self._forget(records)
            raise

    async def _settle(self, settlement: Settlement) -> None:
        outcome = settlement.outcome
        if (
            isinstance(outcome, BatchFailed)
            and outcome.reached_handler
            and not self._runner.report_batch_item_failures
        ):
            self._scaler.failing()
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as tg:
                for chunk in chunks(settlement.finished):
                    tg.start_soon(self._delete, chunk)
            await self._fail(settlement.failed)

    async def _delete(self, records: list[SourceRecord]) -> None:
        """DeleteMessageBatch with per-entry failures retried; what cannot be deleted will reappear."""
        pending = {str(i): r for i, r in enumerate(records)}
        for attempt in range(5):
            try:
                entries = [{"Id": i, "ReceiptHandle": r.handle} for i, r in pending.items()]
                response = await call_with_retry(
                    self._deleter.call,
                    "DeleteMessageBatch",
                    {"QueueUrl": self.queue_url, "Entries": entries},
                    attempts=5,
                    on_error=self._note_error,
                )
            except Exception as exc:
                log.error(
                    "delete of %d messages failed: %s; they will be redelivered", len(pending), exc
                )
                break
            for entry in response.get("Successful", []):
                self._held.pop(pending.pop(entry["Id"]).handle, None)
                self._stats.deleted += 1
            retry = {}
            for entry in response.get("Failed", []):
                record = pending[entry["Id"]]
                if entry.get("SenderFault") or entry.get("Code") == "ReceiptHandleIsInvalid":
                    log.warning("could not delete %s: %s", record.item_id, entry.get("Code"))
                else:
                    retry[entry["Id"]] = record
            pending = retry
            if not pending:
                break
            await anyio.sleep(0.2 * 2**attempt)
        self._forget(list(pending.values()))

    async def _fail(self, records: list[SourceRecord]) -> None:
        """Leave failed messages to reappear; with visibility_backoff, later for each receive."""
        if not records:
            return
        backoff = self.mapping.visibility_backoff
        if backoff is None:
            self._forget(records)
            return
        entries = [(record, backoff.timeout_for(receive_count(record))) for record in records]
        await self._change_visibility(entries)
        self._forget(records)

    async def _release(self, records: list[SourceRecord]) -> None:
        """Make messages visible again at once (received but never handed to the handler)."""
        if records:
            await self._change_visibility([(r, 0) for r in records])
            self._forget(records)

    def _forget(self, records: list[SourceRecord]) -> None:
        for record in records:
            self._held.pop(record.handle, None)

    async def _change_visibility(
        self, entries: list[tuple[SourceRecord, int]]
    ) -> list[SourceRecord]:
        """ChangeMessageVisibilityBatch in chunks; returns the records whose change failed."""
        failed: list[SourceRecord] = []
        for chunk in chunks(entries):
            by_id = {str(i): record for i, (record, _) in enumerate(chunk)}
            try:
                response = await call_with_retry(
                    self._sqs.change_message_visibility_batch,
                    QueueUrl=self.queue_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": record.handle, "VisibilityTimeout": seconds}
                        for i, (record, seconds) in enumerate(chunk)
                    ],
                    attempts=4,
                    on_error=self._note_error,
                )
            except Exception as exc:
                log.warning("visibility change failed for %d messages: %s", len(chunk), exc)
                failed.extend(by_id.values())
                continue
            failed.extend(by_id[entry["Id"]] for entry in response.get("Failed", []))
        return failed

    # ------------------------------------------------------------------ visibility heartbeat

    async def _heartbeat_loop(self) -> None:
        """Extend the visibility of every held message before it would reappear."""
        vt = self.visibility_timeout
        interval = min(10.0, max(0.25, vt / 4))
        threshold = min(float(vt), 3 * interval) if vt >= 1 else 2 * interval
        extend_to = max(vt, math.ceil(3 * interval))
        while True:
            await anyio.sleep(interval)
            now = time.monotonic()
            due = [h for h, until in self._held.items() if until - now < threshold]
            if not due:
                continue
            records = [SourceRecord(event={}, item_id=h, size=0, handle=h) for h in due]
            failed = await self._change_visibility([(r, extend_to) for r in records])
            lost = {r.handle for r in failed}
            for handle in due:
                if handle not in self._held:
                    continue  # settled while the call was in flight
                if handle in lost:
                    log.warning("lost visibility of a message in flight; it may be delivered twice")
                    self._held.pop(handle, None)
                else:
                    self._held[handle] = now + extend_to
