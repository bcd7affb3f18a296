"""The invocation histograms (duration, batch size) for Prometheus, recorded for a microsecond.

OpenTelemetry's synchronous histogram costs about 6 µs a measurement (attribute cleaning,
hashing, reservoir, lock), twice per invocation: a fifth of dispatching a small batch. When
Prometheus is the only reader, nothing needs the SDK's aggregation: these buckets count in place
and the exposition reads them as any Prometheus client library's histogram would. With another
reader (OTLP, console) the SDK's instruments are used instead, so every reader sees the same data.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector


class Buckets:
    """One label set's histogram: a count per bucket (`le` bounds, then +Inf), sum and count."""

    __slots__ = ("_bounds", "_counts", "_lock", "_sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = tuple(bounds)
        self._counts = [0] * (len(self._bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()  # the exposition may read from another thread

    def record(self, value: float) -> None:
        index = bisect_left(self._bounds, value)  # the first bound >= value: Prometheus's `le`
        with self._lock:
            self._counts[index] += 1
            self._sum += value

    def snapshot(self) -> tuple[list[tuple[str, float]], float]:
        """Cumulative (le, count) pairs ending with +Inf, and the sum."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self._bounds, float("inf")), counts, strict=True):
            running += count
            out.append((_le(bound), float(running)))
        return out, total


def _le(bound: float) -> str:
    """Bounds as the OpenTelemetry exporter writes them: 1 and 0.005, not 1.0; +Inf."""
    if bound == float("inf"):
        return "+Inf"
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


class Histogram:
    """A histogram per (mapping, source), exposed to a Prometheus registry by `Histograms`."""

    def __init__(self, name: str, description: str, bounds: Sequence[float]) -> None:
        self.name = name
        self.description = description
        self.bounds = tuple(bounds)
        self.series: dict[tuple[str, str], Buckets] = {}

    def buckets(self, mapping: str, source: str) -> Buckets:
        found = self.series.get((mapping, source))
        if found is None:
            found = self.series[(mapping, source)] = Buckets(self.bounds)
        return found

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.description, labels=["mapping", "source"])
        for (mapping, source), buckets in list(self.series.items()):
            counts, total = buckets.snapshot()
            family.add_metric([mapping, source], counts, total)
        return family


class Histograms(Collector):
    """The collector a Prometheus registry reads the histograms from."""

    def __init__(self, histograms: Sequence[Histogram]) -> None:
        self.histograms = tuple(histograms)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        for histogram in self.histograms:
            if histogram.series:
                yield histogram.family()
