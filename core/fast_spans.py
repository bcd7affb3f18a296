"""Recording spans for the per-batch path, made without the SDK's per-span machinery but with
its tracer's sampler, ids, resource, span processors and exporters.

Why: a batch span started, given its outcome and ended through `Tracer.start_span` cost 25 µs
warm and 39 to 46 µs right after a hop to a handler's thread (every attribute cleaned as it is set,
locks, bounded containers, a second object at the end), against 14 and about 30 this way; the
floor of a one-record batch with a sync handler is 80 to 115 µs in all.

What stays the SDK's: the sampling decision (the tracer's sampler, parent-based by default),
trace and span ids (its id generator), the resource and instrumentation scope, and every span
processor (`on_start`, `on_end`), so exporters receive the SDK's own `ReadableSpan`. What
differs: the attributes the span starts with are the caller's own, already valid, and are not
cleaned again; values set later are cleaned as they are set; the count limits are applied once,
when the span ends (the SDK's `BoundedAttributes`/`BoundedList`, with the environment's
`SpanLimits`). Experimental tracer configurators (a tracer switched off through the private
`_tracer_configurator`) are not consulted. `tests/test_fast_spans.py` exports the same spans
both ways and compares them.

Used only when the active tracer is the SDK's `Tracer`; any other tracer's spans are used as
they come.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping, Sequence
from time import time_ns
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, SpanProcessor, Tracer
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

log = logging.getLogger(__name__)

_SCALARS = frozenset({str, bool, int, float, bytes, type(None)})
"""Attribute values the SDK's cleaning returns as they are (strings too, without a length limit)."""


class FastSpanFactory:
    """Starts `FastSpan`s for one SDK tracer (its sampler, ids, resource and processors)."""

    def __init__(self, tracer: Tracer) -> None:
        self._sampler = tracer.sampler
        self._ids = tracer.id_generator
        self._processor: SpanProcessor = tracer.span_processor
        self._resource: Resource = tracer.resource
        info = tracer.instrumentation_info
        self._info = info
        self._scope = InstrumentationScope(info.name, info.version, info.schema_url)
        self._limits = SpanLimits()  # from the environment, as the provider's default

    def start(
        self,
        name: str,
        *,
        kind: SpanKind,
        attributes: Mapping[str, Any],
        links: Sequence[Link] = (),
    ) -> trace.Span:
        """What `Tracer.start_span(name, kind=..., attributes=..., links=...)` returns, under the
        current context: a recording span when sampled, a non-recording one otherwise.

        `attributes` must be valid attribute values already (str, bool, int, float, or a
        sequence of one of them): the caller's own, they are not cleaned again. Values set
        later (`set_attribute`, by the router or the handler) are cleaned as they are set."""
        parent = trace.get_current_span().get_span_context()
        if parent.is_valid:
            trace_id = parent.trace_id
            random_trace_id = parent.trace_flags.random_trace_id
            parent_context: SpanContext | None = parent
        else:
            trace_id = self._ids.generate_trace_id()
            random_trace_id = self._ids.is_trace_id_random()
            parent_context = None
        sampled = self._sampler.should_sample(None, trace_id, name, kind, attributes, links)
        flags = TraceFlags.SAMPLED if sampled.decision.is_sampled() else TraceFlags.DEFAULT
        if random_trace_id:
            flags |= TraceFlags.RANDOM_TRACE_ID
        context = SpanContext(
            trace_id,
            self._ids.generate_span_id(),
            is_remote=False,
            trace_flags=TraceFlags(flags),
            trace_state=sampled.trace_state,
        )
        if not sampled.decision.is_recording():
            return trace.NonRecordingSpan(context)
        values = dict(sampled.attributes)
        dropped = 0
        if self._limits.max_span_attribute_length is not None:
            cleaned = self.clean(values, on_span=True)
            values, dropped = dict(cleaned), _dropped(cleaned)
        valid = [link for link in links if _is_valid_link(link.context, link.attributes)]
        span = FastSpan(self, name, context, parent_context, kind, values, valid, dropped)
        self._processor.on_start(span, parent_context=otel_context.get_current())  # type: ignore[arg-type]
        return span

    def finish(self, span: FastSpan) -> None:
        """Bound what the span collected, and hand it to the processors."""
        limits = self._limits
        # A copy (one step under the GIL): a thread the handler left running may still write.
        attributes: Mapping[str, Any] = dict(span.attributes)
        limit = limits.max_span_attributes
        if span.dropped or (limit is not None and len(attributes) > limit):
            bounded = BoundedAttributes(
                limit,
                attributes,
                immutable=True,
                max_value_len=limits.max_span_attribute_length,
            )
            bounded.dropped += span.dropped
            attributes = bounded
        links: Sequence[Link] = ()
        if span.links:
            links = BoundedList.from_seq(
                limits.max_links,
                [
                    Link(link.context, self.clean(link.attributes, limits.max_link_attributes))
                    for link in span.links
                ],
            )
        readable = ReadableSpan(
            name=span.name,
            context=span.context,
            parent=span.parent,
            resource=self._resource,
            attributes=attributes,
            events=BoundedList.from_seq(limits.max_events, span.events) if span.events else (),
            links=links,
            kind=span.kind,
            status=span.status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_info=self._info,
            instrumentation_scope=self._scope,
        )
        self._processor.on_end(readable)

    def clean(
        self,
        attributes: Mapping[str, Any] | None,
        limit: int | None = None,
        *,
        on_span: bool = False,
    ) -> Mapping[str, Any]:
        """The SDK's cleaning of attribute values (types, string length), and a count limit.
        Scalars under non-empty string keys, with no length limit, are what cleaning would
        return unchanged: they are taken as they are."""
        limits = self._limits
        length = limits.max_span_attribute_length if on_span else limits.max_attribute_length
        if (
            attributes is not None
            and length is None
            and (limit is None or len(attributes) <= limit)
            and all(
                type(key) is str and key and type(value) in _SCALARS
                for key, value in attributes.items()
            )
        ):
            return attributes
        return BoundedAttributes(limit, attributes, immutable=True, max_value_len=length)

    def event(
        self, name: str, attributes: Mapping[str, Any] | None, timestamp: int | None
    ) -> Event:
        limits = self._limits
        bounded = BoundedAttributes(
            limits.max_event_attributes,
            attributes,
            immutable=True,
            max_value_len=limits.max_attribute_length,
        )
        return Event(name, bounded, timestamp)


