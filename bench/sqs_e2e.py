"""SQS end to end: messages/s and consumer CPU per 10,000 messages from a pre-filled queue."""

from __future__ import annotations

import itertools
import sys
from typing import Any

import anyio

from bench.common import NODE_MODULES, ChildRun, aws_env, python_child
from bench.emulators import client, fill_queue, make_queue, ministack, run_with_emulator
from bench.kinesis_e2e import summarise

_names = itertools.count()


def consumers(url: str, expect: int) -> dict[str, list[str]]:
    """Each consumer's command line; sqs-consumer only when bench/node_modules has it."""
    out = {
        "sluiceway": python_child("bench.consume", "sqs", "--source", url, "--expect", str(expect)),
        "aiobotocore loop": python_child(
            "bench.peers.sqs_loop", "--source", url, "--expect", str(expect)
        ),
    }
    if (NODE_MODULES / "sqs-consumer").exists():
        out["sqs-consumer"] = ["node", "bench/peers/sqs_consumer.js", url, str(expect), "0"]
    return out


def fresh_queue(endpoint: str, messages: int) -> str:
    async def seed() -> str:
        async with client("sqs", endpoint) as sqs:
            url = await make_queue(sqs, f"bench-{next(_names)}")
            await fill_queue(sqs, url, messages)
            return url

    return anyio.run(seed)


def run(messages: int = 2_000, repeats: int = 3) -> dict[str, Any]:
    """Each consumer drains its own queue of the same `messages`, interleaved, `repeats` times."""
    with ministack() as endpoint:
        env = aws_env(sqs=endpoint)
        runs: dict[str, list[ChildRun]] = {}
        for attempt in range(repeats):
            for name in consumers("", messages):
                url = fresh_queue(endpoint, messages)
                result = run_with_emulator(consumers(url, messages)[name], env, endpoint)
                runs.setdefault(name, []).append(result)
                print(
                    f"  sqs e2e #{attempt + 1} {name}: {result.rate:.0f} msg/s, "
                    f"{result.cpu_per_10k:.2f} CPU-s/10k, emulator "
                    f"{result.emulator_share:.0%} of a core",
                    file=sys.stderr,
                )
    return {"messages": messages, "consumers": summarise(runs)}
