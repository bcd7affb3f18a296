"""Tracing: spans for polls, batches, invocations, retries and destination sends.

Configured by the standard OTEL_* variables (see `setup_tracing`). When tracing is off every call
here returns at once without building attributes, so instrumented hot paths stay cheap.

API for instrumenting code:
- `span(name, links=..., kind=..., **attrs)`: a context manager; attribute names use `__` for dots
  (`span("retry", sluiceway__attempt=2)`) or pass `attributes={...}`.
- `links_from_records(records)`: links to each producer's span (`AWSTraceHeader`, `traceparent`).
- `batch_span(records, mapping, kind)`: the per-batch span (a no-op if one is already open).
- `retry_span(attempt, size, reason)`, `destination_span(arn, size, condition)`: around a retry
  and an on-failure destination send.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from router import logs
from router.records import SourceRecord

log = logging.getLogger(__name__)

_TRACER_NAME = "sluiceway"
_NOOP: Span = trace.INVALID_SPAN
_propagator = TraceContextTextMapPropagator()
_in_batch: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "sluiceway_in_batch", default=False
)

MESSAGING_SYSTEM = {"sqs": "aws_sqs", "kinesis": "aws.kinesis", "dynamodb": "aws.dynamodb"}
"""messaging.system per source kind (aws_sqs is the semantic conventions' well-known value)."""
FAAS_TRIGGER = {"sqs": "pubsub", "kinesis": "datasource", "dynamodb": "datasource"}


class _State:
    tracer: trace.Tracer | None = None
    per_record: bool = False
    provider: Any = None


_state = _State()


def enabled() -> bool:
    """True when spans are recorded; callers may skip building attributes otherwise."""
    return _state.tracer is not None


def per_record_spans() -> bool:
    return _state.tracer is not None and _state.per_record


def use_tracer_provider(provider: Any | None, *, per_record: bool = False) -> None:
    """Trace with `provider` (None turns tracing off); tests pass an in-memory one."""
    _state.provider = provider
    _state.tracer = provider.get_tracer(_TRACER_NAME) if provider is not None else None
    _state.per_record = per_record


def _attrs(attributes: Mapping[str, Any] | None, extra: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in (attributes or {}).items() if v is not None}
    for key, value in extra.items():
        if value is not None:
            out[key.replace("__", ".")] = value
    return out


@contextlib.contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    links: Sequence[Link] | None = None,
    attributes: Mapping[str, Any] | None = None,
    **attrs: Any,
) -> Iterator[Span]:
    """A span made current for the body; exceptions are recorded and re-raised."""
    tracer = _state.tracer
    if tracer is None:
        yield _NOOP
        return
    with tracer.start_as_current_span(
        name, kind=kind, links=links, attributes=_attrs(attributes, attrs)
    ) as current:
        yield current


def current_span() -> Span:
    return trace.get_current_span() if _state.tracer is not None else _NOOP


# ---------------------------------------------------------------------- producer context


def xray_to_span_context(header: str) -> SpanContext | None:
    """`Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1` as W3C ids."""
    fields: dict[str, str] = {}
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep:
            fields[key] = value
    root, parent = fields.get("Root", ""), fields.get("Parent", "")
    pieces = root.split("-")
    if len(pieces) != 3 or pieces[0] != "1" or len(parent) != 16:
        return None
    try:
        trace_id = int(pieces[1] + pieces[2], 16)
        span_id = int(parent, 16)
    except ValueError:
        return None
    if not trace_id or not span_id or len(pieces[1] + pieces[2]) != 32:
        return None
    flags = TraceFlags.SAMPLED if fields.get("Sampled") == "1" else TraceFlags.DEFAULT
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))


def traceparent_to_span_context(value: str) -> SpanContext | None:
    ctx = _propagator.extract({"traceparent": value})
    span_context = trace.get_current_span(ctx).get_span_context()
    return span_context if span_context.is_valid else None


