"""The emulators every consumer in a run shares, and the data put into them before it starts."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import orjson
from aiobotocore.session import get_session

from bench.common import REGION, ROOT
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


@contextlib.contextmanager
def ministack() -> Iterator[str]:
    path = ministack_path()
    if path is None:
        raise RuntimeError("ministack is not installed (make .venv-ministack/bin/ministack)")
    emulator = start_ministack(path)
    try:
        yield emulator.url
    finally:
        emulator.stop()


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
    emulator: Emulator = _start_listening("kinesalite", command, port, 20.0)
    try:
        yield emulator.url
    finally:
        emulator.stop()


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
