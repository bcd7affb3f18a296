"""Producer context parsing, JSON log fields and redaction, and tracing that is off costing nothing."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import INVALID_SPAN, SpanKind
from sluiceway.core import logs, telemetry
from sluiceway.handlers.results import FunctionError, InvokeFailure
from sluiceway.router import tracing
from sluiceway.router.outcomes import BatchFailed
from sluiceway.router.records import SourceRecord


def record(
    attributes: dict[str, str] | None = None, traceparent: str | None = None
) -> SourceRecord:
    message_attributes = {}
    if traceparent:
        message_attributes["traceparent"] = {"stringValue": traceparent, "dataType": "String"}
    event = {"attributes": attributes or {}, "messageAttributes": message_attributes}
    return SourceRecord(event=event, item_id="m1", size=1)


def test_xray_header_becomes_w3c_ids() -> None:
    found = tracing.xray_to_span_context(
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    )
    assert found is not None
    assert format(found.trace_id, "032x") == "5759e988bd862e3fe1be46a994272793"
    assert format(found.span_id, "016x") == "53995c3f42cd8ad8"
    assert found.trace_flags.sampled and found.is_remote


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Root=1-5759e988-bd86;Parent=53995c3f42cd8ad8",
        "Root=1-5759e988-bd862e3fe1be46a994272793",
        "Root=2-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8",
        "garbage",
    ],
)
def test_malformed_xray_headers_are_ignored(header: str) -> None:
    assert tracing.xray_to_span_context(header) is None


def test_links_prefer_aws_trace_header_then_traceparent_and_deduplicate() -> None:
    provider = TracerProvider()
    telemetry.use_tracer_provider(provider)
    try:
        tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        records = [
            record(traceparent=tp),
            record(traceparent=tp),
            record(),
            record(traceparent="junk"),
        ]
        links = tracing.links_from_records(records)
        assert [format(link.context.trace_id, "032x") for link in links] == [
            "0af7651916cd43dd8448eb211c80319c"
        ]
    finally:
        telemetry.use_tracer_provider(None)


def test_tracing_off_builds_nothing() -> None:
    telemetry.use_tracer_provider(None)
    records = [record(traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]
    assert tracing.links_from_records(records) == []
    with tracing.batch_span(records, "m", "sqs") as batch, telemetry.span("x", a=1) as inner:
        assert batch is INVALID_SPAN and inner is INVALID_SPAN


def test_setup_tracing_is_off_without_exporter_or_when_disabled() -> None:
    assert telemetry.setup_tracing({}) is None
    assert telemetry.setup_tracing({"OTEL_TRACES_EXPORTER": "none"}) is None
    disabled = {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"}
    assert telemetry.setup_tracing(disabled) is None
    assert not telemetry.enabled()


def _format(message: str, **extra: object) -> dict[str, object]:
    entry = logging.LogRecord("sluiceway", logging.INFO, __file__, 1, message, None, None)
    entry.__dict__.update(extra)
    return json.loads(logs.JsonFormatter().format(entry))


def test_json_lines_carry_trace_ids_and_bound_fields() -> None:
    provider = TracerProvider()
    telemetry.use_tracer_provider(provider)
    try:
        with logs.bind(mapping="orders", shard="shardId-0"), telemetry.span("work") as current:
            line = _format("hello")
        ids = current.get_span_context()
        assert line["trace_id"] == format(ids.trace_id, "032x")
        assert line["span_id"] == format(ids.span_id, "016x")
        assert line["mapping"] == "orders" and line["shard"] == "shardId-0"
    finally:
        telemetry.use_tracer_provider(None)
    assert "trace_id" not in _format("outside any span")


def test_secrets_handles_and_bodies_never_reach_a_line() -> None:
    handle = "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a" * 4
    line = _format(
        "using AKIAIOSFODNN7EXAMPLE with aws_secret_access_key=wJalrXUtnFEMI/K7MDENG",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG",
        receipt_handle=handle,
        body='{"card": "4111"}',
    )
    text = json.dumps(line)
    assert "AKIAIOSFODNN7EXAMPLE" not in text and "wJalrXUtnFEMI" not in text
    assert handle not in text and line["receipt_handle"].startswith(handle[:8])
    assert line["body"] == logs.REDACTED
    logs.options.log_bodies = True
    try:
        assert _format("x", body="visible")["body"] == "visible"
    finally:
        logs.options.log_bodies = False


def test_retry_and_destination_spans_for_the_failure_path() -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.use_tracer_provider(provider)
    try:
        with (
            tracing.retry_span(2, 5, "FunctionError"),
            telemetry.destination_span("arn:aws:sqs:us-east-1:1:failures", 5, "x"),
        ):
            pass
    finally:
        telemetry.use_tracer_provider(None)
    send, retry = exporter.get_finished_spans()
    assert retry.name == "retry" and (retry.attributes or {})["sluiceway.attempt"] == 2
    assert send.name == "failures publish" and send.kind == SpanKind.PRODUCER
    assert (send.attributes or {})["messaging.system"] == "aws_sqs"
    assert send.parent is not None and send.parent.span_id == retry.context.span_id


def test_otlp_protocol_picks_the_exporter() -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    assert isinstance(telemetry._otlp_span_exporter({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}), Grpc)
    assert isinstance(telemetry._otlp_span_exporter({}), Http)


# ---------------------------------------------------------------- polls, errors, links


@contextlib.contextmanager
def exported(sampler: Any = None) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider() if sampler is None else TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.use_tracer_provider(provider)
    try:
        yield exporter
    finally:
        telemetry.use_tracer_provider(None)


PRODUCER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_poll_is_traced_only_when_it_returned_records() -> None:
    with exported() as exporter:
        with telemetry.poll_span("orders", "sqs") as empty:
            assert empty is not None
            assert empty.returned(0) is None
        assert exporter.get_finished_spans() == ()
        records = [record(traceparent=PRODUCER), record()]
        with telemetry.poll_span("orders", "sqs") as poll:
            tracing.received(poll, records)
        (receive,) = exporter.get_finished_spans()
    assert receive.name == "orders receive" and receive.kind == SpanKind.CONSUMER
    assert (receive.attributes or {})["messaging.batch.message_count"] == 2
    assert [format(link.context.trace_id, "032x") for link in receive.links] == [PRODUCER[3:35]]
    assert all(r.receive == receive.context for r in records)


def test_a_failed_poll_is_traced_and_a_cancelled_one_is_not() -> None:
    with exported() as exporter:
        with pytest.raises(RuntimeError), telemetry.poll_span("clicks", "kinesis", "GetRecords"):
            raise RuntimeError("ExpiredIteratorException")
        (failed,) = exporter.get_finished_spans()
        assert (failed.attributes or {})["error.type"] == "RuntimeError"

        async def cancelled() -> None:
            with anyio.move_on_after(0.01), telemetry.poll_span("orders", "sqs"):
                await anyio.sleep(1)

        anyio.run(cancelled)
        with telemetry.upkeep_span("list shards"):
            pass
        assert len(exporter.get_finished_spans()) == 1


def test_a_sampled_out_poll_exports_nothing_and_links_nothing() -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    with exported(ALWAYS_OFF) as exporter:
        records = [record()]
        with telemetry.poll_span("orders", "sqs") as poll:
            tracing.received(poll, records)
        assert exporter.get_finished_spans() == ()
        assert records[0].receive is None
        assert tracing.receive_links(records) == []


def test_process_links_count_the_records_of_each_receive() -> None:
    with exported():
        first, second = [record(), record()], [record()]
        for batch in (first, second):
            with telemetry.poll_span("orders", "sqs") as poll:
                tracing.received(poll, batch)
        links = tracing.receive_links([*first, *second])
    assert [(link.attributes or {})["messaging.batch.message_count"] for link in links] == [2, 1]
    assert {(link.attributes or {})["messaging.operation.type"] for link in links} == {"receive"}


def test_the_exception_event_is_masked_like_log_lines() -> None:
    stack = ('  File "/var/task/app.py", line 3, in handler\n    sign("AKIAIOSFODNN7EXAMPLE")\n',)
    with exported() as exporter:
        with telemetry.span("invoke") as current:
            telemetry.record_exception(current, "ValueError", "aws_session_token=abc123", stack)
            telemetry.record_exception(current, "Error", "node", ("    at handler (index.mjs:3)",))
        (invoke,) = exporter.get_finished_spans()
    python, node = (event.attributes or {} for event in invoke.events)
    assert python["exception.message"] == "aws_session_token=[redacted]"
    assert python["exception.stacktrace"] == (
        "Traceback (most recent call last):\n"
        '  File "/var/task/app.py", line 3, in handler\n    sign("[redacted]")\n'
        "ValueError: aws_session_token=[redacted]"
    )
    assert node["exception.stacktrace"] == "    at handler (index.mjs:3)\nError: node"


@pytest.mark.parametrize(
    ("outcome", "error_type"),
    [
        (BatchFailed("x", FunctionError("Sandbox.Timedout", "Task timed out")), "Sandbox.Timedout"),
        (BatchFailed("x", FunctionError("KeyError", "'id'")), "KeyError"),
        (BatchFailed("x", InvokeFailure("429", throttled=True)), "Throttled"),
        (BatchFailed("x", InvokeFailure("connection refused")), "InvokeFailure"),
        (BatchFailed("invalid partial batch response: ..."), "InvalidResponse"),
    ],
)
def test_a_failed_batch_carries_the_functions_error_type(
    outcome: BatchFailed, error_type: str
) -> None:
    with exported() as exporter:
        with telemetry.span("batch") as current:
            tracing.annotate_outcome(current, outcome, 3)
        (batch,) = exporter.get_finished_spans()
    attributes = batch.attributes or {}
    assert attributes["error.type"] == error_type
    assert attributes["sluiceway.outcome"] == "BatchFailed"
