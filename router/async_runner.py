"""Asynchronous invocation, as Lambda does it: invoke an accepted event, then retry, give up or
deliver its record, and tell the queue what to do with it.

- Function errors (timeouts too) are retried `maximum_retry_attempts` times, after the configured
  delays (Lambda's 60 s and 120 s by default); the queue keeps the next due time, so nothing
  sleeps holding an event.
- Throttles and system errors are retried with backoff from 1 s doubling to 5 min, until the
  event's age runs out, and are not attempts.
- An event older than `maximum_event_age_in_seconds` is given up with `EventAgeExceeded`.
- Given up: the on-failure destination gets the invocation record and the DLQ the event; with
  neither it is dropped and counted (AsyncEventsDropped). A success goes to the on-success
  destination. Reserved concurrency 0 gives up at once, with no invocation.

The runner only decides; the queue (`sluiceway.pollers.async_queue`) stores and deletes.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from opentelemetry.trace import Link, SpanKind
from sluiceway.config.functions import FunctionConfig
from sluiceway.core import telemetry
from sluiceway.core.aws import AwsClients
from sluiceway.core.stats import FunctionStats
from sluiceway.handlers.invocation import InvocationOptions, invocation_options
from sluiceway.handlers.invoker import Invoker
from sluiceway.handlers.results import FunctionError, InvocationResult, InvokeFailure, Returned
from sluiceway.router import tracing
from sluiceway.router.async_destinations import AsyncDestination, DeadLetterQueue, Enqueue
from sluiceway.router.async_events import (
    EVENT_AGE_EXCEEDED,
    RETRIES_EXHAUSTED,
    SUCCESS,
    AsyncEvent,
    Condition,
    error_message,
    invocation_record,
)

log = logging.getLogger(__name__)

BACKOFF_INITIAL_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 300.0
THROTTLED_MESSAGE = "Rate Exceeded."


@dataclass(frozen=True)
class Finished:
    """The event is done with (invoked, delivered, or given up): delete it from the queue."""


@dataclass(frozen=True)
class RetryAt:
    """Keep the event, updated, and take it again at `due_at` (epoch seconds)."""

    event: AsyncEvent
    due_at: float


AsyncSettlement = Finished | RetryAt


def system_backoff(retries: int) -> float:
    """1 s, 2 s, 4 s, ... up to 5 min: the wait after the `retries`-th throttle or system error."""
    return min(BACKOFF_MAX_SECONDS, BACKOFF_INITIAL_SECONDS * 2 ** max(0, retries - 1))


def decode_client_context(value: str | None) -> dict[str, Any] | None:
    """X-Amz-Client-Context: base64 of a JSON object; None when absent."""
    if not value:
        return None
    decoded = orjson.loads(base64.b64decode(value))
    if not isinstance(decoded, dict):
        raise ValueError("the client context must be a JSON object")
    return decoded


def event_of(payload: bytes) -> Any:
    """What the handler gets: the payload's JSON (an empty payload is `{}`, as in Lambda)."""
    return orjson.loads(payload) if payload.strip() else {}


