"""Kinesis end to end: drain time and consumer CPU for one pre-filled stream, every consumer."""

from __future__ import annotations

import sys
from typing import Any

import anyio

from bench.common import PEERS_PYTHON, ChildRun, aws_env, median, python_child
from bench.emulators import client, fill_stream, kinesalite, make_stream, run_with_emulator


def consumers(
    stream: str, arn: str, endpoint: str, expect: int, batch_size: int
) -> dict[str, list[str]]:
    """Each consumer's command line; async-kinesis only when bench/.venv-peers has it."""
    out = {
        "sluiceway": python_child(
            "bench.consume",
            "kinesis",
            "--source",
            arn,
            "--expect",
            str(expect),
            "--batch-size",
            str(batch_size),
        ),
        "aiobotocore loop": python_child(
            "bench.peers.kinesis_loop", "--stream", stream, "--expect", str(expect)
        ),
    }
    if PEERS_PYTHON.exists():
        out["async-kinesis"] = python_child(
            "bench.peers.async_kinesis",
            "--stream",
            stream,
            "--endpoint",
            endpoint,
            "--expect",
            str(expect),
            python=PEERS_PYTHON,
        )
    return out


def summarise(runs: dict[str, list[ChildRun]]) -> dict[str, dict[str, float]]:
    return {
        name: {
            "seconds": median([r.seconds for r in rs]),
            "cpu_per_10k": median([r.cpu_per_10k for r in rs]),
            "rate": median([r.rate for r in rs]),
            "max_rss_mb": median([r.max_rss_mb for r in rs]),
            "emulator_share": median([r.emulator_share for r in rs]),
        }
        for name, rs in runs.items()
    }


def run(
    records: int = 100_000, shards: int = 4, repeats: int = 3, batch_size: int = 100
) -> dict[str, Any]:
    """All consumers drain the same stream, interleaved, `repeats` times each."""
    with kinesalite() as endpoint:
        stream = "bench-e2e"

        async def seed() -> str:
            async with client("kinesis", endpoint) as kinesis:
                arn = await make_stream(kinesis, stream, shards)
                await fill_stream(kinesis, stream, records)
                return arn

        arn = anyio.run(seed)
        env = aws_env(kinesis=endpoint)
        runs: dict[str, list[ChildRun]] = {}
        for attempt in range(repeats):
            for name, command in consumers(stream, arn, endpoint, records, batch_size).items():
                result = run_with_emulator(command, env, endpoint)
                runs.setdefault(name, []).append(result)
                print(
                    f"  kinesis e2e #{attempt + 1} {name}: {result.seconds:.2f} s, "
                    f"{result.cpu_per_10k:.2f} CPU-s/10k, emulator "
                    f"{result.emulator_share:.0%} of a core",
                    file=sys.stderr,
                )
    return {
        "records": records,
        "shards": shards,
        "batch_size": batch_size,
        "consumers": summarise(runs),
    }
