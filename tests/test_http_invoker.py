"""HTTP targets: a real server speaking the Runtime Interface Emulator's invocation protocol."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sluiceway.core import telemetry
from sluiceway.core.stats import Registry
from sluiceway.handlers.http_target import (
    RIE_PATH,
    HttpInvoker,
    invocation_url,
    read_function_answer,
)
from sluiceway.handlers.results import FunctionError, InvokeFailure, Returned
from sluiceway.pollers.sqs_records import to_source_record
from sluiceway.router.outcomes import PartialFailure
from sluiceway.router.response import interpret
from sluiceway.router.runner import BatchOrigin, BatchRunner, FailureHandling, Settlement

from tests.support.rie import running_rie

pytestmark = pytest.mark.anyio

RECORDS = [{"messageId": "m1"}, {"messageId": "m2"}]


def test_a_bare_host_gets_the_rie_invocation_path() -> None:
    assert invocation_url("http://orders:8080") == f"http://orders:8080{RIE_PATH}"
    assert invocation_url("http://orders:8080/") == f"http://orders:8080{RIE_PATH}"
    assert invocation_url("https://fn.example.com/invoke") == "https://fn.example.com/invoke"


async def test_success_returns_the_function_value_and_the_request_is_the_event() -> None:
    async with running_rie() as rie:
        invoker = HttpInvoker(rie.url)
        try:
            result = await invoker.invoke({"Records": RECORDS})
        finally:
            await invoker.aclose()
    assert isinstance(result, Returned)
    assert result.payload["records"] == 2
    assert rie.requests == [{"Records": RECORDS}]
    assert rie.headers[0]["Content-Type"] == "application/json"


async def test_a_partial_batch_response_is_honoured() -> None:
    async with running_rie() as rie:
        invoker = HttpInvoker(rie.url)
        try:
            result = await invoker.invoke({"Records": RECORDS, "behaviour": "partial"})
        finally:
            await invoker.aclose()
    assert interpret(result, ["m1", "m2"], True) == PartialFailure(("m2",))


@pytest.mark.parametrize(
    ("behaviour", "error_type"),
    [
        ("error", "ValueError"),
        ("rie_timeout", "Sandbox.Timedout"),
        ("exit", "Runtime.ExitError"),
    ],
)
async def test_function_errors_the_rie_reports_with_200_are_function_errors(
    behaviour: str, error_type: str
) -> None:
    async with running_rie() as rie:
        invoker = HttpInvoker(rie.url)
        try:
            result = await invoker.invoke({"Records": RECORDS, "behaviour": behaviour})
        finally:
            await invoker.aclose()
    assert isinstance(result, FunctionError)
    assert result.error_type == error_type
    if behaviour == "error":
        assert result.message == "order 7 has no customer"
        assert result.stack_trace == ('  File "/var/task/app.py", line 3, in handler\n',)


async def test_5xx_is_an_invoke_failure_and_429_a_throttle() -> None:
    async with running_rie() as rie:
        invoker = HttpInvoker(rie.url)
        try:
            server_error = await invoker.invoke({"behaviour": "5xx"})
            throttle = await invoker.invoke({"behaviour": "429"})
        finally:
            await invoker.aclose()
    assert isinstance(server_error, InvokeFailure) and not server_error.throttled
    assert "502" in server_error.reason
    assert throttle == InvokeFailure(throttle.reason, throttled=True)
    assert interpret(throttle, [], True).reached_handler is False


async def test_a_slow_target_is_an_invoke_failure_after_the_timeout() -> None:
    async with running_rie() as rie:
        invoker = HttpInvoker(rie.url, function_timeout=0.2)
        started = time.monotonic()
        try:
            result = await invoker.invoke({"behaviour": "slow", "seconds": 5})
            elapsed = time.monotonic() - started
        finally:
            await invoker.aclose()
    assert isinstance(result, InvokeFailure) and not result.throttled
    assert elapsed < 4  # the function timeout plus the transport grace


async def test_connection_refused_is_an_invoke_failure() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    invoker = HttpInvoker(f"http://127.0.0.1:{port}")
    try:
        result = await invoker.invoke({"Records": RECORDS})
    finally:
        await invoker.aclose()
    assert isinstance(result, InvokeFailure)
    assert not result.throttled


async def test_one_pooled_connection_serves_many_invocations() -> None:
    async with running_rie() as rie:
        invoker = HttpInvoker(rie.url)
        try:
            for _ in range(20):
                assert isinstance(await invoker.invoke({"Records": RECORDS}), Returned)
            session = invoker._session
            assert session is not None
            assert len(session.connector._conns) == 1  # type: ignore[union-attr]
        finally:
            await invoker.aclose()


def test_a_value_shaped_unlike_an_error_document_is_a_value() -> None:
    result = read_function_answer(b'{"errorType": "x", "errorMessage": "y", "orderId": 1}', 0.0)
    assert isinstance(result, Returned)
    assert read_function_answer(b"null", 0.0) == Returned(None, 0.0)


async def test_https_verifies_certificates_by_default() -> None:
    invoker = HttpInvoker("https://127.0.0.1:1/")
    session = invoker._client()
    try:
        assert session.connector._ssl.verify_mode.name == "CERT_REQUIRED"  # type: ignore[union-attr]
    finally:
        await invoker.aclose()


# ---------------------------------------------------------------- sluiceway check


def _mapping(handler: str) -> Any:
    from sluiceway.config import load_settings

    env = {
        "AWS_REGION": "us-east-1",
        "SLUICEWAY_MAPPINGS__ORDERS__SOURCE": "arn:aws:sqs:us-east-1:000000000000:orders",
        "SLUICEWAY_MAPPINGS__ORDERS__HANDLER": handler,
    }
    return load_settings(env).mappings["orders"]


async def test_check_reaches_an_http_target_without_invoking_it() -> None:
    from sluiceway.app.target_checks import reach_http

    async with running_rie() as rie:
        ok, detail = await reach_http(_mapping(rie.url))
    assert ok, detail
    assert rie.requests == []  # a GET, never an invocation


async def test_check_reports_an_unreachable_http_target() -> None:
    from sluiceway.app.target_checks import reach_http

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ok, detail = await reach_http(_mapping(f"http://127.0.0.1:{port}"))
    assert not ok and "Connect" in detail


async def test_the_targets_request_id_is_the_batch_spans_invocation_id_and_the_settlements() -> (
    None
):
    queue_arn = "arn:aws:sqs:us-east-1:000000000000:orders"
    message = {"MessageId": "m1", "ReceiptHandle": "h1", "Body": "{}", "Attributes": {}}
    record = to_source_record(message, queue_arn=queue_arn, region="us-east-1", fifo=False)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.use_tracer_provider(provider)
    settled: list[Settlement] = []

    async def settle(settlement: Settlement) -> None:
        settled.append(settlement)

    try:
        async with running_rie(request_ids=True) as rie:
            invoker = HttpInvoker(rie.url)
            runner = BatchRunner(
                invoker=invoker,
                stats=Registry().add("orders", "sqs"),
                failures=FailureHandling(retry_in_place=False),
            )
            try:
                await runner.run([record], settle, BatchOrigin(queue_arn))
            finally:
                await invoker.aclose()
    finally:
        telemetry.use_tracer_provider(None)
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "orders process"]
    assert settled[0].request_id == "rie-1"
    assert (span.attributes or {})["faas.invocation_id"] == "rie-1"
