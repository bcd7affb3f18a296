"""Powertools stream handlers run unchanged, in-process and in worker processes, with partial
failures honoured. Events are Lambda's Kinesis and DynamoDB Streams events, key for key."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from sluiceway.handlers.invoker import Invoker, PythonInvoker
from sluiceway.handlers.process_pool import ProcessPoolInvoker
from sluiceway.handlers.results import FunctionError
from sluiceway.handlers.worker import WorkerConfig
from sluiceway.router.outcomes import BatchFailed, PartialFailure
from sluiceway.router.response import interpret

pytestmark = pytest.mark.anyio

MODULE = "tests.handlers_fixtures.powertools_streams"
STREAM_ARN = "arn:aws:kinesis:us-east-1:111111111111:stream/clicks"
TABLE_STREAM_ARN = (
    "arn:aws:dynamodb:us-east-1:111111111111:table/users/stream/2024-01-01T00:00:00.000"
)


def kinesis_record(n: int, poison: bool = False) -> dict[str, Any]:
    sequence = f"4959030749{n:046d}"
    data = base64.b64encode(json.dumps({"n": n, "poison": poison}).encode()).decode()
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": f"user-{n}",
            "sequenceNumber": sequence,
            "data": data,
            "approximateArrivalTimestamp": 1545084650.987,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"shardId-000000000006:{sequence}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::111111111111:role/lambda-role",
        "awsRegion": "us-east-1",
        "eventSourceARN": STREAM_ARN,
    }


def dynamodb_record(n: int, poison: bool = False) -> dict[str, Any]:
    sequence = f"{n + 1}11100000000{n:010d}"
    image = {"id": {"S": f"user-{n}"}, "poison": {"BOOL": poison}}
    return {
        "eventID": f"c4ca4238a0b923820dcc509a6f75849{n}",
        "eventName": "MODIFY",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": 1704067200,
            "Keys": {"id": {"S": f"user-{n}"}},
            "NewImage": image,
            "OldImage": {"id": {"S": f"user-{n}"}, "poison": {"BOOL": False}},
            "SequenceNumber": sequence,
            "SizeBytes": 59,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
        "eventSourceARN": TABLE_STREAM_ARN,
    }


def kinesis_id(record: dict[str, Any]) -> str:
    return str(record["kinesis"]["sequenceNumber"])


def dynamodb_id(record: dict[str, Any]) -> str:
    return str(record["dynamodb"]["SequenceNumber"])


CASES = [
    ("kinesis_handler", kinesis_record, kinesis_id),
    ("kinesis_model_handler", kinesis_record, kinesis_id),
    ("kinesis_data_class_handler", kinesis_record, kinesis_id),
    ("dynamodb_handler", dynamodb_record, dynamodb_id),
    ("dynamodb_data_class_handler", dynamodb_record, dynamodb_id),
]


def python_invoker(handler: str) -> Invoker:
    return PythonInvoker(f"{MODULE}:{handler}")


@pytest.mark.parametrize(("handler", "make", "item_id"), CASES)
async def test_a_poison_record_comes_back_as_a_partial_failure(
    handler: str, make: Any, item_id: Any
) -> None:
    records = [make(1), make(2, poison=True), make(3)]
    result = await python_invoker(handler).invoke({"Records": records})
    outcome = interpret(result, [item_id(r) for r in records], True)
    assert outcome == PartialFailure((item_id(records[1]),))


@pytest.mark.parametrize(("handler", "make", "item_id"), CASES[:1] + CASES[3:4])
async def test_when_every_record_fails_the_batch_utility_fails_the_batch(
    handler: str, make: Any, item_id: Any
) -> None:
    records = [make(1, poison=True), make(2, poison=True)]
    result = await python_invoker(handler).invoke({"Records": records})
    assert isinstance(result, FunctionError) and result.error_type == "BatchProcessingError"
    assert isinstance(interpret(result, [item_id(r) for r in records], True), BatchFailed)


@pytest.mark.parametrize(("handler", "make", "item_id"), [CASES[1], CASES[3]])
async def test_powertools_handlers_run_unchanged_in_worker_processes(
    handler: str, make: Any, item_id: Any
) -> None:
    config = WorkerConfig(f"{MODULE}:{handler}", None, "clicks", 256, "us-east-1", "111111111111")
    invoker = ProcessPoolInvoker(config, function_timeout=10)
    try:
        records = [make(1), make(2, poison=True), make(3, poison=True)]
        result = await invoker.invoke({"Records": records})
    finally:
        await invoker.aclose()
    outcome = interpret(result, [item_id(r) for r in records], True)
    assert outcome == PartialFailure((item_id(records[1]), item_id(records[2])))
