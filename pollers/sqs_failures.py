"""On-failure destination for SQS mappings (beyond AWS, for queues without a redrive policy).

A failed message whose ApproximateReceiveCount reached `maximum_retry_attempts + 1` is sent to the
destination as a failure record (`SQSBatchInfo` plus the message as `payload`) and then deleted
like a finished one. Delivery is bounded per batch; a message the destination did not accept in
time stays in the queue and is sent again when it comes back, so nothing is lost.
"""

from __future__ import annotations

import logging
import time

import anyio

from config.mapping import MappingConfig
from handlers.context import function_arn
from pollers.aws import AwsClients
from router.destinations import Destination, mapping_destination
from router.failure_record import (
    RETRY_ATTEMPTS_EXHAUSTED,
    FailureContext,
    sqs_failure_record,
)
from router.outcomes import BatchFailed, FunctionError, Outcome
from router.records import SourceRecord
from router.stats import MappingStats

log = logging.getLogger(__name__)

DELIVERY_BUDGET_SECONDS = 20.0
"""How long one batch's deliveries may take before the messages are left to reappear."""


def receive_count(record: SourceRecord) -> int:
    return int(record.event.get("attributes", {}).get("ApproximateReceiveCount", "1"))


class SqsFailureDestination:
    """Sends the messages that used up their receives to the mapping's destination."""

    def __init__(
        self, destination: Destination, *, max_receives: int, function_arn: str, stats: MappingStats
    ) -> None:
        self._destination = destination
        self._max_receives = max_receives
        self._function_arn = function_arn
        self._stats = stats
        self._scopes: set[anyio.CancelScope] = set()

    def stop(self) -> None:
        for scope in list(self._scopes):
            scope.cancel()

    def exhausted(self, records: list[SourceRecord]) -> list[SourceRecord]:
        return [r for r in records if receive_count(r) >= self._max_receives]

    async def divert(
        self,
        records: list[SourceRecord],
        outcome: Outcome | None,
        queue_arn: str,
        request_id: str = "",
    ) -> list[SourceRecord]:
        """Deliver each exhausted message's record; returns those the destination accepted."""
        delivered: list[SourceRecord] = []
        error = outcome.error if isinstance(outcome, BatchFailed) else None
        function_error = error.function_error if isinstance(error, FunctionError) else None
        with anyio.move_on_after(DELIVERY_BUDGET_SECONDS) as scope:
            self._scopes.add(scope)
            try:
                for record in records:
                    now = time.time()
                    context = FailureContext(
                        condition=RETRY_ATTEMPTS_EXHAUSTED,
                        function_arn=self._function_arn,
                        invoke_count=receive_count(record),
                        function_error=function_error,
                        request_id=request_id,
                    )
                    failure = sqs_failure_record(
                        record.event, queue_arn=queue_arn, context=context, now=now
                    )
                    await self._destination.deliver(failure, [record.event], "sqs", now)
                    self._stats.destination_delivered += 1
                    delivered.append(record)
            finally:
                self._scopes.discard(scope)
        if len(delivered) < len(records):
            log.warning(
                "%d messages not yet accepted by %s; they stay in the queue",
                len(records) - len(delivered),
                self._destination.ref.arn,
            )
        return delivered


def sqs_failure_destination(
    mapping: MappingConfig, clients: AwsClients, stats: MappingStats
) -> SqsFailureDestination | None:
    source = mapping.source_ref
    destination = mapping_destination(mapping, clients, stats)
    if destination is None or mapping.maximum_retry_attempts < 0:
        return None
    return SqsFailureDestination(
        destination,
        max_receives=mapping.maximum_retry_attempts + 1,
        function_arn=function_arn(source.region, source.account, mapping.effective_function_name),
        stats=stats,
    )