def _dropped(cleaned: Mapping[str, Any]) -> int:
    """How many attributes cleaning dropped (invalid keys), as the SDK counts them."""
    return cleaned.dropped if isinstance(cleaned, BoundedAttributes) else 0


def sdk_tracer(tracer: trace.Tracer) -> Tracer | None:
    """`tracer` if it is the SDK's own (what `FastSpanFactory` needs), else None."""
    return tracer if type(tracer) is Tracer else None


def _is_valid_link(context: SpanContext, attributes: Mapping[str, Any] | None) -> bool:
    """The SDK's rule: a link needs a valid context, or attributes or a trace state."""
    return bool(context and (context.is_valid or (attributes or context.trace_state)))


class FastSpan(trace.Span):
    """A recording span that keeps what it is told in plain containers until it ends; the
    handler sees it as the current span (`set_attribute`, `add_event`, `record_exception`...).
    Attribute updates are single dictionary operations, safe from the handler's thread."""

    __slots__ = (
        "_factory",
        "attributes",
        "context",
        "dropped",
        "end_time",
        "events",
        "kind",
        "links",
        "name",
        "parent",
        "start_time",
        "status",
    )

    def __init__(
        self,
        factory: FastSpanFactory,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
        links: list[Link],
        dropped: int = 0,
    ) -> None:
        self._factory = factory
        self.name = name
        self.context = context
        self.parent = parent
        self.kind = kind
        self.attributes = attributes
        self.dropped = dropped
        """Attributes cleaning dropped (invalid keys), counted as the SDK counts them."""
        self.links = links
        self.events: list[Event] = []
        self.status = Status(StatusCode.UNSET)
        self.start_time = time_ns()
        self.end_time: int | None = None

    def get_span_context(self) -> SpanContext:
        return self.context

    def is_recording(self) -> bool:
        return self.end_time is None

    def _ended(self, what: str) -> bool:
        if self.end_time is None:
            return False
        log.warning("Tried calling %s on an ended span.", what)
        return True

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if not self._ended("set_attributes"):
            self._set(attributes)

    def set_attribute(self, key: str, value: Any) -> None:
        if not self._ended("set_attribute"):
            self._set({key: value})

    def _set(self, attributes: Mapping[str, Any]) -> None:
        """As the SDK's attributes: cleaned, and a key set again moves to the end (the newest
        is what a count limit keeps)."""
        cleaned = self._factory.clean(attributes, on_span=True)
        self.dropped += _dropped(cleaned)
        mine = self.attributes
        for key, value in cleaned.items():
            mine.pop(key, None)
            mine[key] = value

    def add_event(
        self, name: str, attributes: Mapping[str, Any] | None = None, timestamp: int | None = None
    ) -> None:
        if not self._ended("add_event"):
            self.events.append(self._factory.event(name, attributes, timestamp))

    def add_link(self, context: SpanContext, attributes: Mapping[str, Any] | None = None) -> None:
        if not self._ended("add_link") and _is_valid_link(context, attributes):
            self.links.append(Link(context, attributes))

    def update_name(self, name: str) -> None:
        if not self._ended("update_name"):
            self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """The SDK's rules: OK is final, UNSET is ignored."""
        if self._ended("set_status"):
            return
        if self.status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            if status.status_code is StatusCode.UNSET:
                return
            if description is not None:
                log.warning(
                    "Description %s ignored. Use either `Status` or `(StatusCode, Description)`",
                    description,
                )
            self.status = status
        elif status is not StatusCode.UNSET:
            self.status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """The SDK's `exception` event."""
        module = type(exception).__module__
        qualname = type(exception).__qualname__
        exception_type = f"{module}.{qualname}" if module and module != "builtins" else qualname
        event: dict[str, Any] = {
            "exception.type": exception_type,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            event.update(attributes)
        self.add_event("exception", event, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._ended("end"):
            return
        self.end_time = end_time if end_time is not None else time_ns()
        self._factory.finish(self)
