"""Async helpers for SQS integration tests: queues, traffic, and a running service."""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import orjson
from aiobotocore.session import get_session
from sluiceway.app.service import Service
from sluiceway.config import load_settings
from sluiceway.config.settings import Settings

_names = itertools.count()


def unique(name: str) -> str:
    return f"{name}-{os.getpid()}-{next(_names)}"


@contextlib.asynccontextmanager
async def sqs_client() -> AsyncIterator[Any]:
    async with get_session().create_client("sqs", region_name="us-east-1") as client:
        yield client


async def make_queue(
    sqs: Any,
    name: str,
    *,
    fifo: bool = False,
    visibility: int = 30,
    dlq_after: int | None = None,
) -> tuple[str, str | None]:
    """Create a queue (and a DLQ with a redrive policy when `dlq_after` is set); return URLs."""
    suffix = ".fifo" if fifo else ""
    base = unique(name)
    attributes: dict[str, str] = {"VisibilityTimeout": str(visibility)}
    if fifo:
        attributes["FifoQueue"] = "true"
    dlq_url = None
    if dlq_after is not None:
        dlq_attrs = {"FifoQueue": "true"} if fifo else {}
        dlq_url = (await sqs.create_queue(QueueName=f"{base}-dlq{suffix}", Attributes=dlq_attrs))[
            "QueueUrl"
        ]
        dlq_arn = (await sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"]))[
            "Attributes"
        ]["QueueArn"]
        attributes["RedrivePolicy"] = orjson.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": dlq_after}
        ).decode()
    url = (await sqs.create_queue(QueueName=f"{base}{suffix}", Attributes=attributes))["QueueUrl"]
    return url, dlq_url


async def send(
    sqs: Any, url: str, bodies: list[str], *, group: str | None = None, **extra: Any
) -> list[str]:
    """Send bodies in order (batches of 10); returns message ids."""
    ids: list[str] = []
    for start in range(0, len(bodies), 10):
        entries = []
        for i, body in enumerate(bodies[start : start + 10]):
            entry: dict[str, Any] = {"Id": str(i), "MessageBody": body, **extra}
            if group is not None:
                entry["MessageGroupId"] = group
                entry["MessageDeduplicationId"] = f"{body}-{start + i}-{time.time_ns()}"
            entries.append(entry)
        response = await sqs.send_message_batch(QueueUrl=url, Entries=entries)
        assert not response.get("Failed"), response.get("Failed")
        ids.extend(
            e["MessageId"] for e in sorted(response["Successful"], key=lambda e: int(e["Id"]))
        )
    return ids


async def count_messages(sqs: Any, url: str) -> tuple[int, int]:
    """(visible, in flight) as the queue reports them."""
    attrs = (
        await sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


async def drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Receive (and delete) everything visible in a queue."""
    out: list[dict[str, Any]] = []
    while True:
        response = await sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            MessageSystemAttributeNames=["All"],
        )
        messages = response.get("Messages") or []
        if not messages:
            return out
        out.extend(messages)
        await sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ],
        )


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 20.0, interval: float = 0.05  # noqa: ASYNC109
) -> None:
    """Wait until `predicate` holds; fail the test with a clear message if it never does."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await anyio.sleep(interval)


def settings_for(mappings: dict[str, dict[str, Any]], **top: str) -> Settings:
    """Settings from the same SLUICEWAY_* variables a user would set."""
    env: dict[str, str] = {
        "AWS_REGION": "us-east-1",
        "SLUICEWAY_HTTP__ENABLED": "false",
        "SLUICEWAY_CHECKPOINTS__BACKEND": "memory",
    }
    env.update(top)
    for name, fields in mappings.items():
        for key, value in fields.items():
            variable = f"SLUICEWAY_MAPPINGS__{name.upper()}__{key.upper()}"
            env[variable] = value if isinstance(value, str) else orjson.dumps(value).decode()
    return load_settings(environ=env)


@contextlib.asynccontextmanager
async def running(settings: Settings, checkpoints: Any = None) -> AsyncIterator[Service]:
    """The service running in the background for the body of the `async with`.

    `checkpoints` lets a stream test keep its store across two runs.
    """
    service = Service(settings, handle_signals=False, checkpoints=checkpoints)
    async with anyio.create_task_group() as tg:
        await tg.start(service.run)
        try:
            yield service
        finally:
            service.stop()