def producer_context(event: Mapping[str, Any]) -> SpanContext | None:
    """The producer's span for one Lambda-shaped record, if it carries one."""
    header = (event.get("attributes") or {}).get("AWSTraceHeader")
    if header:
        found = xray_to_span_context(header)
        if found is not None:
            return found
    attribute = (event.get("messageAttributes") or {}).get("traceparent")
    if attribute and attribute.get("stringValue"):
        return traceparent_to_span_context(attribute["stringValue"])
    return None


def links_from_records(records: Sequence[SourceRecord]) -> list[Link]:
    """One link per distinct producer span (empty when tracing is off)."""
    if _state.tracer is None:
        return []
    seen: set[tuple[int, int]] = set()
    links: list[Link] = []
    for record in records:
        found = producer_context(record.event)
        if found is None or (found.trace_id, found.span_id) in seen:
            continue
        seen.add((found.trace_id, found.span_id))
        links.append(Link(found, {"messaging.message.id": record.item_id}))
    return links


def source_name(arn: str) -> str:
    """Queue, stream or table name from an ARN (`stream/clicks`, `table/orders/stream/...`)."""
    name = arn.rsplit(":", 1)[-1]
    return name.split("/")[1] if "/" in name else name


def source_attributes(records: Sequence[SourceRecord], kind: str) -> dict[str, Any]:
    """messaging.* attributes for a batch from its first record."""
    arn = str(records[0].event.get("eventSourceARN", "")) if records else ""
    name = source_name(arn)
    return {
        "messaging.system": MESSAGING_SYSTEM.get(kind, kind),
        "messaging.destination.name": name,
        "messaging.batch.message_count": len(records),
        "faas.trigger": FAAS_TRIGGER.get(kind, "other"),
        "cloud.resource_id": arn or None,
    }


_batch_ids = itertools.count(1)
_BATCH_PREFIX = os.urandom(3).hex()


def new_batch_id() -> str:
    """Unique in the process and cheap (no span needed): logs and spans share it."""
    return f"{_BATCH_PREFIX}-{next(_batch_ids):x}"


@contextlib.contextmanager
def batch_span(records: Sequence[SourceRecord], mapping: str, kind: str) -> Iterator[Span]:
    """The per-batch span, linked to every producer, with mapping and batch_id bound for logs.

    Nested calls (a poller opened it around processing and settling) reuse the open one.
    """
    if _in_batch.get():
        yield current_span()
        return
    batch_id = new_batch_id()
    token = _in_batch.set(True)
    try:
        with logs.bind(mapping=mapping, batch_id=batch_id):
            if _state.tracer is None:
                yield _NOOP
                return
            attributes = source_attributes(records, kind)
            attributes.update(
                {
                    "messaging.operation": "process",
                    "sluiceway.mapping": mapping,
                    "sluiceway.batch_id": batch_id,
                }
            )
            with span(
                f"{attributes['messaging.destination.name']} process",
                kind=SpanKind.CONSUMER,
                links=links_from_records(records),
                attributes=attributes,
            ) as current:
                yield current
    finally:
        _in_batch.reset(token)


@contextlib.contextmanager
def poll_span(source: str, kind: str, operation: str = "receive", **attrs: Any) -> Iterator[Span]:
    """One poll of the source (ReceiveMessage, GetRecords); set the count with `set_count`."""
    if _state.tracer is None:
        yield _NOOP
        return
    with span(
        f"{source} {operation}",
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": MESSAGING_SYSTEM.get(kind, kind),
            "messaging.destination.name": source,
            "messaging.operation": operation,
        },
        **attrs,
    ) as current:
        yield current


def set_count(current: Span, count: int) -> None:
    if current.is_recording():
        current.set_attribute("messaging.batch.message_count", count)


