"""Dispatch overhead with no network: Sluiceway's batch path against a bare loop.

Both call the same no-op handler on the same batches of SQS-shaped records. Sluiceway's path is
BatchBuilder → BatchProcessor.process (filter → invoke in a worker thread with Lambda's JSON copy
of the event → interpret → settle); the bare loop calls the handler with `{"Records": [...]}`.
"""

from __future__ import annotations

import time
from typing import Any

import anyio

from bench.common import median
from pollers.sqs_records import to_source_record
from router.batching import BatchBuilder
from router.filters import compile_filter_criteria
from router.invoker import PythonInvoker
from router.processor import BatchProcessor
from router.records import SourceRecord
from router.stats import MappingStats

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


async def sluiceway_rate(records: list[SourceRecord], size: int) -> float:
    processor = BatchProcessor(
        invoker=PythonInvoker("bench.dispatch:noop", function_timeout=60),
        stats=MappingStats("bench", "sqs"),
        record_filter=compile_filter_criteria(FILTER, "sqs"),
        report_batch_item_failures=True,
    )
    await processor.invoker.warm()  # type: ignore[attr-defined]
    started = time.perf_counter()
    for batch in batches(records, size):
        settlement = await processor.process(batch)
        if len(settlement.succeeded) != len(batch):
            raise RuntimeError("a benchmark batch did not succeed")
    return len(records) / (time.perf_counter() - started)


def bare_rate(records: list[SourceRecord], size: int) -> float:
    started = time.perf_counter()
    for batch in batches(records, size):
        noop({"Records": [r.event for r in batch]}, None)
    return len(records) / (time.perf_counter() - started)


def run(
    records: int = 20_000, repeats: int = 3, sizes: tuple[int, ...] = BATCH_SIZES
) -> dict[str, Any]:
    """Records/s of each path per batch size, medians of `repeats`; at most `records` per run."""
    data = make_records(records)
    out: dict[str, Any] = {}
    for size in sizes:
        count = min(records, max(size * 5, records // 10 if size == 1 else records))
        sample = data[:count]
        ours = [anyio.run(sluiceway_rate, sample, size) for _ in range(repeats)]
        bare = [bare_rate(sample, size) for _ in range(repeats)]
        out[str(size)] = {
            "records": count,
            "sluiceway_per_s": median(ours),
            "bare_per_s": median(bare),
            "ratio": median(bare) / median(ours),
        }
    return out
