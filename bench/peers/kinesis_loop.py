"""The minimal Kinesis consumer: one aiobotocore task per shard, get_records(10000), no decoding.

An empty shard is polled again after 200 ms (Kinesis allows 5 GetRecords/s per shard).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import anyio
from aiobotocore.session import get_session

from bench import handlers
from bench.common import REGION, cpu_now, self_report

POLL_SECONDS = 0.2


async def read_shard(kinesis: Any, stream: str, shard_id: str, deadline: float) -> None:
    iterator = (
        await kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
        )
    )["ShardIterator"]
    while iterator and not handlers.DONE.is_set() and time.monotonic() < deadline:
        response = await kinesis.get_records(ShardIterator=iterator, Limit=10_000)
        records = response.get("Records") or []
        if records:
            handlers.raw([r["Data"] for r in records])
        else:
            await anyio.sleep(POLL_SECONDS)
        iterator = response.get("NextShardIterator")


async def consume(args: argparse.Namespace) -> str:
    handlers.reset(args.expect, latency=args.latency)
    cpu_start = cpu_now()
    started = time.monotonic()
    deadline = started + args.timeout
    async with (
        get_session().create_client("kinesis", region_name=REGION) as kinesis,
        anyio.create_task_group() as tg,
    ):
        for stream in args.stream:
            shards = (await kinesis.list_shards(StreamName=stream))["Shards"]
            for shard in shards:
                tg.start_soon(read_shard, kinesis, stream, shard["ShardId"], deadline)
    if not handlers.DONE.is_set():
        raise SystemExit(f"only {handlers.count()} of {args.expect} records in {args.timeout}s")
    return self_report(
        handlers.count(), time.monotonic() - started, cpu_start, list(handlers.LATENCIES)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stream", action="append", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--latency", action="store_true")
    parser.add_argument("--timeout", type=float, default=240.0)
    print(anyio.run(consume, parser.parse_args()), flush=True)


if __name__ == "__main__":
    main()
