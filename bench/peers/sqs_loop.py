"""The minimal SQS consumer: one aiobotocore receive → handler → delete loop, nothing else."""

from __future__ import annotations

import argparse
import time

import anyio
from aiobotocore.session import get_session

from bench import handlers
from bench.common import REGION, cpu_now, self_report


async def consume(args: argparse.Namespace) -> str:
    handlers.reset(args.expect, latency=args.latency)
    cpu_start = cpu_now()
    started = time.monotonic()
    deadline = started + args.timeout
    async with get_session().create_client("sqs", region_name=REGION) as sqs:
        while not handlers.DONE.is_set() and time.monotonic() < deadline:
            response = await sqs.receive_message(
                QueueUrl=args.source, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            messages = response.get("Messages") or []
            if not messages:
                continue
            handlers.raw([m["Body"] for m in messages])
            await sqs.delete_message_batch(
                QueueUrl=args.source,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ],
            )
    if not handlers.DONE.is_set():
        raise SystemExit(f"only {handlers.count()} of {args.expect} messages in {args.timeout}s")
    return self_report(
        handlers.count(), time.monotonic() - started, cpu_start, list(handlers.LATENCIES)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--latency", action="store_true")
    parser.add_argument("--timeout", type=float, default=240.0)
    print(anyio.run(consume, parser.parse_args()), flush=True)


if __name__ == "__main__":
    main()
