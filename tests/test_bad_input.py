"""Bad input end to end against moto, table-driven: misbehaving handlers, odd records, wrong
configuration. Each gets AWS's behaviour or a clear error, and no record is lost — handled, or
in the queue's DLQ. (Unit coverage of each case: test_invoker.py, test_response.py,
test_config.py.)"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from sluiceway.config import ConfigError, load_settings

from tests.support import recording
from tests.support.sqs import (
    drain,
    eventually,
    make_queue,
    running,
    send,
    settings_for,
    sqs_client,
)
from tests.support.streams import aws_client, make_stream, stream_mapping

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("moto_url", "recorder")]

BAD = "tests.handlers_fixtures.bad_handlers"


@pytest.mark.parametrize(
    ("handler", "lands_in_dlq"),
    [
        (f"{BAD}:raises", True),
        (f"{BAD}:too_slow", True),  # times out, its thread blocked
        (f"{BAD}:not_json", True),  # Runtime.MarshalError
        (f"{BAD}:huge", True),  # response over 6 MB
        (f"{BAD}:wrong_shape", True),  # with ReportBatchItemFailures: the whole batch failed
        ("tests.handlers_fixtures.broken_import:handler", True),  # cannot be imported
        (f"{BAD}:leaks", False),  # bounded leak: succeeds
    ],
)
async def test_misbehaving_handlers_lose_no_message(handler: str, lands_in_dlq: bool) -> None:
    async with sqs_client() as sqs:
        url, dlq = await make_queue(sqs, "bad-handler", visibility=1, dlq_after=2)
        bodies = [f"m{i}" for i in range(5)]
        await send(sqs, url, bodies)
        mapping = {
            "source": url,
            "handler": handler,
            "function_timeout": 0.5,
            "function_response_types": ["ReportBatchItemFailures"],
        }
        async with running(settings_for({"q": mapping})) as service:
            dead: list[dict[str, Any]] = []

            async def settled() -> bool:
                assert dlq is not None
                dead.extend(await drain(sqs, dlq))
                attrs = await sqs.get_queue_attributes(
                    QueueUrl=url,
                    AttributeNames=[
                        "ApproximateNumberOfMessages",
                        "ApproximateNumberOfMessagesNotVisible",
                    ],
                )
                left = sum(int(v) for v in attrs["Attributes"].values())
                return left == 0 and (not lands_in_dlq or len(dead) >= len(bodies))

            await eventually(settled, timeout=60, interval=0.3)
            assert service.registry.mappings["q"].state == "Enabled"
    assert sorted(m["Body"] for m in dead) == (sorted(bodies) if lands_in_dlq else [])


ODD_BODIES = [
    "not json {",
    "",  # SQS refuses empty bodies: sent as a single space below
    "\u00e9\u4e2d\U0001f600 unicode",
    "x" * (256 * 1024 - 1024),  # near the 256 KB message limit (attributes take the rest)
]


async def test_odd_sqs_records_arrive_unchanged() -> None:
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "odd")
        bodies = [b or " " for b in ODD_BODIES]
        for body in bodies:
            await sqs.send_message(
                QueueUrl=url,
                MessageBody=body,
                MessageAttributes={
                    "bin": {"DataType": "Binary", "BinaryValue": b"\x00\xff\x10"},
                    "odd.name-1_x": {"DataType": "Number.float", "StringValue": "1e3"},
                },
            )
        mapping = {"source": url, "handler": "tests.support.recording:record"}
        async with running(settings_for({"q": mapping})):
            await eventually(lambda: len(recording.SEEN) >= len(bodies), timeout=30)
    assert sorted(r["body"] for r in recording.SEEN) == sorted(bodies)
    attrs = recording.SEEN[0]["messageAttributes"]
    assert base64.b64decode(attrs["bin"]["binaryValue"]) == b"\x00\xff\x10"
    assert attrs["odd.name-1_x"]["stringValue"] == "1e3"


async def test_binary_and_large_kinesis_records_arrive_unchanged() -> None:
    payloads = [b"\x00\xff\xfe binary", b"{not json", b"y" * (1024 * 1024 - 64)]
    async with aws_client("kinesis") as kinesis:
        arn = await make_stream(kinesis, "odd-stream")
        for i, data in enumerate(payloads):
            await kinesis.put_record(
                StreamName=arn.rsplit("/", 1)[1], PartitionKey=f"k{i}", Data=data
            )
        async with running(settings_for({"k": stream_mapping(arn)})):
            await eventually(lambda: len(recording.SEEN) >= len(payloads), timeout=30)
    assert [base64.b64decode(r["kinesis"]["data"]) for r in recording.SEEN] == payloads


@pytest.mark.parametrize(
    ("variables", "named", "rule"),
    [
        (
            {"SLUICEWAY_CHECKPOINTS__BACKEND": "dynamodb"},
            "SLUICEWAY_CHECKPOINTS__TABLE",
            "lease table",
        ),
        (
            {"SLUICEWAY_CHECKPOINTS__LEASE_SECONDS": "0.2"},
            "SLUICEWAY_CHECKPOINTS__LEASE_SECONDS",
            "from 1 to 3600",
        ),
        (
            {"SLUICEWAY_CHECKPOINTS__TABLE": "a"},
            "SLUICEWAY_CHECKPOINTS__TABLE",
            "DynamoDB table name",
        ),
        ({"SLUICEWAY_CHECKPOINTS__BACKEND": "redis"}, "SLUICEWAY_CHECKPOINTS__BACKEND", "redis"),
    ],
)
def test_wrong_checkpoint_settings_name_the_variable(
    variables: dict[str, str], named: str, rule: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({"AWS_REGION": "us-east-1", **variables})
    assert named in str(raised.value) and rule in str(raised.value)
