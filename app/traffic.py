"""Sample traffic and the resources it goes to, shared by `sluiceway demo` and `sluiceway produce`.

Each mix is a pure function of a running index, so a run is reproducible and tests can say
exactly what was sent: orders for a standard queue (with pings that the orders filter drops,
flaky orders that fail once and poison orders that always fail), ledger entries for a FIFO queue
(grouped by account), clicks for a Kinesis stream (with heartbeats that the clicks filter drops)
and account changes for a DynamoDB table (inserts, updates and removes).

Creating is idempotent: a queue, stream, table or destination that already exists is kept as it
is, so the stack's init step and the producer may both ask for the same resources.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import orjson
from botocore.exceptions import ClientError
from sluiceway.config.sources import DestinationRef
from sluiceway.core.aws_retry import error_code

CREATE_TIMEOUT_SECONDS = 30.0
TABLE_KEY = "account"
"""The hash key of the tables the demo and the producer create."""


@dataclass(frozen=True)
class Sample:
    """One event of a mix: what it is (`label`) and what is sent (`body`)."""

    label: str
    body: dict[str, Any]


def work_ms(i: int) -> int:
    """Simulated handler work, 0-79 ms, spread evenly, so durations and concurrency show."""
    return (i * 37) % 80


def order(i: int, *, work: bool = False) -> Sample:
    """Orders for a standard queue: 1 in 10 a ping (not an order), some flaky, some poison."""
    if i % 10 == 9:
        return Sample("ping", {"type": "ping", "n": i})
    body: dict[str, Any] = {"type": "order", "id": i, "amount": round(9.5 + i, 2)}
    label = "order"
    if i % 25 == 3:
        body["poison"] = True
        label = "poison"
    elif i % 7 == 1:
        body["flaky"] = True
        label = "flaky"
    if work:
        body["work_ms"] = work_ms(i)
    return Sample(label, body)


def ledger_entry(i: int, *, poison_every: int = 100, work: bool = False) -> Sample:
    """Ledger entries for a FIFO queue, in four message groups (accounts); some flaky, a few poison.

    A poison entry holds its group until the queue moves it to the DLQ, as FIFO order requires.
    """
    body: dict[str, Any] = {"type": "order", "id": i, "account": f"acct-{i % 4}", "seq": i}
    label = "entry"
    if poison_every and i % poison_every == poison_every // 2:
        body["poison"] = True
        label = "poison"
    elif i % 11 == 4:
        body["flaky"] = True
        label = "flaky"
    if work:
        body["work_ms"] = work_ms(i)
    return Sample(label, body)


def click(i: int, *, failures: bool = True, work: bool = False) -> Sample:
    """Clicks for a Kinesis stream: 1 in 10 a heartbeat (not a click), some flaky, a few poison."""
    user = f"u{i % 5}"
    if i % 10 == 9:
        return Sample("heartbeat", {"type": "heartbeat", "user": user, "n": i})
    body: dict[str, Any] = {"type": "click", "page": f"/p/{i % 7}", "user": user, "n": i}
    label = "click"
    if failures and i % 50 == 3:
        body["poison"] = True
        label = "poison"
    elif failures and i % 7 == 1:
        body["flaky"] = True
        label = "flaky"
    if work:
        body["work_ms"] = work_ms(i)
    return Sample(label, body)


AccountOp = Literal["put", "update", "delete"]


@dataclass(frozen=True)
class AccountChange:
    """One write to the accounts table; its stream record is an INSERT, MODIFY or REMOVE."""

    label: str
    op: AccountOp
    account: str
    attributes: dict[str, Any] = field(default_factory=dict)
    """Plain values written with the item (put) or set on it (update)."""


def account_change(i: int, *, work: bool = False) -> AccountChange:
    """Each account is opened (INSERT), credited (MODIFY) and closed (REMOVE), in turn.

    Some accounts are flaky (each of their changes fails once) and a few poison: the handler raises
    on them (a function error, where the other mixes' poison is reported as a failed item).
    """
    n, step = divmod(i, 3)
    account = f"acct-{n}"
    flags: dict[str, Any] = {}
    label = {0: "insert", 1: "modify", 2: "remove"}[step]
    if step < 2 and n % 9 == 4:
        flags["error"] = True
        label = "poison"
    elif step < 2 and n % 5 == 2:
        flags["flaky"] = True
        label = "flaky"
    if work:
        flags["work_ms"] = work_ms(i)
    if step == 0:
        return AccountChange(label, "put", account, {"balance": 0, **flags})
    if step == 1:
        return AccountChange(label, "update", account, {"balance": 10 * (n + 1), **flags})
    return AccountChange(label, "delete", account)


def dynamodb_value(value: Any) -> dict[str, Any]:
    """A plain value in DynamoDB's attribute-value form (bool, number or string)."""
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float):
        return {"N": str(value)}
    return {"S": str(value)}


