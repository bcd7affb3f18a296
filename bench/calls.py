"""CPU per empty GetRecords call: Sluiceway's call against stock aiobotocore's, same stream.

Each path runs in its own process (`--child stock|sluiceway`) on a client configured as the
service configures it, and reports process CPU time (getrusage) over many calls divided by
their number, never wall time. The paths alternate, `repeats` times each; medians are reported.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import anyio

from bench.common import ROOT, aws_env, cpu_now, median, python_child, run_child
from bench.emulators import client, kinesalite, make_stream

WARMUP = 100
PATHS = ("stock aiobotocore", "sluiceway")


async def child(args: argparse.Namespace) -> str:
    from sluiceway.core.aws import AwsClients

    async with AwsClients("us-east-1") as clients:
        kinesis = await clients.client("kinesis")
        fast = await clients.fast("kinesis")
        shard = (await kinesis.list_shards(StreamName=args.stream))["Shards"][0]["ShardId"]
        iterator = (
            await kinesis.get_shard_iterator(
                StreamName=args.stream, ShardId=shard, ShardIteratorType="LATEST"
            )
        )["ShardIterator"]

        async def stock(iterator: str) -> dict[str, Any]:
            return dict(await kinesis.get_records(ShardIterator=iterator, Limit=10_000))

        async def ours(iterator: str) -> dict[str, Any]:
            return await fast.call("GetRecords", {"ShardIterator": iterator, "Limit": 10_000})

        call = stock if args.child == "stock aiobotocore" else ours
        for _ in range(WARMUP):
            iterator = (await call(iterator))["NextShardIterator"]
        started = cpu_now()
        for _ in range(args.calls):
            page = await call(iterator)
            if page["Records"]:
                raise RuntimeError("the stream was meant to stay empty")
            iterator = page["NextShardIterator"]
        cpu = cpu_now() - started
    return json.dumps({"records": args.calls, "seconds": 0.0, "cpu": cpu})


def run(calls: int = 3_000, repeats: int = 3) -> dict[str, Any]:
    """Median CPU µs per empty GetRecords call of each path."""
    with kinesalite() as endpoint:

        async def seed() -> None:
            async with client("kinesis", endpoint) as kinesis:
                await make_stream(kinesis, "empty-calls", 1)

        anyio.run(seed)
        env = aws_env(kinesis=endpoint)
        samples: dict[str, list[float]] = {path: [] for path in PATHS}
        for _ in range(repeats):
            for path in PATHS:
                command = python_child(
                    "bench.calls", "--child", path, "--stream", "empty-calls", "--calls", str(calls)
                )
                result = run_child(command, env)
                samples[path].append(result.cpu / calls * 1e6)
    out = {path: median(values) for path, values in samples.items()}
    out["calls"] = calls
    print(f"  empty GetRecords CPU µs per call: {out}", file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", choices=PATHS, required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--calls", type=int, default=3_000)
    print(anyio.run(child, parser.parse_args()), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
