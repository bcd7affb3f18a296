"""Put → handler start at low load: a producer in the harness, each consumer in its own process."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import orjson

from bench import kinesis_e2e, sqs_e2e
from bench.common import ROOT, ChildRun, aws_env, percentile
from bench.emulators import client, kinesalite, make_queue, make_stream, ministack

WARMUP_SECONDS = 3.0
"""Consumers start (imports, shard discovery) before the first probe is put."""
SPREAD = 0.5
"""Probes come `rate` times a second on average, each gap drawn from (1 ± SPREAD) / rate: evenly
spaced probes lock in phase with a consumer that polls at the same period, and every run would
then measure one fixed offset (p50s from 5 to 200 ms across runs of the same code)."""
_spacing = random.Random(20261125)
KINESIS_SHARDS = 4
"""Probes land on any of the stream's shards, each quiet between probes."""


def _probe(index: int) -> bytes:
    return orjson.dumps({"i": index, "t": time.time()})


def _measure(
    command: Sequence[str],
    env: dict[str, str],
    count: int,
    rate: float,
    service: str,
    endpoint: str,
    put: Callable[[Any, bytes], Awaitable[Any]],
) -> ChildRun:
    """Start the consumer, let it settle, put `count` probes at `rate`/s, read its latencies."""
    process = subprocess.Popen(
        list(command), env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        time.sleep(WARMUP_SECONDS)

        async def produce() -> None:
            async with client(service, endpoint) as made:
                for i in range(count):
                    began = time.monotonic()
                    await put(made, _probe(i))
                    gap = _spacing.uniform(1 - SPREAD, 1 + SPREAD) / rate
                    await anyio.sleep(max(0.0, gap - (time.monotonic() - began)))

        anyio.run(produce)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"{command[2]} failed: {err[-2000:]}")
    report = orjson.loads(lines[-1])
    return ChildRun(
        report["records"],
        report["seconds"],
        report["cpu"],
        report.get("max_rss_mb", 0),
        report["latencies"],
    )


def _summary(run: ChildRun) -> dict[str, float]:
    ms = [x * 1000 for x in run.latencies]
    return {"p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99), "samples": len(ms)}


def run(count: int = 50, rate: float = 5.0) -> dict[str, Any]:
    """`count` probes at `rate`/s for each consumer (SQS on ministack, Kinesis on kinesalite)."""
    out: dict[str, Any] = {
        "rate_per_s": rate,
        "sqs": {},
        "kinesis": {},
        "kinesis_shards": KINESIS_SHARDS,
    }
    with ministack() as endpoint:
        env = aws_env(sqs=endpoint)
        for name in sqs_e2e.consumers("", count):

            async def queue(name: str = name) -> str:
                async with client("sqs", endpoint) as sqs:
                    return await make_queue(sqs, f"latency-{name.replace(' ', '-')}")

            url = anyio.run(queue)
            command = sqs_e2e.consumers(url, count)[name]
            command = [*command, "--latency"] if command[0] != "node" else [*command[:-1], "1"]

            async def put_sqs(sqs: Any, body: bytes, url: str = url) -> None:
                await sqs.send_message(QueueUrl=url, MessageBody=body.decode())

            result = _measure(command, env, count, rate, "sqs", endpoint, put_sqs)
            out["sqs"][name] = _summary(result)
            print(f"  latency sqs {name}: {out['sqs'][name]}", file=sys.stderr)
    with kinesalite() as endpoint:
        env = aws_env(kinesis=endpoint)
        for index, name in enumerate(kinesis_e2e.consumers("s", "a", endpoint, count, 100)):
            stream = f"latency-{index}"

            async def make(stream: str = stream) -> str:
                async with client("kinesis", endpoint) as kinesis:
                    return await make_stream(kinesis, stream, KINESIS_SHARDS)

            arn = anyio.run(make)
            command = [*kinesis_e2e.consumers(stream, arn, endpoint, count, 100)[name], "--latency"]

            async def put_kinesis(kinesis: Any, data: bytes, stream: str = stream) -> None:
                key = f"p{_spacing.randrange(1 << 30)}"  # any of the shards
                await kinesis.put_record(StreamName=stream, PartitionKey=key, Data=data)

            result = _measure(command, env, count, rate, "kinesis", endpoint, put_kinesis)
            out["kinesis"][name] = _summary(result)
            print(f"  latency kinesis {name}: {out['kinesis'][name]}", file=sys.stderr)
    return out
