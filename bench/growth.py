"""Cost growth: consumer CPU per record as batch size, record size and shard count grow.

Sluiceway and the minimal aiobotocore loop read the same kinesalite streams, one after the other;
each point is the median of `repeats` runs of each (`make bench`: 3; `--repeats` sets it).
"""

from __future__ import annotations

import sys
from typing import Any

import anyio

from bench import kinesis_e2e
from bench.common import ChildRun, aws_env, median, run_child
from bench.emulators import client, fill_stream, kinesalite, make_stream

BATCH_SIZES = (10, 100, 1000, 10000)
RECORD_SIZES = (100, 1_000, 10_000, 100_000, 1_000_000)
SHARD_COUNTS = (1, 4, 16, 64)
BYTES_PER_POINT = 20_000_000
"""Large records are fewer, so every point moves at most this much data."""


def _point(
    endpoint: str, stream: str, arn: str, records: int, batch_size: int, repeats: int
) -> dict[str, float]:
    env = aws_env(kinesis=endpoint)
    every = kinesis_e2e.consumers(stream, arn, endpoint, records, batch_size)
    commands = {name: every[name] for name in ("sluiceway", "aiobotocore loop")}
    runs: dict[str, list[ChildRun]] = {name: [] for name in commands}
    for _ in range(repeats):  # side by side, one after the other, so a busy spell hits both
        for name, command in commands.items():
            runs[name].append(run_child(command, env))
    return {name: median([r.cpu / r.records * 1e6 for r in done]) for name, done in runs.items()}


def run(records: int = 20_000, repeats: int = 1) -> dict[str, Any]:
    results: dict[str, Any] = {
        "records": records,
        "batch_size": {},
        "record_size": {},
        "shards": {},
    }
    with kinesalite() as endpoint:
        names = iter(range(1000))

        def stream(shards: int, count: int, size: int) -> tuple[str, str]:
            name = f"growth-{next(names)}"

            async def seed() -> str:
                async with client("kinesis", endpoint) as kinesis:
                    arn = await make_stream(kinesis, name, shards)
                    await fill_stream(kinesis, name, count, size)
                    return arn

            return name, anyio.run(seed)

        base, base_arn = stream(4, records, 100)
        for size in BATCH_SIZES:
            results["batch_size"][size] = _point(endpoint, base, base_arn, records, size, repeats)
            print(f"  growth batch {size}: {results['batch_size'][size]}", file=sys.stderr)
        for size in RECORD_SIZES:
            count = max(20, min(records, BYTES_PER_POINT // size))
            name, arn = (base, base_arn) if size == 100 else stream(4, count, size)
            results["record_size"][size] = _point(endpoint, name, arn, count, 100, repeats)
            print(f"  growth record {size} B: {results['record_size'][size]}", file=sys.stderr)
        for shards in SHARD_COUNTS:
            name, arn = (base, base_arn) if shards == 4 else stream(shards, records, 100)
            results["shards"][shards] = _point(endpoint, name, arn, records, 100, repeats)
            print(f"  growth shards {shards}: {results['shards'][shards]}", file=sys.stderr)
    return results
