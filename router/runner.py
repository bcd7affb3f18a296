"""One batch runner for every source: filter → invoke → read the response → retry, bisect or give
up → failure record → destination, and a `Settlement` for the poller to apply.

Pollers hand in `SourceRecord`s with a `Settle` callback and act on each settlement they get back
(delete SQS messages and change visibilities, or advance a shard's checkpoint). Nothing here reads
a source or knows how a position is stored. Two failure modes, as in AWS:

- SQS (`retry_in_place=False`): one invocation; failed records are settled as `failed` and the queue
  redelivers them. With an on-failure destination, a message whose receive count used up
  `MaximumRetryAttempts` is sent there and settled as finished.
- Streams (`retry_in_place=True`): a failed range is retried with backoff until it succeeds, its
  records grow too old, its attempts run out (then it goes to the destination, or is dropped), or
  the reader stops; partial responses and bisecting split it. Every finished prefix is settled
  as soon as it is finished, so a checkpoint moves while a later part is still being retried.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import anyio.to_thread
from opentelemetry.trace import Span
from sluiceway.config.filter_patterns import RecordFilter, compile_filter_criteria
from sluiceway.config.mapping import MappingConfig
from sluiceway.core.aws import AwsClients
from sluiceway.core.metrics import record_invocation
from sluiceway.core.stats import MappingStats
from sluiceway.handlers.context import function_arn
from sluiceway.handlers.invoker import Invoker
from sluiceway.handlers.results import FunctionError, InvocationResult, InvokeFailure, Returned
from sluiceway.router import tracing
from sluiceway.router.bisect import bisect, failure_index
from sluiceway.router.destinations import (
    ATTEMPT_TIMEOUT_SECONDS,
    Destination,
    mapping_destination,
)
from sluiceway.router.error_text import describe, safe_result
from sluiceway.router.failure_record import (
    RECORD_AGE_EXCEEDED,
    RETRY_ATTEMPTS_EXHAUSTED,
    FailureContext,
    sqs_failure_record,
    stream_failure_record,
)
from sluiceway.router.outcomes import BatchFailed, BatchSucceeded, Outcome, PartialFailure
from sluiceway.router.records import SourceRecord
from sluiceway.router.response import interpret
from sluiceway.router.retry_policy import FailurePolicy, backoff_seconds, decide

log = logging.getLogger(__name__)

RETRY_INITIAL_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0
OFF_LOOP_MASKING = 100
"""Failed batches larger than this have their error text masked in a worker thread: reading every
body of 10,000 records takes tens of milliseconds."""
SQS_DELIVERY_BUDGET_SECONDS = 20.0
"""How long one SQS batch's destination sends may take before the messages are left to reappear."""


@dataclass
class Settlement:
    """What became of records of a batch: the poller deletes or checkpoints `finished` and
    leaves `failed` in the source (SQS visibility), in the order given."""

    finished: list[SourceRecord] = field(default_factory=list)
    """Handled, filtered out, or accepted by the on-failure destination (or given up without one)."""
    failed: list[SourceRecord] = field(default_factory=list)
    """To be retried by the source (SQS only; streams retry in place)."""
    outcome: Outcome | None = None
    request_id: str = ""
    """The invocation's request id; empty when the handler was not reached."""


Settle = Callable[[Settlement], Awaitable[None]]
"""The poller's side: apply a settlement to the source (delete, visibility, checkpoint)."""


class WindowHooks(Protocol):
    """A tumbling window's part in an invocation (streams): the poller keeps the state."""

    def fields(self, records: list[SourceRecord]) -> dict[str, Any]:
        """The event's window fields for invoking `records` (window, state, shardId, ...)."""
        ...

    async def returned(self, state: dict[str, Any]) -> None:
        """The invocation returned the window's new `state`."""
        ...


@dataclass(frozen=True, slots=True)
class BatchOrigin:
    """Where a batch was read, as failure records name it."""

    source_arn: str
    shard_id: str = ""
    """Empty for SQS."""


