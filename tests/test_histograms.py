"""The in-place invocation histograms: Prometheus's bucket rule, and the same exposition the
OpenTelemetry exporter gives for the same measurements."""

from __future__ import annotations

import re

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from sluiceway.core.histograms import Buckets
from sluiceway.core.metrics import Metrics
from sluiceway.core.stats import Registry


def test_a_value_on_a_bound_counts_in_that_bucket() -> None:
    buckets = Buckets((1, 5, 10))
    for value in (0, 1, 1.5, 5, 10, 11):
        buckets.record(value)
    counts, total = buckets.snapshot()
    assert counts == [("1", 2.0), ("5", 4.0), ("10", 5.0), ("+Inf", 6.0)]
    assert total == 28.5


def _histogram_lines(text: str) -> list[str]:
    """Histogram samples with labels sorted (exporters order labels differently)."""
    out = []
    for line in text.splitlines():
        if re.match(r"# (HELP|TYPE) sluiceway_(duration_seconds|batch_size) ", line):
            out.append(line)
        match = re.fullmatch(r"(sluiceway_(?:duration_seconds|batch_size)\w*)\{(.*)\} (\S+)", line)
        if match:
            labels = ",".join(sorted(match[2].split(",")))
            out.append(f"{match[1]}{{{labels}}} {float(match[3]):.6g}")
    return sorted(out)


def test_prometheus_sees_what_the_sdk_histograms_would_show() -> None:
    measurements = [(0.003, 1), (0.03, 3), (0.2, 10), (0.2, 10), (42.0, 10_000), (1000.0, 20_000)]
    texts = []
    for readers in ((), (InMemoryMetricReader(),)):
        registry = Registry()
        metrics = Metrics(registry, readers=readers)
        orders, clicks = registry.add("orders", "sqs"), registry.add("clicks", "kinesis")
        for duration, size in measurements:
            metrics.record_invocation(orders, duration, size)
        metrics.record_invocation(clicks, 0.5, 100)
        texts.append(metrics.prometheus_text().decode())
        metrics.shutdown()
    in_place, through_sdk = (_histogram_lines(t) for t in texts)
    assert in_place == through_sdk
    assert 'sluiceway_duration_seconds_bucket{le="0.25",mapping="orders",source="sqs"} 4' in (
        in_place
    )
    assert 'sluiceway_batch_size_count{mapping="clicks",source="kinesis"} 1' in in_place
