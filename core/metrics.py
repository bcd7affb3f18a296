"""OpenTelemetry metrics named after Lambda's ESM metrics, served at /metrics and sent by OTLP.

Counters and gauges are observable instruments that read `router.stats` when collected, so the
hot path pays nothing for them; only the duration and batch-size histograms are recorded as
batches run (`record_invocation`, a no-op while no `Metrics` is active), in place when Prometheus
is their only reader (`core.histograms`), by the SDK's instruments otherwise.

Prometheus names (labels `mapping`, `source`): sluiceway_invocations_total, sluiceway_errors_total,
sluiceway_throttles_total, sluiceway_<polled|filtered_out|invoked|failed_invoke|dropped|deleted|
destination_delivered>_events_total, sluiceway_destination_delivery_failures_total,
sluiceway_empty_polls_total,
sluiceway_duration_seconds (histogram), sluiceway_batch_size (histogram),
sluiceway_concurrent_executions, sluiceway_concurrency_target, sluiceway_init_duration_seconds,
sluiceway_iterator_age_milliseconds, sluiceway_leases, sluiceway_stuck_environments.
The exposition passes through the known-secrets registry (`core.secrets`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from aiohttp import web
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from sluiceway.core.histograms import Histogram, Histograms
from sluiceway.core.secrets import known_secrets
from sluiceway.core.stats import MappingStats, Registry

log = logging.getLogger(__name__)

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
DURATION_TEXT = "Handler invocation time (Duration)"
BATCH_SIZE_TEXT = "Events per invocation"

COUNTERS: dict[str, tuple[str, str]] = {
    "sluiceway_invocations": ("invocations", "Handler invocations (Lambda Invocations)"),
    "sluiceway_errors": ("errors", "Invocations that ended in a function error (Errors)"),
    "sluiceway_throttles": ("throttles", "Invocations refused for lack of capacity (Throttles)"),
    "sluiceway_polled_events": ("polled", "Events read from the source (PolledEventCount)"),
    "sluiceway_filtered_out_events": (
        "filtered_out",
        "Events removed by the filter (FilteredOutEventCount)",
    ),
    "sluiceway_invoked_events": ("invoked", "Events that invoked the handler (InvokedEventCount)"),
    "sluiceway_failed_invoke_events": (
        "failed_invoke",
        "Events in failed invocations (FailedInvokeEventCount)",
    ),
    "sluiceway_dropped_events": ("dropped", "Events dropped by retry limits (DroppedEventCount)"),
    "sluiceway_deleted_events": (
        "deleted",
        "SQS messages deleted after processing (DeletedEventCount)",
    ),
    "sluiceway_destination_delivered_events": (
        "destination_delivered",
        "Events sent to the on-failure destination (OnFailureDestinationDeliveredEventCount)",
    ),
    "sluiceway_empty_polls": (
        "empty_polls",
        "Polls (ReceiveMessage, GetRecords) that returned no records; they leave no trace",
    ),
    "sluiceway_destination_delivery_failures": (
        "destination_delivery_failures",
        "Failed on-failure destination sends (DestinationDeliveryFailures)",
    ),
}
"""OpenTelemetry counter name -> (MappingStats field, description)."""

ASYNC_COUNTERS: dict[str, tuple[str, str]] = {
    "sluiceway_async_events_received": (
        "async_events_received",
        "Event invokes accepted and stored (AsyncEventsReceived)",
    ),
    "sluiceway_async_events_dropped": (
        "async_events_dropped",
        "Asynchronous events given up on with no DLQ or destination (AsyncEventsDropped)",
    ),
    "sluiceway_async_invocations": ("invocations", "Asynchronous invocations of the function"),
    "sluiceway_async_errors": ("errors", "Asynchronous invocations that ended in a function error"),
    "sluiceway_async_throttles": ("throttles", "Asynchronous invocations throttled"),
    "sluiceway_async_destination_delivered": (
        "destination_delivered",
        "Invocation records and events sent to a destination or DLQ",
    ),
    "sluiceway_async_destination_delivery_failures": (
        "destination_delivery_failures",
        "Failed sends to a destination, retried (DestinationDeliveryFailures)",
    ),
    "sluiceway_async_dead_letter_errors": (
        "dead_letter_errors",
        "Failed sends to the dead-letter queue, retried (DeadLetterErrors)",
    ),
}
"""Per function (label `function`), for asynchronous invocation: OpenTelemetry counter name ->
(FunctionStats field, text); Prometheus adds `_total`. Beside them the gauge
sluiceway_async_event_age_milliseconds (AsyncEventAge)."""


def _labels(stats: MappingStats) -> dict[str, str]:
    return {"mapping": stats.mapping, "source": stats.kind}


class Metrics:
    """The service's meter provider, its instruments and the Prometheus text endpoint."""

    def __init__(
        self,
        registry: Registry,
        *,
        readers: Sequence[MetricReader] = (),
        prometheus: bool = True,
        resource: Any = None,
    ) -> None:
        self.registry = registry
        self._prom_registry: Any = None
        all_readers = list(readers)
        if prometheus:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from prometheus_client import CollectorRegistry

            # A registry of our own, so several services in one process never clash.
            self._prom_registry = CollectorRegistry(auto_describe=True)
            all_readers.append(
                PrometheusMetricReader(registry=self._prom_registry, scope_info_enabled=False)
            )
        views = [
            View(
                instrument_name="sluiceway_duration",
                aggregation=ExplicitBucketHistogramAggregation(DURATION_BUCKETS),
            ),
            View(
                instrument_name="sluiceway_batch_size",
                aggregation=ExplicitBucketHistogramAggregation(BATCH_SIZE_BUCKETS),
            ),
        ]
        kwargs: dict[str, Any] = {"metric_readers": all_readers, "views": views}
        if resource is not None:
            kwargs["resource"] = resource
        self.provider = MeterProvider(**kwargs)
        meter = self.provider.get_meter("sluiceway")
        for name, (attr, description) in COUNTERS.items():
            meter.create_observable_counter(
                name, callbacks=[self._counter(attr)], description=description
            )
        gauges: list[tuple[str, str, Callable[[MappingStats], float | None], str]] = [
            (
                "sluiceway_concurrent_executions",
                "",
                lambda s: s.in_flight,
                "Invocations running now (ConcurrentExecutions)",
            ),
            (
                "sluiceway_concurrency_target",
                "",
                lambda s: s.concurrency_target,
                "Pollers (SQS) or lanes (streams) the mapping runs",
            ),
            (
                "sluiceway_init_duration",
                "s",
                lambda s: s.init_duration_seconds,
                "Seconds the handler's init phase took (InitDuration)",
            ),
            (
                "sluiceway_iterator_age",
                "ms",
                lambda s: s.iterator_age_ms,
                "Age of the last record of the latest stream batch when invoked (IteratorAge)",
            ),
            (
                "sluiceway_leases",
                "",
                lambda s: s.leases,
                "Shard leases this replica holds",
            ),
            (
                "sluiceway_stuck_environments",
                "",
                lambda s: s.stuck_environments,
                "Execution environments held by a timed-out invocation that still runs",
            ),
        ]
        for name, unit, read, description in gauges:
            meter.create_observable_gauge(
                name, callbacks=[self._gauge(read)], unit=unit, description=description
            )
        for name, (attr, description) in ASYNC_COUNTERS.items():
            meter.create_observable_counter(
                name, callbacks=[self._function_counter(attr)], description=description
            )
        meter.create_observable_gauge(
            "sluiceway_async_event_age",
            callbacks=[self._function_gauge("async_event_age_ms")],
            unit="ms",
            description="Time from acceptance to the latest invocation of an event (AsyncEventAge)",
        )
        self._attrs: dict[str, dict[str, str]] = {}
        self._histograms: tuple[Histogram, Histogram] | None = None
        if self._prom_registry is not None and not readers:
            # Prometheus alone reads them: count in place (core/histograms.py).
            self._histograms = (
                Histogram("sluiceway_duration_seconds", DURATION_TEXT, DURATION_BUCKETS),
                Histogram("sluiceway_batch_size", BATCH_SIZE_TEXT, BATCH_SIZE_BUCKETS),
            )
            self._prom_registry.register(Histograms(self._histograms))
        else:
            self.duration = meter.create_histogram(
                "sluiceway_duration", unit="s", description=DURATION_TEXT
            )
            self.batch_size = meter.create_histogram(
                "sluiceway_batch_size", description=BATCH_SIZE_TEXT
            )

    def _counter(self, attr: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_: CallbackOptions) -> Iterable[Observation]:
            for stats in list(self.registry.mappings.values()):
                yield Observation(getattr(stats, attr), _labels(stats))

        return observe

    def _gauge(
        self, read: Callable[[MappingStats], float | None]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_: CallbackOptions) -> Iterable[Observation]:
            for stats in list(self.registry.mappings.values()):
                value = read(stats)
                if value is not None:
                    yield Observation(value, _labels(stats))

        return observe

    def _function_counter(self, attr: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_: CallbackOptions) -> Iterable[Observation]:
            for stats in list(self.registry.functions.values()):
                yield Observation(getattr(stats, attr), {"function": stats.function})

        return observe

    def _function_gauge(self, attr: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_: CallbackOptions) -> Iterable[Observation]:
            for stats in list(self.registry.functions.values()):
                value = getattr(stats, attr)
                if value is not None:
                    yield Observation(value, {"function": stats.function})

        return observe

    def record_invocation(self, stats: MappingStats, duration: float, size: int) -> None:
        if self._histograms is not None:
            durations, sizes = self._histograms
            durations.buckets(stats.mapping, stats.kind).record(duration)
            sizes.buckets(stats.mapping, stats.kind).record(size)
            return
        attrs = self._attrs.get(stats.mapping)
        if attrs is None:
            attrs = self._attrs[stats.mapping] = _labels(stats)
        self.duration.record(duration, attrs)
        self.batch_size.record(size, attrs)

    def prometheus_text(self) -> bytes:
        """The Prometheus exposition of every instrument (collected now, from the stats)."""
        if self._prom_registry is None:
            return b""
        from prometheus_client import generate_latest

        text = generate_latest(self._prom_registry)
        return known_secrets.mask(text.decode()).encode() if len(known_secrets) else bytes(text)

    async def handle(self, _: web.Request) -> web.Response:
        """GET /metrics (collection reads in-memory counters only: microseconds, no I/O)."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return web.Response(
            body=self.prometheus_text(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    def activate(self) -> None:
        global _active
        _active = self

    def shutdown(self) -> None:
        """Stop the readers; a periodic OTLP reader exports once more (blocking: call off-loop)."""
        global _active
        if _active is self:
            _active = None
        self.provider.shutdown()

    @classmethod
    def from_env(
        cls, registry: Registry, environ: Mapping[str, str] | None = None
    ) -> Metrics | None:
        """Prometheus always (unless OTEL_SDK_DISABLED); OTLP when OTEL_METRICS_EXPORTER or an
        OTLP endpoint asks for it. None when the SDK is disabled."""
        from sluiceway.core import telemetry

        env = os.environ if environ is None else environ
        if telemetry._truthy(env.get("OTEL_SDK_DISABLED")):
            return None
        readers: list[MetricReader] = []
        for name in telemetry._exporter_names(env, "METRICS"):
            if name == "otlp":
                readers.append(_otlp_reader(env))
            elif name == "console":
                from opentelemetry.sdk.metrics.export import (
                    ConsoleMetricExporter,
                    PeriodicExportingMetricReader,
                )

                readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
            elif name != "prometheus":
                log.warning("OTEL_METRICS_EXPORTER=%s is not supported (otlp, console, none)", name)
        return cls(registry, readers=readers, resource=telemetry.service_resource(env))


def _otlp_reader(env: Mapping[str, str]) -> MetricReader:
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from sluiceway.core.telemetry import otlp_protocol

    if otlp_protocol(env, "METRICS") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return PeriodicExportingMetricReader(OTLPMetricExporter())
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )

    return PeriodicExportingMetricReader(HttpMetricExporter())


_active: Metrics | None = None


def record_invocation(stats: MappingStats, duration: float, size: int) -> None:
    """Record one invocation's duration and batch size, if metrics are on."""
    active = _active
    if active is not None:
        active.record_invocation(stats, duration, size)
