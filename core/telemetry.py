"""Tracing: spans for polls, batches, invocations, retries and destination sends.

Configured by the standard OTEL_* variables (see `setup_tracing`). When tracing is off every call
here returns at once without building attributes, so instrumented hot paths stay cheap.

API for instrumenting code:
- `span(name, links=..., kind=..., **attrs)`: a context manager; attribute names use `__` for dots
  (`span("retry", sluiceway__attempt=2)`) or pass `attributes={...}`.
- `links_from_records(records)`: links to each producer's span (`AWSTraceHeader`, `traceparent`).
- `batch_span(records, mapping, kind)`: the per-batch span (a no-op if one is already open).
- `poll_span(source, kind)`: one poll, traced only if it returned records (`PollTrace`);
  `upkeep_span(name)`: routine AWS calls (shard listing, leases), traced only when one failed.
- `retry_span(attempt, size, reason)`, `destination_span(arn, size, condition)`: around a retry
  and an on-failure destination send.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanContext, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sluiceway.core.logs import redact_text

if TYPE_CHECKING:
    from sluiceway.core.fast_spans import FastSpanFactory

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
    fast: FastSpanFactory | None = None


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
    _state.fast = None
    if _state.tracer is not None:
        from sluiceway.core.fast_spans import FastSpanFactory, sdk_tracer

        sdk = sdk_tracer(_state.tracer)
        if sdk is not None:
            _state.fast = FastSpanFactory(sdk)


def fast_spans() -> FastSpanFactory | None:
    """The per-batch path's span factory (`core.fast_spans`), when the tracer is the SDK's."""
    return _state.fast


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


class PollTrace:
    """One poll of a source (ReceiveMessage, GetRecords) whose spans are made only once it is over,
    and only when it returned records or one of its AWS calls failed: an empty poll, or one a
    graceful stop cancelled, leaves no trace (the empty-poll counter reports it). The receive span
    and its AWS calls' CLIENT spans keep the times they really started and ended.
    """

    MAX_CALLS = 16
    """AWS calls kept per poll (a poll retrying a broken endpoint keeps its latest attempts)."""

    def __init__(
        self, name: str, attributes: dict[str, Any], kind: SpanKind = SpanKind.CONSUMER
    ) -> None:
        self.name = name
        self.attributes = attributes
        self.kind = kind
        self.start = time.time_ns()
        self.parent = otel_context.get_current()
        self.calls: deque[_Call] = deque(maxlen=self.MAX_CALLS)
        self.count: int | None = None
        self.done = False
        self.span_context: SpanContext | None = None
        """The receive span's, once made (None while the poll leaves no trace)."""

    def returned(self, count: int, links: Sequence[Link] = ()) -> SpanContext | None:
        """The poll returned `count` records (`links` point at their producers' spans); with
        records, its spans are made now. Returns the receive span's context, for the batches
        that process these records to link to (None when the poll leaves no trace)."""
        self.count = count
        if count:
            self._emit(links, None)
        return self.span_context

    def finish(self, error: BaseException | None) -> None:
        """The poll is over: a poll without records leaves a trace only if something failed."""
        if self.done:
            return
        if error is not None or any(call.error for call in self.calls):
            self._emit((), error)

    def _emit(self, links: Sequence[Link], error: BaseException | None) -> None:
        self.done = True
        tracer = _state.tracer
        if tracer is None:
            return
        attributes = dict(self.attributes)
        if self.count is not None:
            attributes["messaging.batch.message_count"] = self.count
        receive = tracer.start_span(
            self.name,
            context=self.parent,
            kind=self.kind,
            attributes=attributes,
            links=links,
            start_time=self.start,
        )
        inside = trace.set_span_in_context(receive)
        for call in self.calls:
            call.emit(tracer, inside)
        if error is not None:
            record_error(receive, type(error).__name__, str(error))
        if receive.is_recording():  # not when sampled out: nothing to link to then
            self.span_context = receive.get_span_context()
        receive.end()


class _Call:
    """An AWS call made during a poll, kept until the poll knows whether it leaves a trace."""

    __slots__ = ("attributes", "end", "error", "name", "start", "status")

    def __init__(self, name: str, attributes: dict[str, Any]) -> None:
        self.name = name
        self.attributes = attributes
        self.start = time.time_ns()
        self.end: int | None = None
        self.status: int | None = None
        self.error: str | None = None

    def emit(self, tracer: trace.Tracer, parent: otel_context.Context) -> None:
        span = tracer.start_span(
            self.name,
            context=parent,
            kind=SpanKind.CLIENT,
            attributes=self.attributes,
            start_time=self.start,
        )
        _close(span, self.status, self.error, end_time=self.end)


