"""The asynchronous retry policy as pure logic: what each result means for an event, with a
scripted invoker (no AWS): attempts, throttle backoff, delays, expiry, reserved concurrency 0."""

from __future__ import annotations

from typing import Any

import pytest
from sluiceway.config import load_settings
from sluiceway.core.stats import FunctionStats
from sluiceway.handlers.invoker import Invoker
from sluiceway.handlers.results import FunctionError, InvocationResult, InvokeFailure, Returned
from sluiceway.router.async_events import AsyncEvent, invocation_record
from sluiceway.router.async_runner import AsyncFunction, Finished, RetryAt, system_backoff

pytestmark = pytest.mark.anyio
NOW = 1_800_000_000.0


class Scripted(Invoker):
    def __init__(self, *results: InvocationResult) -> None:
        self.results = list(results)
        self.calls = 0

    async def invoke(self, event: dict[str, Any]) -> InvocationResult:
        self.calls += 1
        return self.results.pop(0)


def function(invoker: Invoker, **fields: str) -> AsyncFunction:
    env = {"SLUICEWAY_FUNCTIONS__F__HANDLER": "app.handler"}
    env.update({f"SLUICEWAY_FUNCTIONS__F__{k.upper()}": v for k, v in fields.items()})
    config = load_settings(env).functions["f"]
    return AsyncFunction(
        config, invoker, FunctionStats("f"), retry_delays=(60.0, 120.0), clock=lambda: NOW
    )


async def run_at(runner: AsyncFunction, state: AsyncEvent, moment: float) -> Any:
    runner.clock = lambda: moment
    return await runner.run(state)


def event(**fields: Any) -> AsyncEvent:
    return AsyncEvent("req-1", "f", b'{"a": 1}', fields.pop("received_at", NOW), **fields)


def test_system_backoff_doubles_from_one_second_to_five_minutes() -> None:
    assert [system_backoff(n) for n in (1, 2, 3, 4, 9, 10, 30)] == [1, 2, 4, 8, 256, 300, 300]


async def test_function_errors_are_retried_at_the_configured_delays_then_given_up() -> None:
    error = FunctionError("Exception", "boom")
    runner = function(Scripted(error, error, error))
    first = await run_at(runner, event(), NOW)
    assert isinstance(first, RetryAt) and first.event.attempts == 1
    assert first.due_at == NOW + 60
    second = await run_at(runner, first.event, first.due_at)
    assert isinstance(second, RetryAt) and second.event.attempts == 2
    assert second.due_at == first.due_at + 120
    assert isinstance(await run_at(runner, second.event, second.due_at), Finished)
    assert runner.stats.async_events_dropped == 1  # no DLQ or destination


async def test_throttles_back_off_and_are_not_attempts() -> None:
    throttle = InvokeFailure("Rate Exceeded", throttled=True)
    runner = function(Scripted(throttle, throttle, Returned({"ok": True})))
    state = event()
    dues = []
    for _ in range(2):
        outcome = await runner.run(state)
        assert isinstance(outcome, RetryAt)
        state, dues = outcome.event, [*dues, outcome.due_at]
    assert dues == [NOW + 1, NOW + 2]
    assert state.attempts == 0 and state.system_retries == 2
    assert runner.stats.throttles == 2
    assert isinstance(await runner.run(state), Finished)


async def test_a_retry_is_due_no_later_than_the_events_expiry() -> None:
    runner = function(
        Scripted(FunctionError("Exception", "boom")), maximum_event_age_in_seconds="60"
    )
    outcome = await runner.run(event(received_at=NOW - 30))
    assert isinstance(outcome, RetryAt)
    assert outcome.due_at == NOW + 30  # 60 s delay, but the event expires sooner


async def test_an_expired_event_is_not_invoked() -> None:
    invoker = Scripted()
    runner = function(invoker, maximum_event_age_in_seconds="60")
    assert isinstance(await runner.run(event(received_at=NOW - 61)), Finished)
    assert invoker.calls == 0


async def test_reserved_concurrency_zero_gives_up_without_invoking() -> None:
    invoker = Scripted()
    runner = function(invoker, reserved_concurrent_executions="0")
    assert isinstance(await runner.run(event()), Finished)
    assert invoker.calls == 0 and runner.stats.async_events_dropped == 1


def test_a_record_without_an_invocation_has_no_response() -> None:
    record = invocation_record(
        event(),
        function_arn="arn:aws:lambda:us-east-1:1:function:f",
        condition="EventAgeExceeded",
        now=NOW,
    )
    assert list(record) == ["version", "timestamp", "requestContext", "requestPayload"]
    assert record["requestContext"]["approximateInvokeCount"] == 0
