"""Dispatch overhead with no network: Sluiceway's batch path against an honest floor.

The floor does what a sync handler needs and nothing else: build Lambda's event from the batch,
one `loop.run_in_executor` hop to a single worker thread per batch, and in that thread one orjson
round trip (the handler's own copy of the event) before calling the handler. Sluiceway's path is
`BatchRunner.run` (invoke through `PythonInvoker` with its context, timeout and response rules,
then settle), with telemetry off, and with tracing (an SDK TracerProvider whose batch processor
drops the spans) and metrics (the service's meter provider) on. Async handlers skip the hop: their
floor awaits the coroutine directly on the event's copy. Both sides run in the same process, one
after the other, `repeats` times, under the garbage collector's policy the service applies after
start-up (`core/heap.py`); the medians of invocations per second are compared.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from typing import Any

import anyio
import orjson
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from sluiceway.core import heap, telemetry
from sluiceway.core.metrics import Metrics
from sluiceway.core.stats import MappingStats, Registry
from sluiceway.handlers.invoker import PythonInvoker
from sluiceway.pollers.sqs_records import to_source_record
from sluiceway.router.batching import BatchBuilder
from sluiceway.router.records import SourceRecord
from sluiceway.router.runner import BatchOrigin, BatchRunner, FailureHandling, Settlement

from bench.common import median

BATCH_SIZES = (1, 10, 100)
QUEUE_ARN = "arn:aws:sqs:us-east-1:000000000000:bench"
PATHS = ("sync", "sync, telemetry on", "async", "async, telemetry on")
"""Sluiceway's paths: handler kind, and whether tracing and metrics are on."""


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
    """The sync handler both sides call."""


async def anoop(event: dict[str, Any], context: Any) -> None:
    """The async handler both sides call."""


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


def _copy_and_call(event: dict[str, Any]) -> None:
    noop(orjson.loads(orjson.dumps(event)), None)


async def _floor(groups: list[list[SourceRecord]], is_async: bool) -> float:
    """Invocations per second of the floor: the event, its copy, the hop (sync handlers only)."""
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=1) as executor:
        await loop.run_in_executor(executor, _copy_and_call, {"Records": []})  # thread started
        started = time.perf_counter()
        for batch in groups:
            event = {"Records": [r.event for r in batch]}
            if is_async:
                await anoop(orjson.loads(orjson.dumps(event)), None)
            else:
                await loop.run_in_executor(executor, _copy_and_call, event)
        return len(groups) / (time.perf_counter() - started)


async def _sluiceway(groups: list[list[SourceRecord]], path: str) -> float:
    """Invocations per second of `BatchRunner.run` on the path's handler and telemetry."""
    with telemetry_on() if "telemetry on" in path else nullcontext(None) as stats:
        runner = BatchRunner(
            invoker=PythonInvoker(
                "bench.dispatch:anoop" if path.startswith("async") else "bench.dispatch:noop",
                function_timeout=60,
            ),
            stats=stats or Registry().add("bench", "sqs"),
            report_batch_item_failures=True,
            failures=FailureHandling(retry_in_place=False),
        )
        await runner.invoker.warm()
        origin = BatchOrigin(QUEUE_ARN)
        settled: list[Settlement] = []

        async def settle(settlement: Settlement) -> None:
            settled.append(settlement)

        started = time.perf_counter()
        for batch in groups:
            await runner.run(batch, settle, origin)
            if len(settled.pop().finished) != len(batch):
                raise RuntimeError("a benchmark batch did not succeed")
        rate = len(groups) / (time.perf_counter() - started)
        await runner.invoker.aclose()
        return rate


def run(
    records: int = 20_000, repeats: int = 3, sizes: tuple[int, ...] = BATCH_SIZES
) -> dict[str, Any]:
    """Invocations/s of each path and its floor per batch size (medians of `repeats`, each
    side by side); at most `records` records, and no more than 5,000 invocations, per run."""
    heap.settle()  # the garbage collector's policy `sluiceway run` applies after start-up
    data = make_records(records)
    out: dict[str, Any] = {}
    for size in sizes:
        groups = batches(data[: min(records, 5_000 * size)], size)
        rates: dict[str, list[float]] = {p: [] for p in PATHS}
        floors: dict[str, list[float]] = {"sync": [], "async": []}
        for _ in range(repeats):
            for kind in floors:
                floors[kind].append(anyio.run(_floor, groups, kind == "async"))
            for path in PATHS:
                rates[path].append(anyio.run(_sluiceway, groups, path))
        floor = {kind: median(v) for kind, v in floors.items()}
        out[str(size)] = {
            "invocations": len(groups),
            "floor_per_s": floor,
            "sluiceway_per_s": {path: median(v) for path, v in rates.items()},
            "ratio": {path: floor[path.split(",")[0]] / median(v) for path, v in rates.items()},
        }
    return out
