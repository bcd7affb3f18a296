"""The PyPI package async-kinesis with its defaults, run from bench/.venv-peers."""

from __future__ import annotations

import argparse
import asyncio
import time

from kinesis import Consumer

from bench import handlers
from bench.common import REGION, cpu_now, self_report


async def consume(args: argparse.Namespace) -> str:
    handlers.reset(args.expect, latency=args.latency)
    cpu_start = cpu_now()
    started = time.monotonic()
    deadline = started + args.timeout
    async with Consumer(
        stream_name=args.stream, endpoint_url=args.endpoint, region_name=REGION
    ) as consumer:
        while not handlers.DONE.is_set() and time.monotonic() < deadline:
            async for item in consumer:  # ends after the consumer's idle timeout (2 s)
                handlers.raw([item])
                if handlers.DONE.is_set() or time.monotonic() > deadline:
                    break
    if not handlers.DONE.is_set():
        raise SystemExit(f"only {handlers.count()} of {args.expect} records in {args.timeout}s")
    return self_report(
        handlers.count(), time.monotonic() - started, cpu_start, list(handlers.LATENCIES)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--latency", action="store_true")
    parser.add_argument("--timeout", type=float, default=240.0)
    print(asyncio.run(consume(parser.parse_args())), flush=True)


if __name__ == "__main__":
    main()