@contextlib.contextmanager
def invocation_span(
    function_name: str, kind: str, records: Sequence[SourceRecord], coldstart: bool
) -> Iterator[Span]:
    """The handler invocation (faas.*); the handler's own spans nest under it, threads included.

    With SLUICEWAY_TRACE_RECORDS=true, one child span per record (linked to its producer) is
    open for the length of the invocation.
    """
    if _state.tracer is None:
        yield _NOOP
        return
    attributes = {
        "faas.name": function_name,
        "faas.trigger": FAAS_TRIGGER.get(kind, "other"),
        "faas.coldstart": coldstart,
        "messaging.batch.message_count": len(records),
    }
    with span(function_name, kind=SpanKind.SERVER, attributes=attributes) as current:
        if not _state.per_record:
            yield current
            return
        tracer = _state.tracer
        per_record = []
        for record in records:
            producer = producer_context(record.event)
            per_record.append(
                tracer.start_span(
                    f"{function_name} record",
                    links=[Link(producer)] if producer else None,
                    attributes={"messaging.message.id": record.item_id},
                )
            )
        try:
            yield current
        finally:
            for child in per_record:
                child.end()


def retry_span(
    attempt: int, size: int, reason: str | None = None
) -> contextlib.AbstractContextManager[Span]:
    """Around one retry of a failed batch (stream retries, bisected halves)."""
    return span(
        "retry",
        sluiceway__attempt=attempt,
        messaging__batch__message_count=size,
        sluiceway__retry_reason=reason,
    )


def destination_span(
    destination_arn: str, size: int, condition: str | None = None
) -> contextlib.AbstractContextManager[Span]:
    """Around one on-failure destination send; the AWS call inside nests under it."""
    kind = destination_arn.split(":")[2] if destination_arn.count(":") >= 2 else "destination"
    return span(
        f"{source_name(destination_arn)} publish",
        kind=SpanKind.PRODUCER,
        messaging__system=MESSAGING_SYSTEM.get(kind, kind),
        messaging__destination__name=source_name(destination_arn),
        messaging__operation="publish",
        messaging__batch__message_count=size,
        sluiceway__condition=condition,
    )


def annotate_invocation(request_id: str) -> None:
    """Called by invokers once the request id exists (the span is the current invocation's)."""
    if _state.tracer is not None:
        trace.get_current_span().set_attribute("faas.invocation_id", request_id)


def annotate_result(current: Span, result: Any) -> None:
    """Mark the invocation span with a function error or an invoke failure."""
    if not current.is_recording():
        return
    error_type = getattr(result, "error_type", None)
    if error_type is not None:
        record_error(current, error_type, getattr(result, "message", ""))
        current.set_attribute("faas.error", getattr(result, "function_error", "Unhandled"))
    elif hasattr(result, "throttled"):
        record_error(current, "Throttled" if result.throttled else "InvokeFailure", result.reason)


def annotate_outcome(outcome: Any, size: int) -> None:
    """Mark the current (batch) span with what the response meant for the batch."""
    current = current_span()
    if not current.is_recording():
        return
    name = type(outcome).__name__
    current.set_attribute("sluiceway.outcome", name)
    failed = getattr(outcome, "failed_ids", None)
    if failed is not None:
        current.set_attribute("sluiceway.failed_count", len(failed))
    elif name == "BatchFailed":
        current.set_attribute("sluiceway.failed_count", size)
        record_error(current, "BatchFailed", getattr(outcome, "reason", ""))


def record_error(current: Span, error_type: str, message: str = "") -> None:
    """Mark a span failed the way the conventions ask (error.type + ERROR status)."""
    if not current.is_recording():
        return
    current.set_attribute("error.type", error_type)
    current.set_status(trace.Status(trace.StatusCode.ERROR, message[:200] or error_type))


# ---------------------------------------------------------------------- AWS calls


def instrument_session(session: Any) -> None:
    """Trace every aiobotocore call made through `session` (CLIENT spans, rpc.* attributes).

    The maintained botocore instrumentation patches the sync client only, and the aiobotocore
    fork pins older aiobotocore, so this hooks botocore's own before/after-call events instead.
    """
    session.register("before-call", _before_call)
    session.register("after-call", _after_call)
    session.register("after-call-error", _after_call_error)


