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
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sluiceway.core.secrets import known_secrets

log = logging.getLogger(__name__)

_TRACER_NAME = "sluiceway"
NOOP_SPAN: Span = trace.INVALID_SPAN
_propagator = TraceContextTextMapPropagator()

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


def tracer() -> trace.Tracer | None:
    """The active tracer, None when tracing is off."""
    return _state.tracer


def per_record() -> bool:
    """SLUICEWAY_TRACE_RECORDS: one span per record inside each invocation."""
    return _state.per_record


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
        yield NOOP_SPAN
        return
    with tracer.start_as_current_span(
        name, kind=kind, links=links, attributes=_attrs(attributes, attrs)
    ) as current:
        yield current


def current_span() -> Span:
    return trace.get_current_span() if _state.tracer is not None else NOOP_SPAN


# ---------------------------------------------------------------------- spans every layer opens


def source_name(arn: str) -> str:
    """Queue, stream or table name from an ARN (`stream/clicks`, `table/orders/stream/...`)."""
    name = arn.rsplit(":", 1)[-1]
    return name.split("/")[1] if "/" in name else name


@contextlib.contextmanager
def poll_span(source: str, kind: str, operation: str = "receive", **attrs: Any) -> Iterator[Span]:
    """One poll of the source (ReceiveMessage, GetRecords); set the count with `set_count`."""
    if _state.tracer is None:
        yield NOOP_SPAN
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


def record_error(current: Span, error_type: str, message: str = "") -> None:
    """Mark a span failed the way the conventions ask (error.type + ERROR status)."""
    if not current.is_recording():
        return
    current.set_attribute("error.type", error_type)
    text = known_secrets.mask(message)[:200]  # masked first: a cut never shows half a secret
    current.set_status(trace.Status(trace.StatusCode.ERROR, text or error_type))


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
