"""Async utilities for stream integration tests: Kinesis streams, DynamoDB tables with streams."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from aiobotocore.session import get_session

from tests.support.sqs import unique


@contextlib.asynccontextmanager
async def aws_client(service: str) -> AsyncIterator[Any]:
    async with get_session().create_client(service, region_name="us-east-1") as client:
        yield client


async def make_stream(kinesis: Any, name: str, shards: int = 1) -> str:
    """Create a stream, wait until it is ACTIVE, return its ARN."""
    stream = unique(name)
    await kinesis.create_stream(StreamName=stream, ShardCount=shards)
    return await wait_active(kinesis, stream)


async def wait_active(kinesis: Any, stream: str) -> str:
    with anyio.fail_after(10):
        while True:
            summary = (await kinesis.describe_stream_summary(StreamName=stream))[
                "StreamDescriptionSummary"
            ]
            if summary["StreamStatus"] == "ACTIVE":
                return str(summary["StreamARN"])
            await anyio.sleep(0.05)


async def put(kinesis: Any, arn: str, items: list[tuple[str, str]]) -> list[str]:
    """Put (partition key, data) one at a time, in order; returns sequence numbers."""
    stream = arn.rsplit("/", 1)[1]
    out = []
    for key, data in items:
        response = await kinesis.put_record(StreamName=stream, PartitionKey=key, Data=data.encode())
        out.append(response["SequenceNumber"])
    return out


async def make_table(dynamodb: Any, name: str, view: str = "NEW_AND_OLD_IMAGES") -> tuple[str, str]:
    """A table keyed by `id` (S) with a stream; returns (table ARN, stream ARN)."""
    table = unique(name)
    response = await dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": view},
    )
    description = response["TableDescription"]
    return description["TableArn"], description["LatestStreamArn"]


def stream_mapping(source: str, handler: str = "record_stream", **fields: Any) -> dict[str, Any]:
    fields.setdefault("starting_position", "TRIM_HORIZON")
    return {"source": source, "handler": f"tests.support.recording:{handler}", **fields}


def stored_checkpoint(db: Path) -> str | None:
    """The one checkpoint a single-shard test left in a SQLite checkpoint file."""
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT checkpoint FROM checkpoints").fetchone()
    return None if row is None else str(row[0])