@dataclass
class FailureHandling:
    """A mapping's failure settings, with AWS's defaults (retry until the records succeed)."""

    policy: FailurePolicy = field(default_factory=FailurePolicy)
    destination: Destination | None = None
    function_arn: str = ""
    retry_in_place: bool = True
    """Streams retry a failed range themselves; SQS leaves it to the queue."""
    initial_seconds: float = field(default_factory=lambda: RETRY_INITIAL_SECONDS)
    max_seconds: float = field(default_factory=lambda: RETRY_MAX_SECONDS)

    def backoff(self, failures: int) -> float:
        return backoff_seconds(failures, initial=self.initial_seconds, maximum=self.max_seconds)

    def receives_exhausted(self, record: SourceRecord) -> bool:
        """SQS: the message used up its receives and goes to the destination."""
        limit = self.policy.maximum_retry_attempts
        return self.destination is not None and limit >= 0 and receive_count(record) > limit


def receive_count(record: SourceRecord) -> int:
    return int(record.event.get("attributes", {}).get("ApproximateReceiveCount", "1"))


def build_event(records: list[SourceRecord], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Lambda's event; `extra` adds top-level keys (tumbling windows: window, state, ...)."""
    event: dict[str, Any] = {"Records": [r.event for r in records]}
    if extra:
        event.update(extra)
    return event


@dataclass
class _Range:
    """Records retried together: a batch, the rest after a partial failure, or a bisected half."""

    records: list[SourceRecord]
    retries: int = 0
    invocations: int = 0
    last: Outcome | None = None
    request_id: str = ""
    """The last invocation's request id, which a failure record for these records carries."""
    origin: str | None = None
    """Why this range exists apart from its batch ("partial", "bisect"): traced as a retry."""


class BatchRunner:
    """Runs every batch of one mapping and keeps its counters.

    `ordered_groups` makes a failure poison the rest of its group in the batch (FIFO queues): the
    later messages of that group are returned for retry even if the handler says they succeeded,
    so order within a group can never break.
    """

    def __init__(
        self,
        *,
        invoker: Invoker,
        stats: MappingStats,
        record_filter: RecordFilter | None = None,
        report_batch_item_failures: bool = False,
        ordered_groups: bool = False,
        failures: FailureHandling | None = None,
        limiter: anyio.CapacityLimiter | None = None,
    ) -> None:
        self.invoker = invoker
        self.stats = stats
        self.record_filter = record_filter
        self.report_batch_item_failures = report_batch_item_failures
        self.ordered_groups = ordered_groups
        self.failures = failures or FailureHandling()
        self.limiter = limiter
        self._invoked_before = False

    # ------------------------------------------------------------------ the entry point

    async def run(
        self,
        records: list[SourceRecord],
        settle: Settle,
        origin: BatchOrigin,
        *,
        stopping: anyio.Event | None = None,
        window: WindowHooks | None = None,
    ) -> None:
        """Run one batch to its settlements.

        `stopping` (set by the poller on a graceful stop or a lost lease) ends stream retries and
        destination sends early; what is not settled by then stays in the source. An SQS batch,
        its deletes included, is one span; a stream batch that is retried (possibly for ever)
        gets a span per invocation, so every attempt is exported as it ends.
        """
        if self.failures.retry_in_place:
            stopping = stopping or anyio.Event()
            kept, filtered = self.apply_filter(records)
            if filtered:
                await settle(Settlement(finished=filtered))
            if kept:
                await self._retry_in_place(kept, settle, origin, stopping, window)
            return
        kept, filtered = self.apply_filter(records)
        with self._batch_span(records, invoking=bool(kept)) as current:
            if kept:
                await self._run_once(kept, filtered, settle, origin, stopping, current)
            else:
                await settle(Settlement(finished=filtered))

    def _function(self) -> str:
        return self.invoker.function_name or self.stats.mapping

    def _batch_span(self, records: list[SourceRecord], *, invoking: bool) -> tracing.batch_span:
        """The batch's span; when the batch invokes the function, also its invocation's (with
        `faas.coldstart` true on the mapping's first invocation only)."""
        if not invoking:
            return tracing.batch_span(records, self.stats.mapping, self.stats.kind)
        coldstart, self._invoked_before = not self._invoked_before, True
        return tracing.batch_span(
            records, self.stats.mapping, self.stats.kind, self._function(), coldstart
        )

    def apply_filter(
        self, records: list[SourceRecord]
    ) -> tuple[list[SourceRecord], list[SourceRecord]]:
        """Split into (to invoke, filtered out)."""
        if self.record_filter is None:
            return records, []
        keep: list[SourceRecord] = []
        dropped: list[SourceRecord] = []
        matches = self.record_filter.matches
        for record in records:
            (keep if matches(record.event) else dropped).append(record)
        self.stats.filtered_out += len(dropped)
        return keep, dropped

    # ------------------------------------------------------------------ SQS: the queue retries

    async def _run_once(
        self,
        records: list[SourceRecord],
        filtered: list[SourceRecord],
        settle: Settle,
        origin: BatchOrigin,
        stopping: anyio.Event | None,
        current: Span,
    ) -> None:
        outcome, result = await self.invoke(records, span=current)
        settlement = Settlement(finished=list(filtered), outcome=outcome)
        settlement.request_id = _request_id(result)
        if isinstance(outcome, BatchSucceeded):
            settlement.finished += records
        elif isinstance(outcome, PartialFailure):
            ok, failed = self._split_partial(records, outcome)
            settlement.finished += ok
            settlement.failed = failed
        else:
            settlement.failed = records
        exhausted = [r for r in settlement.failed if self.failures.receives_exhausted(r)]
        if exhausted:
            sent = await self._divert(
                exhausted, outcome, origin, settlement.request_id, stopping or anyio.Event()
            )
            gone = {id(r) for r in sent}
            settlement.finished += sent
            settlement.failed = [r for r in settlement.failed if id(r) not in gone]
        await settle(settlement)

    def _split_partial(
        self, records: list[SourceRecord], outcome: PartialFailure
    ) -> tuple[list[SourceRecord], list[SourceRecord]]:
        failed_ids = set(outcome.failed_ids)
        ok: list[SourceRecord] = []
        failed: list[SourceRecord] = []
        blocked_groups: set[str | None] = set()
        for record in records:
            if (
                record.item_id in failed_ids
                or record.alias in failed_ids
                or (self.ordered_groups and record.key in blocked_groups)
            ):
                failed.append(record)
                if self.ordered_groups:
                    blocked_groups.add(record.key)
            else:
                ok.append(record)
        return ok, failed

    async def _divert(
        self,
        records: list[SourceRecord],
        outcome: Outcome,
        origin: BatchOrigin,
        request_id: str,
        stopping: anyio.Event,
    ) -> list[SourceRecord]:
        """Send each exhausted message's failure record; returns those the destination took."""
        destination = self.failures.destination
        assert destination is not None
        function_error = _function_error(outcome)
        delivered: list[SourceRecord] = []

        async def send_all() -> None:
            for record in records:
                now = time.time()
                context = FailureContext(
                    condition=RETRY_ATTEMPTS_EXHAUSTED,
                    function_arn=self.failures.function_arn,
                    invoke_count=receive_count(record),
                    function_error=function_error,
                    request_id=request_id,
                )
                failure = sqs_failure_record(
                    record.event, queue_arn=origin.source_arn, context=context, now=now
                )
                await destination.deliver(failure, [record.event], "sqs", now)
                self.stats.destination_delivered += 1
                delivered.append(record)

        with anyio.move_on_after(SQS_DELIVERY_BUDGET_SECONDS):
            await _unless_stopped(stopping, send_all)
        if len(delivered) < len(records):
            log.warning(
                "%d messages not yet accepted by %s; they stay in the queue",
                len(records) - len(delivered),
                destination.ref.arn,
            )
        return delivered

    # ------------------------------------------------------------------ streams: retry in place

    async def _retry_in_place(
        self,
        records: list[SourceRecord],
        settle: Settle,
        origin: BatchOrigin,
        stopping: anyio.Event,
        window: WindowHooks | None,
    ) -> None:
        """Invoke until every record is finished: handled, or given up on (sent to the on-failure
        destination, or dropped without one). Gives up early only when stopping, leaving the
        rest unsettled (it is read again from the checkpoint)."""
        failures_config = self.failures
        policy = failures_config.policy
        work: deque[_Range] = deque([_Range(records)])
        failures = 0
        while work and not stopping.is_set():
            current = work[0]
            now = time.time()
            expired = [r for r in current.records if policy.expired(r.arrival, now)]
            if expired:
                context = self._context(RECORD_AGE_EXCEEDED, current, invoked=False)
                if not await self._give_up(expired, context, settle, origin, stopping):
                    return
                gone = {id(r) for r in expired}
                current.records = [r for r in current.records if id(r) not in gone]
                if not current.records:
                    work.popleft()
                    continue
            outcome = await self._invoke_range(current, window)
            failed_at = None
            if isinstance(outcome, PartialFailure):
                failed_at = failure_index(
                    [r.item_id for r in current.records],
                    outcome.failed_ids,
                    [r.alias for r in current.records],
                )
            decision = decide(outcome, failed_at, len(current.records), current.retries, policy)
            done, rest = current.records[: decision.finished], current.records[decision.finished :]
            if done:
                await settle(Settlement(finished=done, outcome=outcome))
            if decision.action == "done":
                work.popleft()
                failures = 0
            elif decision.action == "give_up":
                context = self._context(RETRY_ATTEMPTS_EXHAUSTED, current)
                if not await self._give_up(rest, context, settle, origin, stopping):
                    return
                work.popleft()
                failures = 0
            elif decision.action == "split":
                work[0] = _Range(rest, origin="partial")
            elif decision.action == "bisect":
                left, right = bisect(rest)
                work.popleft()
                work.extendleft([_Range(right, origin="bisect"), _Range(left, origin="bisect")])
            else:
                current.records, current.retries = rest, decision.retries
                failures += 1
                await _pause(stopping, failures_config.backoff(failures))

    async def _invoke_range(self, current: _Range, window: WindowHooks | None) -> Outcome:
        """One invocation of a range; a windowed one carries and takes back the window's state."""
        extra = window.fields(current.records) if window is not None else None
        retrying = current.invocations > 0 or current.origin is not None
        reason = current.origin if current.invocations == 0 else type(current.last).__name__
        with (
            tracing.retry_span(current.invocations, len(current.records), reason)
            if retrying
            else contextlib.nullcontext()
        ):
            outcome, result = await self.invoke(
                current.records, extra, require_state=window is not None
            )
        current.invocations += 1
        current.last = outcome
        current.request_id = _request_id(result) or current.request_id
        if (
            window is not None
            and isinstance(result, Returned)
            and not (isinstance(outcome, BatchFailed) and outcome.error is None)
            and isinstance(result.payload, dict)
        ):
            await window.returned(result.payload["state"])
        return outcome

    def _context(self, condition: str, current: _Range, *, invoked: bool = True) -> FailureContext:
        return FailureContext(
            condition=condition,  # type: ignore[arg-type]
            function_arn=self.failures.function_arn,
            invoke_count=current.invocations,
            request_id=current.request_id,
            function_error=_function_error(current.last),
            invoked=invoked,
        )

    async def _give_up(
        self,
        records: list[SourceRecord],
        context: FailureContext,
        settle: Settle,
        origin: BatchOrigin,
        stopping: anyio.Event,
    ) -> bool:
        """Send `records` to the destination (or drop them), then settle them; False if stopped
        before the destination accepted them (they stay unsettled: nothing is lost)."""
        destination = self.failures.destination
        if destination is None:
            self.stats.dropped += len(records)
            log.warning(
                "%s: dropping %d records of %s (%s, no on-failure destination)",
                self.stats.mapping,
                len(records),
                origin.shard_id,
                context.condition,
            )
        else:
            now = time.time()
            events = [r.event for r in records]
            record = stream_failure_record(
                events,
                [r.arrival for r in records],
                shard_id=origin.shard_id,
                stream_arn=origin.source_arn,
                context=context,
                now=now,
            )

            async def send() -> None:
                await destination.deliver(record, events, origin.shard_id, now)

            if not await _unless_stopped(stopping, send):
                return False
            self.stats.destination_delivered += len(records)
        await settle(Settlement(finished=records))
        return True

    async def invoke_until_accepted(self, extra: dict[str, Any], stopping: anyio.Event) -> bool:
        """An invocation without records (a tumbling window's final invoke), retried with backoff
        until it succeeds, as Lambda suspends the shard until then; False if stopped first."""
        failures = 0
        while not stopping.is_set():
            outcome, _ = await self.invoke([], extra)
            if not isinstance(outcome, BatchFailed):
                return True
            failures += 1
            await _pause(stopping, self.failures.backoff(failures))
        return False

    # ------------------------------------------------------------------ one invocation

    async def invoke(
        self,
        records: list[SourceRecord],
        extra: dict[str, Any] | None = None,
        *,
        require_state: bool = False,
        span: Span | None = None,
    ) -> tuple[Outcome, InvocationResult]:
        """Invoke the handler with `records`, apply AWS's response rules, and return the outcome
        with the raw result (its request id; a tumbling window's `state` is in it).

        `require_state`: a returned response without `state` is a failed invocation, as in AWS.
        `span`: the batch span already open around this invocation (SQS), else it opens one.
        """
        stats = self.stats
        stats.invoked += len(records)
        stats.invocations += 1
        # One span per invocation: the SQS runner's batch span (already open), or this one.
        opened = (
            contextlib.nullcontext(span)
            if span is not None
            else self._batch_span(records, invoking=True)
        )
        with opened as current:
            stats.in_flight += 1
            started = time.monotonic()
            try:
                if self.limiter is not None:
                    async with self.limiter:
                        result = await self._call(records, extra, current)
                else:
                    result = await self._call(records, extra, current)
            finally:
                stats.in_flight -= 1
                elapsed = time.monotonic() - started
                stats.duration_seconds += elapsed
                record_invocation(stats, elapsed, len(records))
            stats.set_handler_error(self.invoker.init_error)  # readiness follows the init
            outcome = interpret(result, item_ids(records), self.report_batch_item_failures)
            if require_state and isinstance(result, Returned) and not _has_state(result.payload):
                outcome = BatchFailed("the response has no state (a tumbling window needs one)")
            self._count(outcome, len(records))
            tracing.annotate_outcome(current, outcome, len(records), _request_id(result))
            if isinstance(outcome, BatchFailed):
                self._log_failure(outcome, result, len(records))
        return outcome, result

    def _log_failure(self, outcome: BatchFailed, result: InvocationResult, size: int) -> None:
        """One line per failed invocation, whatever the target: the handler's error (cut and
        masked by `safe_error`), or why the batch failed without one."""
        if isinstance(result, FunctionError):
            if not log.isEnabledFor(logging.ERROR):
                return
            message, traceback_text = describe(result)
            extra = {
                "aws_request_id": result.request_id,
                "function_name": self.invoker.function_name or self.stats.mapping,
                "batch_size": size,
            }
            record = log.makeRecord(
                log.name, logging.ERROR, __file__, 0, "%s", (message,), None, extra=extra
            )
            record.exc_text = traceback_text  # the handler's frames, as text: not our exception
            log.handle(record)
        elif isinstance(result, InvokeFailure) and result.throttled:
            log.debug("batch of %d throttled: %s", size, outcome.reason)
        else:
            log.warning("batch of %d failed: %s", size, outcome.reason)

    async def _call(
        self, records: list[SourceRecord], extra: dict[str, Any] | None, current: Span
    ) -> InvocationResult:
        """One handler call inside the batch span (the handler's own spans nest in it)."""
        stats = self.stats
        if stats.kind != "sqs" and records and records[-1].arrival:
            # Lambda's IteratorAge: measured at every invoke, so it keeps growing while retrying.
            stats.iterator_age_ms = max(0.0, (time.time() - records[-1].arrival) * 1000)
        with tracing.record_spans(self._function(), records):
            result = await self.invoker.invoke(build_event(records, extra))
        if not isinstance(result, Returned):  # before any span, log or status sees it
            if len(records) > OFF_LOOP_MASKING:
                result = await anyio.to_thread.run_sync(safe_result, result, records)
            else:
                result = safe_result(result, records)
            tracing.annotate_result(current, result)
        return result

    def _count(self, outcome: Outcome, size: int) -> None:
        stats = self.stats
        if isinstance(outcome, BatchSucceeded):
            stats.last_processing_result = "OK"
            return
        if isinstance(outcome, PartialFailure):
            stats.failed_invoke += size
            stats.last_processing_result = "OK"
            return
        stats.failed_invoke += size
        error = outcome.error
        if isinstance(error, InvokeFailure):
            if error.throttled:
                stats.throttles += 1
            stats.last_processing_result = f"PROBLEM: {error.reason}"
        else:
            if isinstance(error, FunctionError):
                stats.errors += 1
            stats.last_processing_result = "PROBLEM: Function call failed"


def item_ids(records: list[SourceRecord]) -> list[str]:
    """Every identifier a partial batch response may name a record of the batch by."""
    ids = [r.item_id for r in records]
    ids.extend(r.alias for r in records if r.alias is not None)
    return ids


def _request_id(result: InvocationResult) -> str:
    return "" if isinstance(result, InvokeFailure) else result.request_id


def _function_error(outcome: Outcome | None) -> str | None:
    error = outcome.error if isinstance(outcome, BatchFailed) else None
    return error.function_error if isinstance(error, FunctionError) else None


def _has_state(payload: Any) -> bool:
    return isinstance(payload, dict) and isinstance(payload.get("state"), dict)


async def _pause(stopping: anyio.Event, seconds: float) -> None:
    """Backoff that a graceful stop cuts short."""
    with anyio.move_on_after(seconds):
        await stopping.wait()


async def _unless_stopped(stopping: anyio.Event, work: Callable[[], Awaitable[None]]) -> bool:
    """Run `work`, cancelled if `stopping` is set first; True when it ran to its end."""
    if stopping.is_set():
        return False
    finished = False
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            await stopping.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        await work()
        finished = True
        tg.cancel_scope.cancel()
    return finished


def build_runner(
    mapping: MappingConfig,
    invoker: Invoker,
    stats: MappingStats,
    clients: AwsClients | None,
    *,
    destination_timeout: float = ATTEMPT_TIMEOUT_SECONDS,
) -> BatchRunner:
    """A mapping's runner: its filter, response types, ordering and failure settings;
    `destination_timeout` bounds each attempt to deliver a failure record."""
    source = mapping.source_ref
    sqs = mapping.kind == "sqs"
    destination = mapping_destination(mapping, clients, stats, destination_timeout)
    if sqs and mapping.maximum_retry_attempts < 0:
        destination = None  # an SQS mapping's destination needs MaximumRetryAttempts
    failures = FailureHandling(
        policy=FailurePolicy(
            maximum_retry_attempts=mapping.maximum_retry_attempts,
            maximum_record_age_seconds=-1 if sqs else mapping.maximum_record_age_in_seconds,
            bisect=not sqs and mapping.bisect_batch_on_function_error,
        ),
        destination=destination,
        function_arn=function_arn(source.region, source.account, mapping.effective_function_name),
        retry_in_place=not sqs,
    )
    return BatchRunner(
        invoker=invoker,
        stats=stats,
        record_filter=compile_filter_criteria(mapping.filter_criteria, mapping.kind),
        report_batch_item_failures=mapping.report_batch_item_failures,
        ordered_groups=source.fifo,
        failures=failures,
    )