def _before_call(model: Any = None, context: dict[str, Any] | None = None, **_: Any) -> None:
    tracer = _state.tracer
    if tracer is None or context is None or model is None:
        return
    service = model.service_model.service_id.hyphenize()
    attributes = {
        "rpc.system": "aws-api",
        "rpc.service": model.service_model.service_id.replace(" ", ""),
        "rpc.method": model.name,
        "cloud.region": context.get("client_region"),
    }
    context["_sluiceway_span"] = tracer.start_span(
        f"{service}.{model.name}", kind=SpanKind.CLIENT, attributes=_attrs(attributes, {})
    )


def _end(context: dict[str, Any] | None, status: int | None, error: str | None) -> None:
    started: Span | None = (context or {}).pop("_sluiceway_span", None)
    if started is None:
        return
    if status is not None:
        started.set_attribute("http.response.status_code", status)
    if error:
        record_error(started, error)
    started.end()


def _after_call(
    http_response: Any = None, parsed: Any = None, context: Any = None, **_: Any
) -> None:
    status = getattr(http_response, "status_code", None)
    error = None
    if isinstance(parsed, dict):
        error = (parsed.get("Error") or {}).get("Code")
        request_id = (parsed.get("ResponseMetadata") or {}).get("RequestId")
        current = (context or {}).get("_sluiceway_span")
        if current is not None and request_id:
            current.set_attribute("aws.request_id", request_id)
    _end(context, status, error)


def _after_call_error(
    exception: BaseException | None = None, context: Any = None, **_: Any
) -> None:
    _end(context, None, type(exception).__name__ if exception is not None else "error")


# ---------------------------------------------------------------------- configuration


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def setup_tracing(
    environ: Mapping[str, str] | None = None, *, trace_records: bool = False
) -> Any | None:
    """A TracerProvider from OTEL_* variables, installed globally; None when tracing is off.

    On when OTEL_TRACES_EXPORTER names otlp/console, or an OTLP endpoint is set; off with
    OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none. Unlike the SDK's default of otlp, no
    endpoint and no exporter means off, so a plain `sluiceway run` sends nothing anywhere.
    """
    env = os.environ if environ is None else environ
    if _truthy(env.get("OTEL_SDK_DISABLED")):
        return None
    exporters = _exporter_names(env, "TRACES")
    if not exporters:
        return None
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=service_resource(env))
    for name in exporters:
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        elif name == "otlp":
            provider.add_span_processor(BatchSpanProcessor(_otlp_span_exporter(env)))
        else:
            log.warning("OTEL_TRACES_EXPORTER=%s is not supported (otlp, console, none)", name)
    trace.set_tracer_provider(provider)
    use_tracer_provider(provider, per_record=trace_records)
    return provider


def service_resource(env: Mapping[str, str]) -> Any:
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource

    name = env.get("OTEL_SERVICE_NAME") or "sluiceway"
    base = Resource.create({"service.name": name})
    return base.merge(OTELResourceDetector().detect()).merge(Resource({"service.name": name}))


def _exporter_names(env: Mapping[str, str], signal: str) -> list[str]:
    raw = env.get(f"OTEL_{signal}_EXPORTER")
    if raw is None:
        has_endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(
            f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"
        )
        return ["otlp"] if has_endpoint else []
    names = [n.strip().lower() for n in raw.split(",") if n.strip()]
    return [n for n in names if n != "none"]


def otlp_protocol(env: Mapping[str, str], signal: str) -> str:
    return (
        env.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()


def _otlp_span_exporter(env: Mapping[str, str]) -> Any:
    """The OTLP exporters read their endpoint, headers and timeouts from OTEL_* themselves."""
    if otlp_protocol(env, "TRACES") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter()


def shutdown() -> None:
    """Flush spans still buffered (called after the event loop ends, so blocking is fine)."""
    provider = _state.provider
    use_tracer_provider(None)
    if provider is not None and hasattr(provider, "shutdown"):
        provider.shutdown()
