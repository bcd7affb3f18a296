"""Dispatch overhead with no network: Sluiceway's batch path against a bare loop.

Both call the same no-op handler on the same batches of SQS-shaped records. Sluiceway's path is
BatchBuilder → BatchRunner.run (filter → invoke in a worker thread with Lambda's JSON copy
of the event → interpret → settle), with tracing (an SDK TracerProvider whose batch processor
drops the spans) and metrics (the service's meter provider) on; the bare loop calls the handler
with `{"Records": [...]}`. Each batch's cost is also split into the parts the bare loop lacks,
each timed on its own: the filter, the event copy and the hop to a worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import anyio
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from sluiceway.config.filter_patterns import RecordFilter, compile_filter_criteria
from sluiceway.core import telemetry
from sluiceway.core.metrics import Metrics
from sluiceway.core.stats import MappingStats, Registry
from sluiceway.handlers.environments import ThreadEnvironments
from sluiceway.handlers.invoker import PythonInvoker, _json_copy
from sluiceway.pollers.sqs_records import to_source_record
from sluiceway.router.batching import BatchBuilder
from sluiceway.router.records import SourceRecord
from sluiceway.router.runner import (
    BatchOrigin,
    BatchRunner,
    FailureHandling,
    Settlement,
    build_event,
)

from bench.common import median

BATCH_SIZES = (1, 10, 100, 1000)
QUEUE_ARN = "arn:aws:sqs:us-east-1:000000000000:bench"
FILTER = {"Filters": [{"Pattern": '{"body": {"kind": ["order"]}}'}]}
"""Every record matches, so the filter is paid for and nothing is dropped."""


def make_records(count: int) -> list[SourceRecord]:
    messages = (
        {
            "MessageId": f"id-{i}",
            "ReceiptHandle": f"handle-{i}",
            "Body": f'{{"kind":"order","id":{i},"amount":12.5,"note":"{"x" * 40}"}}',
            "Attributes": {"SentTimestamp": "1700000000000", "ApproximateReceiveCount": "1"},
            "MD5OfBody": "0" * 32,
        }
        for i in range(count)
    )
    return [
        to_source_record(m, queue_arn=QUEUE_ARN, region="us-east-1", fifo=False) for m in messages
    ]


def batches(records: list[SourceRecord], size: int) -> list[list[SourceRecord]]:
    out: list[list[SourceRecord]] = []
    builder = BatchBuilder(size)
    for record in records:
        if not builder.offer(record):
            out.append(builder.records)
            builder = BatchBuilder(size)
            builder.offer(record)
    if builder.records:
        out.append(builder.records)
    return out


def noop(event: dict[str, Any], context: Any) -> None:
    """The handler both paths call."""


class _Dropped(SpanExporter):
    """Spans are built, ended and batched as in production, then dropped instead of sent."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


@contextmanager
def telemetry_on() -> Iterator[MappingStats]:
    """Tracing and metrics as `sluiceway run` sets them up when an exporter is configured."""
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Dropped()))
    telemetry.use_tracer_provider(provider)
    registry = Registry()
    metrics = Metrics(registry)
    metrics.activate()
    try:
        yield registry.add("bench", "sqs")
    finally:
        metrics.shutdown()
        telemetry.use_tracer_provider(None)
        provider.shutdown()


async def sluiceway_rate(records: list[SourceRecord], size: int) -> float:
    with telemetry_on() as stats:
        return await _sluiceway_rate(records, size, stats)


async def _sluiceway_rate(records: list[SourceRecord], size: int, stats: MappingStats) -> float:
    runner = BatchRunner(
        invoker=PythonInvoker("bench.dispatch:noop", function_timeout=60),
        stats=stats,
        record_filter=compile_filter_criteria(FILTER, "sqs"),
        report_batch_item_failures=True,
        failures=FailureHandling(retry_in_place=False),
    )
    await runner.invoker.warm()
    origin = BatchOrigin("arn:aws:sqs:us-east-1:000000000000:bench")
    settled: list[Settlement] = []

    async def settle(settlement: Settlement) -> None:
        settled.append(settlement)

    started = time.perf_counter()
    for batch in batches(records, size):
        await runner.run(batch, settle, origin)
        if len(settled.pop().finished) != len(batch):
            raise RuntimeError("a benchmark batch did not succeed")
    return len(records) / (time.perf_counter() - started)


def bare_rate(records: list[SourceRecord], size: int) -> float:
    started = time.perf_counter()
    for batch in batches(records, size):
        noop({"Records": [r.event for r in batch]}, None)
    return len(records) / (time.perf_counter() - started)


def _per_call_us(fn: Callable[[], Any], seconds: float = 0.3) -> float:
    """Microseconds per call of `fn`, over at least `seconds`."""
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or calls < 3:
        fn()
        calls += 1
    return elapsed / calls * 1e6


async def _hop_us(seconds: float = 0.3) -> float:
    """One round trip to a handler thread and back (reserving an execution environment, running
    there, returning), as every sync handler invocation makes."""
    pool = ThreadEnvironments(1, "bench")
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or calls < 3:
        async with pool.reserve() as environment:
            await environment.run(noop, None, None)
        calls += 1
    return elapsed / calls * 1e6


def parts_us(
    records: list[SourceRecord], size: int, record_filter: RecordFilter
) -> dict[str, float]:
    """Per-batch microseconds of what Sluiceway does that the bare loop does not."""
    batch = records[:size]
    event = build_event(batch)
    return {
        "filter": _per_call_us(lambda: [record_filter.matches(r.event) for r in batch]),
        "event copy": _per_call_us(lambda: _json_copy(event)),
        "thread hop": anyio.run(_hop_us),
    }


def run(
    records: int = 20_000, repeats: int = 3, sizes: tuple[int, ...] = BATCH_SIZES
) -> dict[str, Any]:
    """Records/s of each path per batch size, medians of `repeats`; at most `records` per run."""
    data = make_records(records)
    record_filter = compile_filter_criteria(FILTER, "sqs")
    assert record_filter is not None
    out: dict[str, Any] = {}
    for size in sizes:
        count = min(records, max(size * 5, records // 10 if size == 1 else records))
        sample = data[:count]
        ours = [anyio.run(sluiceway_rate, sample, size) for _ in range(repeats)]
        bare = [bare_rate(sample, size) for _ in range(repeats)]
        per_batch = {
            "sluiceway": size / median(ours) * 1e6,
            "bare loop": size / median(bare) * 1e6,
            **parts_us(sample, size, record_filter),
        }
        per_batch["the rest"] = per_batch["sluiceway"] - sum(
            v for k, v in per_batch.items() if k != "sluiceway"
        )
        out[str(size)] = {
            "records": count,
            "sluiceway_per_s": median(ours),
            "bare_per_s": median(bare),
            "ratio": median(bare) / median(ours),
            "per_batch_us": per_batch,
        }
    return out
