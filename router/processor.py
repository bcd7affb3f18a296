"""One batch through the router: filter, invoke, interpret — and say which records are finished.

Source-neutral: pollers hand in `SourceRecord`s and act on the `Settlement` (delete SQS messages,
advance a shard checkpoint). Nothing here talks to AWS.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import anyio

from router import telemetry
from router.filters import RecordFilter
from router.invoker import Invoker
from router.metrics import record_invocation
from router.outcomes import (
    BatchFailed,
    BatchSucceeded,
    FunctionError,
    InvocationResult,
    InvokeFailure,
    Outcome,
    PartialFailure,
    Returned,
)
from router.records import SourceRecord
from router.response import interpret
from router.stats import MappingStats

log = logging.getLogger(__name__)


@dataclass
class Settlement:
    """What became of each record in a batch."""

    filtered: list[SourceRecord] = field(default_factory=list)
    succeeded: list[SourceRecord] = field(default_factory=list)
    failed: list[SourceRecord] = field(default_factory=list)
    outcome: Outcome | None = None
    request_id: str = ""
    """The invocation's request id; empty when the handler was not reached."""

    @property
    def finished(self) -> list[SourceRecord]:
        """Records that may leave the source: handled or filtered out."""
        return self.filtered + self.succeeded


def request_id_of(result: InvocationResult) -> str:
    return getattr(result, "request_id", "")


def build_event(records: list[SourceRecord], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Lambda's event; `extra` adds top-level keys (tumbling windows: window, state, ...)."""
    event: dict[str, Any] = {"Records": [r.event for r in records]}
    if extra:
        event.update(extra)
    return event


@dataclass
class BatchProcessor:
    """Runs batches for one mapping and keeps its counters.

    `ordered_groups` makes a failure poison the rest of its group in the batch (FIFO queues): the
    later messages of that group are returned for retry even if the handler says they succeeded,
    so order within a group can never break.
    """

    invoker: Invoker
    stats: MappingStats
    record_filter: RecordFilter | None = None
    report_batch_item_failures: bool = False
    ordered_groups: bool = False
    limiter: anyio.CapacityLimiter | None = None
    _invoked_before: bool = field(default=False, init=False, repr=False)

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

    async def invoke_result(
        self,
        records: list[SourceRecord],
        extra: dict[str, Any] | None = None,
        *,
        require_state: bool = False,
    ) -> tuple[Outcome, InvocationResult]:
        """Invoke the handler with `records`, apply AWS's response rules, and return the outcome
        with the raw result (its request id; a tumbling window's `state` is in it).

        `require_state`: a returned response without `state` is a failed invocation, as in AWS.
        """
        stats = self.stats
        stats.invoked += len(records)
        stats.invocations += 1
        stats.in_flight += 1
        started = time.monotonic()
        try:
            if self.limiter is not None:
                async with self.limiter:
                    result = await self._call(records, extra)
            else:
                result = await self._call(records, extra)
        finally:
            stats.in_flight -= 1
            elapsed = time.monotonic() - started
            stats.duration_seconds += elapsed
            record_invocation(stats, elapsed, len(records))
        outcome = interpret(result, [r.item_id for r in records], self.report_batch_item_failures)
        if require_state and isinstance(result, Returned) and not _has_state(result.payload):
            outcome = BatchFailed("the response has no state (a tumbling window needs one)")
        self._count(outcome, len(records))
        telemetry.annotate_outcome(outcome, len(records))
        return outcome, result

    async def _call(
        self, records: list[SourceRecord], extra: dict[str, Any] | None
    ) -> InvocationResult:
        """One handler call inside its invocation span (the handler's own spans nest in it)."""
        stats = self.stats
        if stats.kind != "sqs" and records and records[-1].arrival:
            # Lambda's IteratorAge: measured at every invoke, so it keeps growing while retrying.
            stats.iterator_age_ms = max(0.0, (time.time() - records[-1].arrival) * 1000)
        coldstart, self._invoked_before = not self._invoked_before, True
        name = getattr(self.invoker, "function_name", None) or stats.mapping
        # The batch span is reused when the poller opened one; otherwise this attempt gets its own.
        with (
            telemetry.batch_span(records, stats.mapping, stats.kind),
            telemetry.invocation_span(name, stats.kind, records, coldstart) as current,
        ):
            result = await self.invoker.invoke(build_event(records, extra))
            telemetry.annotate_result(current, result)
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

    async def process(self, records: list[SourceRecord]) -> Settlement:
        """Filter, invoke once, and settle every record of the batch (in the batch's span)."""
        with telemetry.batch_span(records, self.stats.mapping, self.stats.kind):
            return await self._process(records)

    async def _process(self, records: list[SourceRecord]) -> Settlement:
        to_invoke, filtered = self.apply_filter(records)
        settlement = Settlement(filtered=filtered)
        if not to_invoke:
            return settlement
        outcome, result = await self.invoke_result(to_invoke)
        settlement.outcome = outcome
        settlement.request_id = request_id_of(result)
        if isinstance(outcome, BatchSucceeded):
            settlement.succeeded = to_invoke
        elif isinstance(outcome, PartialFailure):
            settlement.succeeded, settlement.failed = self._split_partial(to_invoke, outcome)
        else:
            if isinstance(outcome, BatchFailed):
                log.warning("batch of %d failed: %s", len(to_invoke), outcome.reason)
            settlement.failed = to_invoke
        return settlement

    def _split_partial(
        self, records: list[SourceRecord], outcome: PartialFailure
    ) -> tuple[list[SourceRecord], list[SourceRecord]]:
        failed_ids = set(outcome.failed_ids)
        ok: list[SourceRecord] = []
        failed: list[SourceRecord] = []
        blocked_groups: set[str | None] = set()
        for record in records:
            if record.item_id in failed_ids or (
                self.ordered_groups and record.key in blocked_groups
            ):
                failed.append(record)
                if self.ordered_groups:
                    blocked_groups.add(record.key)
            else:
                ok.append(record)
        return ok, failed


def _has_state(payload: Any) -> bool:
    return isinstance(payload, dict) and isinstance(payload.get("state"), dict)