# ------------------------------------------------------------------------------------ creating


def _exists(exc: ClientError, *codes: str) -> bool:
    return error_code(exc) in codes


async def create_queue(
    sqs: Any, name: str, *, visibility_seconds: int, max_receives: int
) -> tuple[str, str]:
    """A queue (FIFO when the name ends in .fifo) with a DLQ through a redrive policy.

    Returns the queue's URL and its DLQ's; an existing queue is kept with its own attributes.
    """
    fifo = name.endswith(".fifo")
    base = name.removesuffix(".fifo")
    attributes = {"FifoQueue": "true"} if fifo else {}
    dlq_url = await _queue(sqs, f"{base}-dlq{'.fifo' if fifo else ''}", attributes)
    dlq_arn = (await sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"]))[
        "Attributes"
    ]["QueueArn"]
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receives}
    main = {
        **attributes,
        "VisibilityTimeout": str(visibility_seconds),
        "RedrivePolicy": orjson.dumps(redrive).decode(),
    }
    return await _queue(sqs, name, main), dlq_url


async def _queue(sqs: Any, name: str, attributes: dict[str, str]) -> str:
    try:
        return str((await sqs.create_queue(QueueName=name, Attributes=attributes))["QueueUrl"])
    except ClientError as exc:
        if not _exists(exc, "QueueAlreadyExists", "QueueNameExists"):
            raise
        return str((await sqs.get_queue_url(QueueName=name))["QueueUrl"])


async def create_stream(kinesis: Any, name: str, *, shards: int) -> str:
    """A Kinesis stream, once ACTIVE; returns its ARN."""
    try:
        await kinesis.create_stream(StreamName=name, ShardCount=shards)
    except ClientError as exc:
        if not _exists(exc, "ResourceInUseException"):
            raise
    with anyio.fail_after(CREATE_TIMEOUT_SECONDS):
        while True:
            summary = (await kinesis.describe_stream_summary(StreamName=name))[
                "StreamDescriptionSummary"
            ]
            if summary["StreamStatus"] == "ACTIVE":
                return str(summary["StreamARN"])
            await anyio.sleep(0.1)


async def create_table(dynamodb: Any, name: str) -> str:
    """A table keyed by `account` with a NEW_AND_OLD_IMAGES stream, once ACTIVE; returns its ARN."""
    try:
        await dynamodb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": TABLE_KEY, "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": TABLE_KEY, "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
    except ClientError as exc:
        if not _exists(exc, "ResourceInUseException"):
            raise
    with anyio.fail_after(CREATE_TIMEOUT_SECONDS):
        while True:
            table = (await dynamodb.describe_table(TableName=name))["Table"]
            if table["TableStatus"] == "ACTIVE":
                return str(table["TableArn"])
            await anyio.sleep(0.1)


async def create_destination(client: Any, ref: DestinationRef, region: str) -> None:
    """An on-failure destination of any kind, with `client` for its service (`destination_service`)
    in `region` (where an S3 bucket is made, since its ARN names no region)."""
    if ref.kind == "sqs":
        await _queue(client, ref.name, {})
    elif ref.kind == "sns":
        await client.create_topic(Name=ref.name)  # idempotent
    elif ref.kind == "s3":
        try:
            if region == "us-east-1":
                await client.create_bucket(Bucket=ref.name)
            else:
                await client.create_bucket(
                    Bucket=ref.name, CreateBucketConfiguration={"LocationConstraint": region}
                )
        except ClientError as exc:
            if not _exists(exc, "BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
    elif ref.name != "default":
        try:
            await client.create_event_bus(Name=ref.name)
        except ClientError as exc:
            if not _exists(exc, "ResourceAlreadyExistsException"):
                raise


def destination_service(ref: DestinationRef) -> str:
    """The AWS service a destination lives in (its client's name)."""
    return {"sqs": "sqs", "sns": "sns", "s3": "s3", "events": "events"}[ref.kind]
