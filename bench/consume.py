"""Sluiceway as a benchmark consumer: the real service, its own process, a no-op handler.

`python -m bench.consume sqs|kinesis --endpoint URL --source S [--source S ...] --expect N`
prints one JSON line about itself (records, seconds, CPU seconds since it began consuming).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import anyio
import anyio.to_thread

from bench import handlers
from bench.common import cpu_now, self_report


def mapping(kind: str, source: str, batch_size: int, window: int) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "source": source,
        "handler": "bench.handlers:noop",
        "batch_size": batch_size,
        "function_timeout": 60,
    }
    if window:
        fields["maximum_batching_window_in_seconds"] = window
    if kind == "kinesis":
        fields["starting_position"] = "TRIM_HORIZON"
    return fields


async def consume(args: argparse.Namespace) -> str:
    from tests.support.sqs import running, settings_for

    handlers.reset(args.expect, latency=args.latency)
    mappings = {
        f"m{i}": mapping(args.kind, source, args.batch_size, args.window)
        for i, source in enumerate(args.source)
    }
    with tempfile.TemporaryDirectory(prefix="bench-checkpoints-") as store_dir:
        top: dict[str, str] = {}
        if args.checkpoints == "sqlite":
            top = {
                "SLUICEWAY_CHECKPOINTS__BACKEND": "sqlite",
                "SLUICEWAY_CHECKPOINTS__PATH": f"{store_dir}/checkpoints.db",
            }
        settings = settings_for(mappings, **top)
        cpu_start = cpu_now()
        started = time.monotonic()
        async with running(settings):
            finished = await anyio.to_thread.run_sync(handlers.DONE.wait, args.timeout)
            seconds = time.monotonic() - started
            report = self_report(handlers.count(), seconds, cpu_start, list(handlers.LATENCIES))
    if not finished:
        raise SystemExit(f"only {handlers.count()} of {args.expect} records within {args.timeout}s")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["sqs", "kinesis"])
    parser.add_argument("--source", action="append", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--window", type=int, default=0)
    parser.add_argument("--latency", action="store_true")
    parser.add_argument("--timeout", type=float, default=240.0)
    parser.add_argument(
        "--checkpoints",
        choices=["memory", "sqlite"],
        default="memory",
        help="stream checkpoint store (sqlite: the service's default, in a fresh temporary file)",
    )
    args = parser.parse_args()
    print(anyio.run(consume, args), flush=True)


if __name__ == "__main__":
    main()
