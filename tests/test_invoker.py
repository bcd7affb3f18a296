"""Invoking handlers in-process: results, never exceptions, for whatever a handler does."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from sluiceway.handlers.invoker import MAX_RESPONSE_BYTES, PythonInvoker, marshal_response
from sluiceway.handlers.loader import HandlerLoadError
from sluiceway.handlers.results import FunctionError, Returned

from tests.handlers_fixtures import sync_handlers

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


FIXTURES = "tests.handlers_fixtures"
EVENT: dict[str, Any] = {"Records": [{"messageId": "m1"}, {"messageId": "m2"}]}


def invoker(spec: str, **options: Any) -> PythonInvoker:
    options.setdefault("function_name", "orders")
    options.setdefault("function_timeout", 3.0)
    return PythonInvoker(f"{FIXTURES}.{spec}", **options)


# ---------------------------------------------------------------- success


@pytest.mark.parametrize("spec", ["sync_handlers:echo", "async_handlers:echo"])
async def test_a_handler_that_returns_gives_its_payload(spec: str) -> None:
    result = await invoker(spec).invoke(EVENT)
    assert isinstance(result, Returned)
    assert result.payload["records"] == 2
    assert result.duration >= 0


async def test_each_invocation_gets_a_fresh_request_id() -> None:
    run = invoker("sync_handlers:echo")
    first, second = await run.invoke(EVENT), await run.invoke(EVENT)
    assert isinstance(first, Returned) and isinstance(second, Returned)
    assert first.payload["request_id"] != second.payload["request_id"]


async def test_the_result_carries_the_request_id_the_handler_saw() -> None:
    returned = await invoker("sync_handlers:echo").invoke(EVENT)
    assert isinstance(returned, Returned)
    assert returned.request_id == returned.payload["request_id"]
    failed = await invoker("sync_handlers:boom").invoke(EVENT)
    assert isinstance(failed, FunctionError) and len(failed.request_id) == 36


async def test_the_context_describes_the_mapped_function() -> None:
    run = invoker(
        "sync_handlers:context_summary", memory_size=512, region="eu-west-1", account="123456789012"
    )
    result = await run.invoke(EVENT)
    assert isinstance(result, Returned)
    assert result.payload["arn"] == "arn:aws:lambda:eu-west-1:123456789012:function:orders"
    assert result.payload["memory"] == "512"
    assert result.payload["log_stream"] == run.log_stream_name


async def test_the_context_counts_down_the_function_timeout() -> None:
    result = await invoker("sync_handlers:remaining_time", function_timeout=2.0).invoke(EVENT)
    assert isinstance(result, Returned)
    assert 1500 < result.payload <= 2000


async def test_a_handler_that_mutates_its_event_does_not_change_the_callers() -> None:
    event = {"Records": [{"messageId": "m1"}]}
    await invoker("sync_handlers:mutates_event").invoke(event)
    assert event == {"Records": [{"messageId": "m1"}]}


async def test_sync_handlers_run_off_the_event_loop_thread() -> None:
    result = await invoker("sync_handlers:thread_ident").invoke(EVENT)
    assert isinstance(result, Returned)
    assert result.payload != threading.get_ident()


async def test_async_handlers_run_on_the_event_loop() -> None:
    result = await invoker("async_handlers:thread_ident").invoke(EVENT)
    assert isinstance(result, Returned)
    assert result.payload == threading.get_ident()


async def test_the_event_loop_keeps_running_while_a_sync_handler_sleeps() -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.sleep(0.01)

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        await invoker("sync_handlers:sleeps").invoke({"sleep": 0.2})
        tg.cancel_scope.cancel()
    assert ticks >= 5


async def test_concurrent_sync_invocations_are_bounded_by_max_threads() -> None:
    probe = sync_handlers.probe
    probe.peak = 0
    run = invoker("sync_handlers:probe", max_threads=3)
    async with anyio.create_task_group() as tg:
        for _ in range(12):
            tg.start_soon(run.invoke, EVENT)
    assert probe.peak == 3


async def test_waiting_for_a_thread_does_not_count_toward_the_timeout() -> None:
    run = invoker("sync_handlers:sleeps", max_threads=1, function_timeout=0.3)
    results: list[Any] = []

    async def call() -> None:
        results.append(await run.invoke({"sleep": 0.1}))

    async with anyio.create_task_group() as tg:
        for _ in range(4):  # the last one waits 0.3 s for the thread before it starts
            tg.start_soon(call)
    assert [type(r) for r in results] == [Returned] * 4


# ---------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("spec", "error_type", "message"),
    [
        ("sync_handlers:boom", "ValueError", "order 7 has no customer"),
        ("async_handlers:boom", "KeyError", "'customer'"),
        ("sync_handlers:raises_timeout_error", "TimeoutError", "the database did not answer"),
    ],
)
async def test_a_raised_exception_is_a_function_error_named_after_it(
    spec: str, error_type: str, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="sluiceway"):
        result = await invoker(spec).invoke(EVENT)
    assert result == FunctionError(error_type, message, result.duration)
    # Lambda's stackTrace: the handler's own frames, none of the runtime's that called it; the
    # router logs the error once, so the invoker writes nothing.
    assert isinstance(result, FunctionError) and result.stack_trace
    module = spec.split(":")[0]
    folder = Path(sync_handlers.__file__).parent
    assert result.stack_trace[0].startswith(f'  File "{folder / module}.py"')
    assert "raise" in result.stack_trace[-1]
    assert not any("sluiceway" in frame or "anyio" in frame for frame in result.stack_trace)
    assert not any(
        "invoker.py" in frame or "environments.py" in frame for frame in result.stack_trace
    )
    assert caplog.records == []


async def test_sys_exit_in_a_handler_is_a_function_error_not_an_exit() -> None:
    result = await invoker("sync_handlers:exits").invoke(EVENT)
    assert isinstance(result, FunctionError)
    assert result.error_type == "Runtime.ExitError"
    assert "exit status 3" in result.message


@pytest.mark.parametrize("spec", ["sync_handlers:sleeps", "async_handlers:sleeps"])
async def test_a_handler_that_outlives_its_timeout_times_out(spec: str) -> None:
    started = time.monotonic()
    result = await invoker(spec, function_timeout=0.2).invoke({"sleep": 1.0})
    assert time.monotonic() - started < 0.6
    assert isinstance(result, FunctionError)
    assert result.error_type == "Sandbox.Timedout"
    assert result.message == "Task timed out after 0.20 seconds"
    assert result.function_error == "Unhandled"


async def test_an_unserialisable_return_value_is_a_marshal_error() -> None:
    result = await invoker("sync_handlers:returns_set").invoke(EVENT)
    assert isinstance(result, FunctionError)
    assert result.error_type == "Runtime.MarshalError"
    assert "Unable to marshal response" in result.message
    assert "set" in result.message


async def test_a_response_over_6_mb_is_too_large() -> None:
    result = await invoker("sync_handlers:returns_huge").invoke(EVENT)
    assert isinstance(result, FunctionError)
    assert result.error_type == "Function.ResponseSizeTooLarge"
    assert "(6291556 bytes)" in result.message


def test_a_response_of_exactly_6_mb_is_allowed() -> None:
    exactly = "x" * (MAX_RESPONSE_BYTES - 2)  # plus two quotes
    assert isinstance(marshal_response(exactly), Returned)
    assert isinstance(marshal_response(exactly + "x"), FunctionError)


async def test_decimals_and_json_dumps_keys_serialise_as_lambda_does() -> None:
    result = await invoker("sync_handlers:returns_decimals").invoke(EVENT)
    assert result == Returned(
        {"price": 19.99, "count": 3, "7": "int key", "tuple": [1, 2]}, result.duration
    )


@pytest.mark.parametrize(
    ("raw", "payload"),
    [('{"batchItemFailures": []}', {"batchItemFailures": []}), ("not json", b"not json")],
)
async def test_bytes_are_passed_through_as_the_response_body(raw: str, payload: Any) -> None:
    result = await invoker("sync_handlers:returns_bytes").invoke({"raw": raw})
    assert isinstance(result, Returned)
    assert result.payload == payload


# ---------------------------------------------------------------- loading


@pytest.mark.parametrize(
    ("spec", "error_type"),
    [
        ("no_such_module:handler", "Runtime.ImportModuleError"),
        ("broken_import:handler", "Runtime.ImportModuleError"),
        ("sync_handlers:no_such_function", "Runtime.HandlerNotFound"),
    ],
)
async def test_a_handler_that_cannot_load_fails_every_invocation(
    spec: str, error_type: str
) -> None:
    run = invoker(spec)
    for _ in range(2):
        result = await run.invoke(EVENT)
        assert isinstance(result, FunctionError)
        assert result.error_type == error_type


async def test_a_malformed_handler_name_fails_invocations() -> None:
    result = await PythonInvoker("handler", function_name="f").invoke(EVENT)
    assert isinstance(result, FunctionError)
    assert result.error_type == "Runtime.MalformedHandlerName"


async def test_warm_loads_the_handler_and_reports_its_init_duration() -> None:
    run = invoker("sync_handlers:echo")
    assert run.init_duration is None
    assert await run.warm() >= 0
    assert run.init_duration is not None


async def test_warm_raises_when_the_handler_cannot_load() -> None:
    with pytest.raises(HandlerLoadError) as raised:
        await invoker("broken_import:handler").warm()
    assert raised.value.error_type == "Runtime.ImportModuleError"


def test_an_invoker_needs_a_positive_timeout_and_at_least_one_thread() -> None:
    with pytest.raises(ValueError, match="function_timeout"):
        PythonInvoker("app.handler", function_timeout=0)
    with pytest.raises(ValueError, match="max_threads"):
        PythonInvoker("app.handler", max_threads=0)


def test_the_function_name_defaults_to_the_handlers_module() -> None:
    assert PythonInvoker("sluiceway.handlers.examples.orders:handler").function_name == "orders"


# ---------------------------------------------------------------- cancellation


@pytest.mark.parametrize("spec", ["sync_handlers:sleeps", "async_handlers:sleeps"])
async def test_cancelling_an_invocation_propagates(spec: str) -> None:
    run = invoker(spec, function_timeout=5.0)
    outcome: list[Any] = []
    with anyio.move_on_after(0.1) as scope:
        outcome.append(await run.invoke({"sleep": 0.5}))
    assert scope.cancelled_caught
    assert outcome == []


def test_request_ids_are_random_version_4_uuids() -> None:
    import uuid

    from sluiceway.handlers.context import new_request_id

    ids = [new_request_id() for _ in range(2_000)]
    assert len(set(ids)) == len(ids)
    for value in ids:
        parsed = uuid.UUID(value)
        assert str(parsed) == value
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
