"""The stream example handler: reported failures by sequence number, a flaky record failing once,
a function error for `error: true`, on Kinesis and DynamoDB records alike."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from sluiceway.handlers.examples import streams


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    streams.reset()
    yield
    streams.reset()


def kinesis(sequence: str, **data: Any) -> dict[str, Any]:
    return {
        "eventID": f"shardId-000000000000:{sequence}",
        "eventSource": "aws:kinesis",
        "kinesis": {
            "sequenceNumber": sequence,
            "data": base64.b64encode(orjson.dumps(data)).decode(),
        },
    }


def dynamodb(sequence: str, event_name: str = "INSERT", **image: dict[str, Any]) -> dict[str, Any]:
    change: dict[str, Any] = {"SequenceNumber": sequence, "Keys": {"account": {"S": "a"}}}
    if image:
        change["NewImage"] = image
    return {
        "eventID": f"e-{sequence}",
        "eventName": event_name,
        "eventSource": "aws:dynamodb",
        "dynamodb": change,
    }


@pytest.mark.anyio
async def test_poison_is_reported_every_time_and_flaky_once() -> None:
    batch = {"Records": [kinesis("1", n=1), kinesis("2", poison=True), kinesis("3", flaky=True)]}
    first = await streams.handler(batch, None)
    assert first == {"batchItemFailures": [{"itemIdentifier": "2"}, {"itemIdentifier": "3"}]}
    again = await streams.handler(batch, None)
    assert again == {"batchItemFailures": [{"itemIdentifier": "2"}]}
    assert streams.snapshot() == {"processed": 3, "poison": 2, "flaky": 1}
    assert not streams._FAILED_FLAKY  # a flaky record that went through is forgotten


@pytest.mark.anyio
async def test_dynamodb_records_are_read_from_the_new_image() -> None:
    batch = {
        "Records": [
            dynamodb("10", balance={"N": "5"}, poison={"BOOL": True}),
            dynamodb("11", "MODIFY", balance={"N": "2.5"}, flaky={"BOOL": True}),
            dynamodb("12", "REMOVE"),
        ]
    }
    result = await streams.handler(batch, None)
    assert result == {"batchItemFailures": [{"itemIdentifier": "10"}, {"itemIdentifier": "11"}]}


@pytest.mark.anyio
async def test_error_raises_a_function_error() -> None:
    with pytest.raises(streams.BadRecord):
        await streams.handler({"Records": [dynamodb("20", error={"BOOL": True})]}, None)


@pytest.mark.anyio
async def test_work_takes_its_time_within_a_bound() -> None:
    started = time.monotonic()
    await streams.handler({"Records": [kinesis("1", work_ms=50), kinesis("2", work_ms="x")]}, None)
    assert 0.04 < time.monotonic() - started < 0.5
    assert streams.MAX_WORK_SECONDS <= 1.0


def test_data_that_is_not_json_carries_no_flags() -> None:
    record = kinesis("1")
    record["kinesis"]["data"] = base64.b64encode(b"not json").decode()
    assert streams._fields(record) == {}