@dataclass
class AsyncFunction:
    """One function's asynchronous invocation: its invoker, settings, destinations and DLQ."""

    config: FunctionConfig
    invoker: Invoker
    stats: FunctionStats
    retry_delays: tuple[float, ...]
    on_success: AsyncDestination | None = None
    on_failure: AsyncDestination | None = None
    dead_letter: DeadLetterQueue | None = None
    clock: Callable[[], float] = time.time
    """Epoch seconds (tests use their own)."""

    @property
    def name(self) -> str:
        return self.config.name

    async def run(self, event: AsyncEvent) -> AsyncSettlement:
        """Invoke `event` once (unless it is too old or the function is off) and decide."""
        now = self.clock()
        if event.age(now) >= self.config.maximum_event_age_in_seconds:
            await self._give_up(event, EVENT_AGE_EXCEEDED, "Event age exceeded", now)
            return Finished()
        if self.config.reserved_concurrent_executions == 0:
            await self._give_up(event, RETRIES_EXHAUSTED, "Reserved concurrency is 0", now)
            return Finished()
        self.stats.async_event_age_ms = event.age(now) * 1000
        result = await self._invoke(event)
        after = event.after(result)
        finished_at = self.clock()
        if isinstance(result, Returned):
            await self._deliver(self.on_success, after, SUCCESS, finished_at)
            return Finished()
        if isinstance(result, InvokeFailure):
            self.stats.throttles += int(result.throttled)
            log.warning(
                "function %s: event %s not invoked (%s); retried",
                self.name,
                event.request_id,
                result.reason,
            )
            return self._retry(after, finished_at + system_backoff(after.system_retries))
        self.stats.errors += 1
        if after.attempts > self.config.maximum_retry_attempts:
            await self._give_up(after, RETRIES_EXHAUSTED, result.message, finished_at)
            return Finished()
        delay = self.retry_delays[min(after.attempts, len(self.retry_delays)) - 1]
        return self._retry(after, finished_at + delay)

    def _retry(self, event: AsyncEvent, due_at: float) -> RetryAt:
        """Come back at `due_at`, or when the event's age runs out if that is sooner."""
        expires = event.received_at + self.config.maximum_event_age_in_seconds
        return RetryAt(event, min(due_at, expires))

    async def _invoke(self, event: AsyncEvent) -> InvocationResult:
        options = InvocationOptions(
            request_id=event.request_id,
            client_context=_client_context(event.client_context),
        )
        links = _caller_links(event.traceparent)
        with (
            telemetry.span(
                f"{self.name} invoke",
                kind=SpanKind.CONSUMER,
                links=links,
                faas__invoked_name=self.name,
                faas__trigger="other",
                faas__invocation_id=event.request_id,
                sluiceway__async_attempt=event.attempts + 1,
            ) as span,
            invocation_options(options),
        ):
            self.stats.invocations += 1
            try:
                result = await self.invoker.invoke(event_of(event.payload))
            except orjson.JSONDecodeError as exc:  # accepted bodies are JSON; kept for safety
                result = FunctionError("Runtime.UnmarshalError", str(exc))
            tracing.annotate_result(span, result)
        return result

    async def _give_up(
        self, event: AsyncEvent, condition: Condition, reason: str, now: float
    ) -> None:
        delivered = await self._deliver(self.on_failure, event, condition, now)
        if self.dead_letter is not None:
            await self.dead_letter.deliver(
                event.payload, event.request_id, error_message(event, reason)
            )
            self.stats.destination_delivered += 1
            delivered = True
        if not delivered:
            self.stats.async_events_dropped += 1
            log.warning(
                "function %s: event %s given up (%s: %s) with no DLQ or on-failure destination; dropped",
                self.name,
                event.request_id,
                condition,
                reason,
            )

    async def _deliver(
        self,
        destination: AsyncDestination | None,
        event: AsyncEvent,
        condition: Condition,
        now: float,
    ) -> bool:
        if destination is None:
            return False
        record = invocation_record(
            event, function_arn=self.config.arn, condition=condition, now=now
        )
        await destination.deliver(record, [], "", now)
        self.stats.destination_delivered += 1
        return True


def _client_context(value: str | None) -> dict[str, Any] | None:
    try:
        return decode_client_context(value)
    except ValueError:
        return None  # checked when the invoke was accepted


def _caller_links(traceparent: str | None) -> list[Link]:
    if not traceparent or telemetry.tracer() is None:
        return []
    found = tracing.traceparent_to_span_context(traceparent)
    return [Link(found)] if found is not None else []


def build_async_function(
    config: FunctionConfig,
    invoker: Invoker,
    stats: FunctionStats,
    clients: AwsClients,
    retry_delays: list[float],
    enqueue: Enqueue,
) -> AsyncFunction:
    """A function's asynchronous side: its destinations and DLQ count refused sends."""

    def delivery_failed(_: BaseException) -> None:
        stats.destination_delivery_failures += 1

    def dead_letter_failed(_: BaseException) -> None:
        stats.dead_letter_errors += 1

    def destination(ref: Any) -> AsyncDestination | None:
        if ref is None:
            return None
        return AsyncDestination(
            ref,
            clients,
            function_name=config.name,
            function_arn=config.arn,
            enqueue=enqueue,
            on_error=delivery_failed,
        )

    dead_letter = config.dead_letter
    return AsyncFunction(
        config=config,
        invoker=invoker,
        stats=stats,
        retry_delays=tuple(retry_delays),
        on_success=destination(config.on_success),
        on_failure=destination(config.on_failure),
        dead_letter=DeadLetterQueue(dead_letter, clients, dead_letter_failed)
        if dead_letter
        else None,
    )
