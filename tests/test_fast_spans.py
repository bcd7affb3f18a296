"""The batch span's fast path (`core.fast_spans`) exports what the SDK's `Tracer.start_span`
would: the same name, kind, parent, attributes, links, events, status, limits and sampling,
through the same span processors. Each case is run both ways on one provider and compared."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from sluiceway.core import telemetry
from sluiceway.core.fast_spans import FastSpan, FastSpanFactory, sdk_tracer
from sluiceway.router import tracing
from sluiceway.router.records import SourceRecord

Scenario = Callable[[trace.Span], None]

ATTRIBUTES: dict[str, Any] = {
    "messaging.system": "aws_sqs",
    "messaging.destination.name": "orders",
    "messaging.batch.message_count": 3,
    "faas.coldstart": False,
    "sluiceway.ratio": 0.5,
}
LINKED = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
LINKS = [
    Link(LINKED, {"messaging.operation.type": "receive", "messaging.batch.message_count": 2}),
    Link(trace.INVALID_SPAN_CONTEXT),  # invalid, no attributes: dropped by both
    Link(trace.INVALID_SPAN_CONTEXT, {"kept": "for its attributes"}),
]


class _Unprintable:
    def __repr__(self) -> str:
        return "<unprintable>"


def _everything(span: trace.Span) -> None:
    """What the router and a handler may do to the current span."""
    span.set_attribute("sluiceway.outcome", "BatchSucceeded")
    span.set_attributes({"faas.invocation_id": "req-1", "sluiceway.failed_count": 0})
    span.set_attribute("list", [1, 2, 3])
    span.set_attribute("mixed", ["a", 1])
    span.set_attribute("object", _Unprintable())
    span.set_attribute("", "empty key")
    span.set_attribute("messaging.destination.name", "orders-again")  # moves to the end
    span.add_event(
        "checkpoint", {"position": "49590338271490256608559692538361571095921575989136588898"}
    )
    try:
        raise ValueError("boom")
    except ValueError as e:
        span.record_exception(e, {"extra": True})
    span.set_status(Status(StatusCode.ERROR, "first"))
    span.set_status(StatusCode.UNSET)  # ignored
    span.add_link(LINKED, {"late": 1})
    span.update_name("orders process (renamed)")


def _ok_is_final(span: trace.Span) -> None:
    span.set_status(StatusCode.OK)
    span.set_status(StatusCode.ERROR, "after OK: ignored")


def _nothing(span: trace.Span) -> None:
    return None


def _exported(
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    scenario: Scenario,
    *,
    fast: bool,
) -> list[ReadableSpan]:
    exporter.clear()
    tracer = provider.get_tracer("sluiceway")
    if fast:
        sdk = sdk_tracer(tracer)
        assert sdk is not None
        span = FastSpanFactory(sdk).start(
            "orders process", kind=SpanKind.CONSUMER, attributes=dict(ATTRIBUTES), links=LINKS
        )
    else:
        span = tracer.start_span(
            "orders process", kind=SpanKind.CONSUMER, attributes=dict(ATTRIBUTES), links=LINKS
        )
    scenario(span)
    span.end()
    span.end()  # a second end is ignored by both
    span.set_attribute("after", "end")  # ignored by both
    return list(exporter.get_finished_spans())


def _shape(span: ReadableSpan) -> dict[str, Any]:
    """Everything an exporter reads, except ids and times."""
    return {
        "name": span.name,
        "kind": span.kind,
        "parent": span.parent,
        "attributes": list(dict(span.attributes or {}).items()),
        "dropped_attributes": span.dropped_attributes,
        "links": [(link.context, dict(link.attributes or {})) for link in span.links],
        "dropped_links": span.dropped_links,
        "events": [(event.name, dict(event.attributes or {})) for event in span.events],
        "dropped_events": span.dropped_events,
        "status": (span.status.status_code, span.status.description),
        "resource": span.resource.attributes,
        "scope": span.instrumentation_scope,
        "flags": span.context.trace_flags if span.context else None,
        "trace_state": span.context.trace_state if span.context else None,
    }


def _provider(**kwargs: Any) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(**kwargs)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.mark.parametrize("scenario", [_everything, _ok_is_final, _nothing])
def test_exports_what_the_sdk_exports(scenario: Scenario) -> None:
    provider, exporter = _provider()
    sdk = _exported(provider, exporter, scenario, fast=False)
    fast = _exported(provider, exporter, scenario, fast=True)
    assert len(sdk) == len(fast) == 1
    assert _shape(fast[0]) == _shape(sdk[0])
    assert fast[0].start_time is not None and fast[0].end_time is not None
    assert fast[0].start_time <= fast[0].end_time


def test_span_limits_from_the_environment_apply_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "4")
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "3")
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "5")
    monkeypatch.setenv("OTEL_SPAN_EVENT_COUNT_LIMIT", "1")
    monkeypatch.setenv("OTEL_SPAN_LINK_COUNT_LIMIT", "1")
    monkeypatch.setenv("OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", "2")
    monkeypatch.setenv("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", "1")

    def scenario(span: trace.Span) -> None:
        span.set_attribute("long", "abcdefgh")
        span.add_event("first", {"a": "123456789", "b": 2, "c": 3})
        span.add_event("second", {"a": "x"})

    provider, exporter = _provider()
    sdk = _exported(provider, exporter, scenario, fast=False)
    fast = _exported(provider, exporter, scenario, fast=True)
    assert _shape(fast[0]) == _shape(sdk[0])
    shape = _shape(fast[0])
    assert shape["attributes"][-1] == ("long", "abc") and len(shape["attributes"]) == 4
    assert shape["dropped_events"] == 1 and shape["dropped_links"] == 1


def test_unsampled_spans_record_nothing_alike() -> None:
    provider, exporter = _provider(sampler=ALWAYS_OFF)
    for fast in (False, True):
        assert _exported(provider, exporter, _everything, fast=fast) == []
    factory = FastSpanFactory(sdk_tracer(provider.get_tracer("sluiceway")))  # type: ignore[arg-type]
    span = factory.start("x", kind=SpanKind.CONSUMER, attributes={})
    assert not span.is_recording() and not isinstance(span, FastSpan)
    assert span.get_span_context().is_valid  # ids are still drawn, as the SDK draws them


@pytest.mark.parametrize("sampled", [True, False])
def test_a_remote_parent_is_followed_alike(sampled: bool) -> None:
    parent = SpanContext(
        0x1234,
        0x5678,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
    )
    provider, exporter = _provider(sampler=ParentBased(TraceIdRatioBased(0.0)))
    token = otel_context.attach(trace.set_span_in_context(trace.NonRecordingSpan(parent)))
    try:
        sdk = _exported(provider, exporter, _nothing, fast=False)
        fast = _exported(provider, exporter, _nothing, fast=True)
    finally:
        otel_context.detach(token)
    assert len(sdk) == len(fast) == (1 if sampled else 0)
    if sampled:
        assert _shape(fast[0]) == _shape(sdk[0])
        assert fast[0].context.trace_id == 0x1234 and fast[0].parent == parent


def test_span_processors_see_the_start_and_may_add_attributes() -> None:
    started: list[str] = []

    class Stamping(SpanProcessor):
        def on_start(self, span: Any, parent_context: otel_context.Context | None = None) -> None:
            started.append(type(span).__name__)
            span.set_attribute("stamped.by", "processor")

    provider, exporter = _provider()
    provider.add_span_processor(Stamping())
    sdk = _exported(provider, exporter, _nothing, fast=False)
    fast = _exported(provider, exporter, _nothing, fast=True)
    assert _shape(fast[0]) == _shape(sdk[0])
    assert dict(fast[0].attributes or {})["stamped.by"] == "processor"
    assert started == ["_Span", "FastSpan"]


@pytest.fixture
def traced() -> Iterator[InMemorySpanExporter]:
    provider, exporter = _provider()
    telemetry.use_tracer_provider(provider)
    try:
        yield exporter
    finally:
        telemetry.use_tracer_provider(None)


def test_batch_spans_take_the_fast_path_and_handler_spans_nest_in_them(
    traced: InMemorySpanExporter,
) -> None:
    records = [
        SourceRecord(
            event={"eventSourceARN": "arn:aws:sqs:us-east-1:1:orders"}, item_id="m1", size=1
        )
    ]
    assert telemetry.fast_spans() is not None
    with tracing.batch_span(records, "orders-mapping", "sqs", "orders") as current:
        assert isinstance(current, FastSpan)
        assert trace.get_current_span() is current
        tracer = telemetry.tracer()
        assert tracer is not None
        with tracer.start_as_current_span("handler work"):
            pass
    child, batch = traced.get_finished_spans()
    assert child.parent is not None and batch.context is not None
    assert child.parent.span_id == batch.context.span_id
    assert batch.name == "orders process" and batch.kind is SpanKind.CONSUMER
    assert dict(batch.attributes or {})["faas.name"] == "orders"


def test_an_exception_leaving_the_batch_span_is_recorded_as_use_span_does(
    traced: InMemorySpanExporter,
) -> None:
    records = [SourceRecord(event={}, item_id="m1", size=1)]
    with pytest.raises(RuntimeError), tracing.batch_span(records, "m", "sqs", "f"):
        raise RuntimeError("settling failed")
    (batch,) = traced.get_finished_spans()
    assert batch.status.status_code is StatusCode.ERROR
    assert batch.status.description == "RuntimeError: settling failed"
    assert [event.name for event in batch.events] == ["exception"]
    assert trace.get_current_span() is trace.INVALID_SPAN  # the context was restored


def test_other_tracers_are_used_as_they_are() -> None:
    telemetry.use_tracer_provider(trace.NoOpTracerProvider())
    try:
        assert telemetry.fast_spans() is None
        records = [SourceRecord(event={}, item_id="m1", size=1)]
        with tracing.batch_span(records, "m", "sqs", "f") as current:
            assert not current.is_recording()
    finally:
        telemetry.use_tracer_provider(None)