_poll: contextvars.ContextVar[PollTrace | None] = contextvars.ContextVar(
    "sluiceway_poll", default=None
)


@contextlib.contextmanager
def poll_span(
    source: str, kind: str, operation: str = "receive", **attrs: Any
) -> Iterator[PollTrace | None]:
    """One poll of the source; call `returned(count, links)` on what it yields (None when
    tracing is off) once the records are read. AWS calls made inside are kept with it."""
    if _state.tracer is None:
        yield None
        return
    attributes = {
        "messaging.system": MESSAGING_SYSTEM.get(kind, kind),
        "messaging.destination.name": source,
        "messaging.operation": operation,
    }
    with _collecting(PollTrace(f"{source} {operation}", _attrs(attributes, attrs))) as poll:
        yield poll


@contextlib.contextmanager
def upkeep_span(name: str, **attrs: Any) -> Iterator[None]:
    """Routine upkeep that repeats while a mapping is idle (re-listing shards, renewing and
    syncing leases): traced, under one span named `name`, only when one of its AWS calls failed.

    Start no task inside: tasks inherit the context, and their AWS calls would be kept here.
    """
    if _state.tracer is None:
        yield
        return
    with _collecting(PollTrace(name, _attrs({}, attrs), SpanKind.INTERNAL)):
        yield


@contextlib.contextmanager
def _collecting(poll: PollTrace) -> Iterator[PollTrace]:
    """AWS calls made in the body are kept with `poll` instead of traced on their own."""
    token = _poll.set(poll)
    error: BaseException | None = None
    try:
        yield poll
    except Exception as exc:
        error = exc
        raise
    finally:
        _poll.reset(token)
        poll.finish(error)  # a cancelled poll (BaseException) returned nothing: no trace


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


def record_error(current: Span, error_type: str, message: str = "") -> None:
    """Mark a span failed the way the conventions ask (error.type + ERROR status)."""
    if not current.is_recording():
        return
    current.set_attribute("error.type", error_type)
    text = redact_text(message)[:200]  # masked first: a cut never shows half a secret
    current.set_status(trace.Status(trace.StatusCode.ERROR, text or error_type))


def record_exception(
    current: Span, error_type: str, message: str, stack_trace: Sequence[str] = ()
) -> None:
    """The semantic conventions' `exception` event, masked as log lines are (`core.logs`).

    `stack_trace` is a runtime's `stackTrace` (Lambda's error document): the frames, innermost
    last, as the runtime formats them.
    """
    if not current.is_recording():
        return
    attributes = {"exception.type": error_type, "exception.message": redact_text(message)}
    if stack_trace:
        lines = "".join(line if line.endswith("\n") else line + "\n" for line in stack_trace)
        python = stack_trace[0].startswith('  File "')
        header = "Traceback (most recent call last):\n" if python else ""
        text = f"{header}{lines}{error_type}: {message}"
        attributes["exception.stacktrace"] = redact_text(text)
    current.add_event("exception", attributes)


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
    name = f"{service}.{model.name}"
    attributes = _attrs(
        {
            "rpc.system": "aws-api",
            "rpc.service": model.service_model.service_id.replace(" ", ""),
            "rpc.method": model.name,
            "cloud.region": context.get("client_region"),
        },
        {},
    )
    poll = _poll.get()
    if poll is not None:
        call = _Call(name, attributes)
        poll.calls.append(call)
        context["_sluiceway_call"] = call
        return
    context["_sluiceway_span"] = tracer.start_span(
        name, kind=SpanKind.CLIENT, attributes=attributes
    )


def _close(
    span: Span, status: int | None, error: str | None, *, end_time: int | None = None
) -> None:
    if status is not None:
        span.set_attribute("http.response.status_code", status)
    if error:
        record_error(span, error)
    span.end(end_time=end_time)


def _end(
    context: dict[str, Any] | None,
    status: int | None,
    error: str | None,
    request_id: str | None = None,
) -> None:
    context = context or {}
    call: _Call | None = context.pop("_sluiceway_call", None)
    if call is not None:
        call.end, call.status, call.error = time.time_ns(), status, error
        if request_id:
            call.attributes["aws.request_id"] = request_id
        return
    started: Span | None = context.pop("_sluiceway_span", None)
    if started is None:
        return
    if request_id:
        started.set_attribute("aws.request_id", request_id)
    _close(started, status, error)


def _after_call(
    http_response: Any = None, parsed: Any = None, context: Any = None, **_: Any
) -> None:
    status = getattr(http_response, "status_code", None)
    error = request_id = None
    if isinstance(parsed, dict):
        error = (parsed.get("Error") or {}).get("Code")
        request_id = (parsed.get("ResponseMetadata") or {}).get("RequestId")
    _end(context, status, error, request_id)


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
