"""Spans of a batch's life in the router: the batch, its invocations, retries, producer links.

The primitives (tracer state, `span`, poll and destination spans) are `sluiceway.core.telemetry`.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sluiceway.core import logs
from sluiceway.core.telemetry import (
    FAAS_TRIGGER,
    MESSAGING_SYSTEM,
    NOOP_SPAN,
    PollTrace,
    current_span,
    fast_spans,
    per_record,
    record_error,
    record_exception,
    source_name,
    span,
    tracer,
)
from sluiceway.handlers.results import FunctionError, InvocationResult, InvokeFailure
from sluiceway.router.outcomes import BatchFailed, Outcome, PartialFailure
from sluiceway.router.records import SourceRecord

_propagator = TraceContextTextMapPropagator()
_in_batch: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "sluiceway_in_batch", default=False
)


_batch_ids = itertools.count(1)
_BATCH_PREFIX = os.urandom(3).hex()


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
    if tracer() is None:
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


def received(poll: PollTrace | None, records: Sequence[SourceRecord]) -> None:
    """A poll returned `records`: its receive span (made now, when there are records) links to
    their producers, and each record keeps the span, so its batch's process span links back."""
    if poll is None:
        return
    context = poll.returned(len(records), links_from_records(records) if records else ())
    if context is not None:
        for record in records:
            record.receive = context


def receive_links(records: Sequence[SourceRecord]) -> list[Link]:
    """One link per receive span that read some of `records`, with how many of them it read."""
    counts: dict[int, int] = {}
    contexts: dict[int, SpanContext] = {}
    for record in records:
        context = record.receive
        if context is not None:
            key = context.span_id
            contexts.setdefault(key, context)
            counts[key] = counts.get(key, 0) + 1
    return [
        Link(
            contexts[key],
            {"messaging.operation.type": "receive", "messaging.batch.message_count": count},
        )
        for key, count in counts.items()
    ]


def batch_links(records: Sequence[SourceRecord]) -> list[Link]:
    """A process span's links: the receive span(s) that read its records, then each producer."""
    links = receive_links(records)
    links.extend(links_from_records(records))
    return links


class _Static:
    """What every batch span of one source, mapping and function shares, built once per
    (source, mapping, function): its name and its constant attributes."""

    __slots__ = ("attributes", "name")

    def __init__(self, arn: str, kind: str, mapping: str, function: str) -> None:
        attributes: dict[str, Any] = {
            "messaging.system": MESSAGING_SYSTEM.get(kind, kind),
            "messaging.destination.name": source_name(arn),
            "faas.trigger": FAAS_TRIGGER.get(kind, "other"),
        }
        if arn:
            attributes["cloud.resource_id"] = arn
        attributes["messaging.operation"] = "process"
        attributes["sluiceway.mapping"] = mapping
        if function:
            attributes["faas.name"] = function
        self.attributes = attributes
        self.name = f"{attributes['messaging.destination.name']} process"


_STATIC: dict[tuple[str, str, str, str], _Static] = {}


def _static(arn: str, kind: str, mapping: str, function: str) -> _Static:
    key = (arn, kind, mapping, function)
    found = _STATIC.get(key)
    if found is None:
        if len(_STATIC) > 4096:  # mappings come and go in tests; never let it grow unbounded
            _STATIC.clear()
        found = _STATIC[key] = _Static(arn, kind, mapping, function)
    return found


def new_batch_id() -> str:
    """Unique in the process and cheap (no span needed): logs and spans share it."""
    return f"{_BATCH_PREFIX}-{next(_batch_ids):x}"


