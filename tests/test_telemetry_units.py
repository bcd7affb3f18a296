"""Producer context parsing, JSON log fields and redaction, and tracing that is off costing nothing."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import INVALID_SPAN
from sluiceway.core import logs, telemetry
from sluiceway.router import tracing
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
