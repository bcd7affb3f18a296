"""`python -m bench.trace_volume`: how many spans Sluiceway exports per message and per idle minute.

The real service runs in this process against a moto server, with the SDK's in-memory exporter:
N SQS messages through one mapping (spans and root traces per message), 10 N Kinesis records on
4 shards, then an idle SQS mapping
and an idle 4-shard Kinesis stream for a fixed time after start-up, extrapolated to a minute.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sluiceway.app.service import Service
from sluiceway.config.settings import Settings
from sluiceway.core import telemetry

from tests.support.emulators import start_moto
from tests.support.sqs import eventually, make_queue, send, settings_for, sqs_client
from tests.support.streams import aws_client, make_stream

STARTUP_SECONDS = 5.0
"""Time given to start-up (queue attributes, shard listing, iterators) before idle counting."""


@contextlib.contextmanager
def _exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.use_tracer_provider(provider)
    try:
        yield exporter
    finally:
        telemetry.use_tracer_provider(None)
        provider.shutdown()


@contextlib.asynccontextmanager
async def _running(settings: Settings) -> AsyncIterator[Service]:
    service = Service(settings, handle_signals=False)
    async with anyio.create_task_group() as tg:
        await tg.start(service.run)
        try:
            yield service
        finally:
            service.stop()


def _count(spans: tuple[ReadableSpan, ...]) -> dict[str, int]:
    return {"spans": len(spans), "root_traces": sum(1 for s in spans if s.parent is None)}


async def busy_sqs(messages: int) -> dict[str, Any]:
    """Spans for `messages` SQS messages, handled in batches of up to 10."""
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "volume-busy")
        await send(sqs, url, [f"m{i}" for i in range(messages)])
        with _exporter() as exporter:
            mapping = {"source": url, "handler": "tests.support.recording:record"}
            async with _running(settings_for({"q": mapping})) as service:
                stats = service.registry.mappings["q"]
                await eventually(lambda: stats.deleted >= messages, timeout=120)
            counted = _count(exporter.get_finished_spans())
    return {
        "messages": messages,
        **counted,
        "spans_per_message": round(counted["spans"] / messages, 2),
    }


async def busy_kinesis(records: int) -> dict[str, Any]:
    """Spans for `records` Kinesis records on 4 shards (BatchSize 100), from TRIM_HORIZON."""
    async with aws_client("kinesis") as kinesis:
        arn = await make_stream(kinesis, "volume-busy", shards=4)
        stream = arn.rsplit("/", 1)[1]
        for start in range(0, records, 500):
            entries = [
                {"PartitionKey": f"key-{i}", "Data": f"r{i}".encode()}
                for i in range(start, min(records, start + 500))
            ]
            await kinesis.put_records(StreamName=stream, Records=entries)
        with _exporter() as exporter:
            mapping = {
                "source": arn,
                "handler": "tests.support.recording:record",
                "starting_position": "TRIM_HORIZON",
            }
            async with _running(settings_for({"k": mapping})) as service:
                stats = service.registry.mappings["k"]
                await eventually(lambda: stats.invoked == records, timeout=120)
            counted = _count(exporter.get_finished_spans())
    return {
        "records": records,
        **counted,
        "spans_per_record": round(counted["spans"] / records, 3),
    }


async def idle(seconds: float) -> dict[str, Any]:
    """Spans an idle SQS mapping and an idle 4-shard Kinesis mapping export, per minute, once
    started (what start-up exported is counted apart)."""
    async with sqs_client() as sqs, aws_client("kinesis") as kinesis:
        url, _ = await make_queue(sqs, "volume-idle")
        arn = await make_stream(kinesis, "volume-idle", shards=4)
        out: dict[str, Any] = {"seconds": seconds}
        for name, mapping in (
            ("sqs", {"source": url, "handler": "tests.support.recording:record"}),
            (
                "kinesis_4_shards",
                {
                    "source": arn,
                    "handler": "tests.support.recording:record",
                    "starting_position": "LATEST",
                },
            ),
        ):
            with _exporter() as exporter:
                async with _running(settings_for({"m": mapping})):
                    await anyio.sleep(STARTUP_SECONDS)
                    startup = _count(exporter.get_finished_spans())
                    exporter.clear()
                    await anyio.sleep(seconds)
                    counted = _count(exporter.get_finished_spans())
            out[name] = {
                "startup_spans": startup["spans"],
                **counted,
                "spans_per_minute": round(counted["spans"] * 60 / seconds, 1),
                "root_traces_per_minute": round(counted["root_traces"] * 60 / seconds, 1),
            }
    return out


async def main(messages: int, seconds: float) -> dict[str, Any]:
    return {
        "busy_sqs": await busy_sqs(messages),
        "busy_kinesis": await busy_kinesis(10 * messages),
        "idle": await idle(seconds),
    }


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.trace_volume", description=__doc__)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=45.0)
    args = parser.parse_args()
    moto = start_moto()
    os.environ.update(
        AWS_ENDPOINT_URL=moto.url,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_REGION="us-east-1",
        AWS_DEFAULT_REGION="us-east-1",
    )
    try:
        result = anyio.run(main, args.messages, args.seconds)
    finally:
        moto.stop()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    cli()
