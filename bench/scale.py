"""Scale: one Sluiceway process with many shards and queues mapped and no records flowing.

Reports resident memory, idle CPU (a share of one core, over `idle_seconds`), the time until a
reader runs on every shard, and then the first record after the quiet spell: probes put one at a
time at random gaps, each on a random shard (quiet until then), put → handler start. kinesalite
takes several streams (64 shards each) for 512 shards.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from bench import handlers
from bench.common import ROOT, aws_env, cpu_now, percentile, python_child, run_child
from bench.consume import mapping
from bench.emulators import (
    client,
    emulator_cpu,
    kinesalite,
    make_queue,
    make_stream,
    ministack,
)

SHARDS_PER_STREAM = 64
PROBE_RATE = 5.0
"""Probes a second on average, each gap drawn from (1 ± 0.5) / rate (see bench/latency.py)."""


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _readers(service: Any) -> int:
    """Shard readers started so far (the poller's own table of them)."""
    return sum(len(getattr(p, "_readers", {})) for p in service.pollers.values())


async def child(args: argparse.Namespace) -> str:
    from tests.support.sqs import running, settings_for

    mappings = {f"s{i}": mapping("kinesis", arn, 100, 0) for i, arn in enumerate(args.stream)}
    if args.idle_poll_max is not None:
        for fields in mappings.values():
            fields["idle_poll_max_seconds"] = args.idle_poll_max
    mappings.update({f"q{i}": mapping("sqs", url, 10, 0) for i, url in enumerate(args.queue)})
    settings = settings_for(mappings)
    started = time.monotonic()
    deadline = started + args.timeout
    async with running(settings) as service:
        while _readers(service) < args.shards and time.monotonic() < deadline:  # noqa: ASYNC110
            await anyio.sleep(0.05)
        acquired = time.monotonic() - started
        readers = _readers(service)
        await anyio.sleep(args.settle)
        cpu_start, idle_start = cpu_now(), time.monotonic()
        await anyio.sleep(args.idle_seconds)
        idle_cpu = (cpu_now() - cpu_start) / (time.monotonic() - idle_start)
        rss = _rss_mb()
        latencies = await _probe(args.stream, args.probes) if args.probes else []
        report = {
            "records": 0,
            "seconds": acquired,
            "cpu": idle_cpu,
            "max_rss_mb": rss,
            "shards": readers,
            "queues": len(args.queue),
            "latencies": latencies,
        }
    return json.dumps(report)


async def _probe(arns: list[str], count: int) -> list[float]:
    """Put `count` probes, each on a random shard of a random stream; put → handler start."""
    handlers.reset(count, latency=True)
    spacing = random.Random(20261204)
    async with client("kinesis", _endpoint()) as kinesis:
        for i in range(count):
            began = time.monotonic()
            data = json.dumps({"i": i, "t": time.time()}).encode()
            await kinesis.put_record(
                StreamName=spacing.choice(arns).rsplit("/", 1)[-1],
                Data=data,
                PartitionKey="p",
                ExplicitHashKey=str(spacing.randrange(2**128)),
            )
            gap = spacing.uniform(0.5, 1.5) / PROBE_RATE
            await anyio.sleep(max(0.0, gap - (time.monotonic() - began)))
    with anyio.move_on_after(10):
        while handlers.count() < count:  # noqa: ASYNC110
            await anyio.sleep(0.05)
    return list(handlers.LATENCIES)


def _endpoint() -> str:
    return os.environ["AWS_ENDPOINT_URL_KINESIS"]


IDLE_POLL_ALTERNATIVE = 10.0
"""A second idle measurement with `idle_poll_max_seconds` at this value (the default until it
became Lambda's 1 s): quiet shards share the process's poll budget, each polled about every 10 s."""


def run(
    shards: int = 512, queues: int = 64, idle_seconds: float = 30.0, probes: int = 100
) -> dict[str, Any]:
    streams = max(1, shards // SHARDS_PER_STREAM)
    per_stream = shards // streams
    with kinesalite() as kinesis_url, ministack() as sqs_url:

        async def seed() -> tuple[list[str], list[str]]:
            async with client("kinesis", kinesis_url) as kinesis, client("sqs", sqs_url) as sqs:
                arns = [
                    await make_stream(kinesis, f"scale-{i}", per_stream) for i in range(streams)
                ]
                urls = [await make_queue(sqs, f"scale-{i}") for i in range(queues)]
                return arns, urls

        arns, urls = anyio.run(seed)
        args = ["--shards", str(per_stream * streams), "--idle-seconds", str(idle_seconds)]
        for arn in arns:
            args += ["--stream", arn]
        for url in urls:
            args += ["--queue", url]
        env = aws_env(sqs=sqs_url, kinesis=kinesis_url)
        emulator_before, began = emulator_cpu(kinesis_url), time.monotonic()
        result = run_child(
            python_child("bench.scale", "--child", *args, "--probes", str(probes)),
            env,
            timeout=idle_seconds + 240 + probes / PROBE_RATE,
        )
        emulator_share = (emulator_cpu(kinesis_url) - emulator_before) / (time.monotonic() - began)
        slower = run_child(
            python_child(
                "bench.scale", "--child", *args, "--idle-poll-max", str(IDLE_POLL_ALTERNATIVE)
            ),
            env,
            timeout=idle_seconds + 240,
        )
    out = {
        "shards": per_stream * streams,
        "streams": streams,
        "queues": queues,
        "seconds_to_acquire": result.seconds,
        "idle_cpu_share": result.cpu,
        "idle_poll_alternative_seconds": IDLE_POLL_ALTERNATIVE,
        "idle_cpu_share_alternative": slower.cpu,
        "first_record_p50_ms": percentile([x * 1000 for x in result.latencies], 50),
        "first_record_p99_ms": percentile([x * 1000 for x in result.latencies], 99),
        "probes": len(result.latencies),
        "kinesalite_share": emulator_share,
        "rss_mb": result.max_rss_mb,
        "idle_seconds": idle_seconds,
    }
    print(f"  scale: {out}", file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", action="store_true", required=True)
    parser.add_argument("--stream", action="append", default=[])
    parser.add_argument("--queue", action="append", default=[])
    parser.add_argument("--shards", type=int, required=True)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--idle-poll-max", type=float, default=None)
    parser.add_argument("--probes", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=180.0)
    print(anyio.run(child, parser.parse_args()), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
