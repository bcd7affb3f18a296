"""The emulators every consumer in a run shares, and the data put into them before it starts."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import orjson
from aiobotocore.session import get_session

from bench.common import REGION, ROOT, ChildRun, run_child
from tests.support.emulators import (
    Emulator,
    _free_port,
    _start_listening,
    kinesalite_path,
    ministack_path,
    start_ministack,
)

SHARD_LIMIT = 1024
"""kinesalite refuses more than 10 shards per account unless told otherwise."""
EMULATOR_BOUND = 0.85
"""An emulator busier than this share of a core while a consumer drains is the bottleneck."""

_PIDS: dict[str, int] = {}
"""Endpoint -> the emulator process serving it, for `emulator_cpu`."""


def emulator_cpu(endpoint: str) -> float:
    """CPU seconds the emulator at `endpoint` has used so far: every process of its group."""
    group = _PIDS.get(endpoint)
    if group is None:
        return float("nan")
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        if int(fields[2]) == group:  # pgrp; emulators start as their own group's leader
            ticks += sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def run_with_emulator(command: Sequence[str], env: dict[str, str], endpoint: str) -> ChildRun:
    """`run_child`, also noting how busy the emulator at `endpoint` was during the drain (it
    idles while the consumer starts up, so its CPU is divided by the drain's time)."""
    cpu = emulator_cpu(endpoint)
    result = run_child(command, env)
    result.emulator_share = (emulator_cpu(endpoint) - cpu) / max(result.seconds, 1e-3)
    return result


@contextlib.contextmanager
def _tracked(emulator: Emulator) -> Iterator[str]:
    _PIDS[emulator.url] = emulator.process.pid
    try:
        yield emulator.url
    finally:
        _PIDS.pop(emulator.url, None)
        emulator.stop()


@contextlib.contextmanager
def ministack() -> Iterator[str]:
    path = ministack_path()
    if path is None:
        raise RuntimeError("ministack is not installed (make .venv-ministack/bin/ministack)")
    with _tracked(start_ministack(path)) as url:
        yield url


@contextlib.contextmanager
def kinesalite() -> Iterator[str]:
    path = kinesalite_path()
    if path is None:
        raise RuntimeError("kinesalite is not installed (make node_modules/kinesalite/cli.js)")
    port = _free_port()
    command = [
        "node",
        str(path),
        "--port",
        str(port),
        "--shardLimit",
        str(SHARD_LIMIT),
        "--createStreamMs",
        "0",
        "--updateStreamMs",
        "0",
        "--deleteStreamMs",
        "0",
    ]
    with _tracked(_start_listening("kinesalite", command, port, 20.0)) as url:
        yield url


@contextlib.asynccontextmanager
async def client(service: str, endpoint: str) -> AsyncIterator[Any]:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    async with get_session().create_client(
        service, region_name=REGION, endpoint_url=endpoint
    ) as made:
        yield made


def payload(index: int, size: int) -> bytes:
    """A JSON record of about `size` bytes (async-kinesis decodes JSON by default)."""
    head = orjson.dumps({"i": index, "pad": ""})
    pad = max(0, size - len(head))
    return orjson.dumps({"i": index, "pad": "x" * pad})


async def make_stream(kinesis: Any, name: str, shards: int) -> str:
    await kinesis.create_stream(StreamName=name, ShardCount=shards)
    with anyio.fail_after(60):
        while True:
            summary = (await kinesis.describe_stream_summary(StreamName=name))[
                "StreamDescriptionSummary"
            ]
            if summary["StreamStatus"] == "ACTIVE":
                return str(summary["StreamARN"])
            await anyio.sleep(0.05)


async def fill_stream(kinesis: Any, name: str, count: int, size: int = 100) -> None:
    """Put `count` records spread over every shard by random-looking partition keys."""
    per_call = max(1, min(500, (4 * 1024 * 1024) // max(1, size + 64)))
    chunks = [range(s, min(count, s + per_call)) for s in range(0, count, per_call)]
    limiter = anyio.CapacityLimiter(4)

    async def put(chunk: range) -> None:
        async with limiter:
            entries = [{"Data": payload(i, size), "PartitionKey": f"k{i * 7919}"} for i in chunk]
            for _ in range(20):
                response = await kinesis.put_records(StreamName=name, Records=entries)
                if not response.get("FailedRecordCount"):
                    return
                entries = [
                    e for e, r in zip(entries, response["Records"], strict=True) if "ErrorCode" in r
                ]
                await anyio.sleep(0.2)
            raise RuntimeError("kinesalite kept refusing records")

    async with anyio.create_task_group() as tg:
        for chunk in chunks:
            tg.start_soon(put, chunk)


async def make_queue(sqs: Any, name: str) -> str:
    response = await sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "60"})
    return str(response["QueueUrl"])


async def fill_queue(sqs: Any, url: str, count: int, size: int = 100) -> None:
    """Send `count` messages, ten per call, a few calls at a time."""
    limiter = anyio.CapacityLimiter(8)

    async def send(start: int) -> None:
        async with limiter:
            entries = [
                {"Id": str(i), "MessageBody": payload(i, size).decode()}
                for i in range(start, min(count, start + 10))
            ]
            response = await sqs.send_message_batch(QueueUrl=url, Entries=entries)
            if response.get("Failed"):
                raise RuntimeError(f"send failed: {response['Failed'][:1]}")

    async with anyio.create_task_group() as tg:
        for start in range(0, count, 10):
            tg.start_soon(send, start)


__all__ = [
    "ROOT",
    "client",
    "fill_queue",
    "fill_stream",
    "kinesalite",
    "make_queue",
    "make_stream",
    "ministack",
]
