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

from router.filters import RecordFilter
from router.invoker import Invoker
from router.outcomes import (
    BatchFailed,
    BatchSucceeded,
    FunctionError,
    InvokeFailure,
    Outcome,
    PartialFailure,
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

    @property
    def finished(self) -> list[SourceRecord]:
        """Records that may leave the source: handled or filtered out."""
        return self.filtered + self.succeeded


def build_event(records: list[SourceRecord]) -> dict[str, Any]:
    return {"Records": [r.event for r in records]}


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

    async def invoke(self, records: list[SourceRecord]) -> Outcome:
        """Invoke the handler with `records` and apply AWS's response rules."""
        stats = self.stats
        stats.invoked += len(records)
        stats.invocations += 1
        stats.in_flight += 1
        started = time.monotonic()
        try:
            if self.limiter is not None:
                async with self.limiter:
                    result = await self.invoker.invoke(build_event(records))
            else:
                result = await self.invoker.invoke(build_event(records))
        finally:
            stats.in_flight -= 1
            stats.duration_seconds += time.monotonic() - started
        outcome = interpret(result, [r.item_id for r in records], self.report_batch_item_failures)
        self._count(outcome, len(records))
        return outcome

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
        """Filter, invoke once, and settle every record of the batch."""
        to_invoke, filtered = self.apply_filter(records)
        settlement = Settlement(filtered=filtered)
        if not to_invoke:
            return settlement
        outcome = await self.invoke(to_invoke)
        settlement.outcome = outcome
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