class batch_span:
    """The per-batch span, with mapping and batch_id bound for logs. As the messaging conventions
    ask of a process span, it links to each message's producer, and to the receive span(s) that
    fetched the batch's records (`received`), so a receive leads to its processing.

    It is also the function's invocation span (one span per invocation, the conventions' FaaS
    span for a messaging trigger): `function` adds `faas.name` and `faas.coldstart`, and the
    router adds `faas.invocation_id` from the result (`annotate_outcome`). The handler's own
    spans nest under it, threads included. Nested uses reuse the open one.

    A class, not a generator, and the span is made current with `attach`/`detach` rather than
    `trace.use_span`: it runs for every batch. An exception leaving it is recorded on the span
    and sets its status, as `use_span` does.
    """

    __slots__ = (
        "_bound",
        "_coldstart",
        "_context_token",
        "_function",
        "_kind",
        "_mapping",
        "_records",
        "_span",
        "_token",
    )

    def __init__(
        self,
        records: Sequence[SourceRecord],
        mapping: str,
        kind: str,
        function: str | None = None,
        coldstart: bool = False,
    ) -> None:
        self._records = records
        self._mapping = mapping
        self._kind = kind
        self._function = function
        self._coldstart = coldstart
        self._token: contextvars.Token[bool] | None = None
        self._span: Span | None = None

    def __enter__(self) -> Span:
        if _in_batch.get():
            return current_span()
        batch_id = new_batch_id()
        self._token = _in_batch.set(True)
        self._bound = logs.bind_fields({"mapping": self._mapping, "batch_id": batch_id})
        active = tracer()
        if active is None:
            return NOOP_SPAN
        records = self._records
        arn = str(records[0].event.get("eventSourceARN", "")) if records else ""
        function = self._function or ""
        static = _static(arn, self._kind, self._mapping, function)
        attributes = static.attributes.copy()
        attributes["messaging.batch.message_count"] = len(records)
        attributes["sluiceway.batch_id"] = batch_id
        if function:
            attributes["faas.coldstart"] = self._coldstart
        fast = fast_spans()
        start = fast.start if fast is not None else active.start_span
        started = start(
            static.name, kind=SpanKind.CONSUMER, attributes=attributes, links=batch_links(records)
        )
        self._span = started
        self._context_token = otel_context.attach(trace.set_span_in_context(started))
        return started

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if self._token is None:
            return
        try:
            started = self._span
            if started is not None:
                otel_context.detach(self._context_token)
                if isinstance(exc, Exception) and started.is_recording():
                    started.record_exception(exc)
                    started.set_status(
                        Status(StatusCode.ERROR, description=f"{type(exc).__name__}: {exc}")
                    )
                started.end()
        finally:
            logs.unbind(self._bound)
            _in_batch.reset(self._token)


_NOT_PER_RECORD = contextlib.nullcontext()


def record_spans(
    function_name: str, records: Sequence[SourceRecord]
) -> contextlib.AbstractContextManager[None]:
    """With SLUICEWAY_TRACE_RECORDS=true, one child span per record (linked to its producer),
    open for the length of the invocation; otherwise nothing, at no cost."""
    if not per_record() or tracer() is None:
        return _NOT_PER_RECORD
    return _record_spans(function_name, records)


@contextlib.contextmanager
def _record_spans(function_name: str, records: Sequence[SourceRecord]) -> Iterator[None]:
    active = tracer()
    assert active is not None
    children = []
    for record in records:
        producer = producer_context(record.event)
        children.append(
            active.start_span(
                f"{function_name} record",
                links=[Link(producer)] if producer else None,
                attributes={"messaging.message.id": record.item_id},
            )
        )
    try:
        yield
    finally:
        for child in children:
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


def annotate_result(current: Span, result: InvocationResult) -> None:
    """Mark the invocation span with a function error (and its exception event: type, message
    and the function's stack trace) or an invoke failure."""
    if not current.is_recording():
        return
    if isinstance(result, FunctionError):
        record_error(current, result.error_type, result.message)
        record_exception(current, result.error_type, result.message, result.stack_trace)
        current.set_attribute("faas.error", result.function_error)
    elif isinstance(result, InvokeFailure):
        record_error(current, invoke_failure_type(result), result.reason)


def invoke_failure_type(failure: InvokeFailure) -> str:
    return "Throttled" if failure.throttled else "InvokeFailure"


def annotate_outcome(current: Span, outcome: Outcome, size: int, request_id: str = "") -> None:
    """Mark the batch span with the invocation's request id (`faas.invocation_id`, whatever the
    target) and what the response meant for the batch: the outcome in `sluiceway.outcome`, and
    for a failed batch `error.type` = the function's error type. One call for both: each
    attribute call takes the span's lock and cleans its values."""
    if not current.is_recording():
        return
    attributes = {"sluiceway.outcome": type(outcome).__name__}
    if request_id:
        attributes["faas.invocation_id"] = request_id
    current.set_attributes(attributes)
    if isinstance(outcome, PartialFailure):
        current.set_attribute("sluiceway.failed_count", len(outcome.failed_ids))
    elif isinstance(outcome, BatchFailed):
        current.set_attribute("sluiceway.failed_count", size)
        record_error(current, batch_error_type(outcome), outcome.reason)


def batch_error_type(outcome: BatchFailed) -> str:
    """The function's error type (`RuntimeError`, `Sandbox.Timedout`, ...), `Throttled` or
    `InvokeFailure` when it was not reached, `InvalidResponse` for a response AWS refuses."""
    error = outcome.error
    if isinstance(error, FunctionError):
        return error.error_type
    if isinstance(error, InvokeFailure):
        return invoke_failure_type(error)
    return "InvalidResponse"
