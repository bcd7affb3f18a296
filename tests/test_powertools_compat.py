"""Handlers written for Lambda with AWS Lambda Powertools run unchanged, end to end.

Events are built key for key like the SQS records AWS delivers (aws-recorded/shapes.json,
`sqs_standard_record_with_attrs` and `sqs_fifo_record`), invoked through PythonInvoker, and the
result interpreted with AWS's response rules.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any

import anyio
import pytest
from sluiceway.handlers.examples import audit, orders, powertools_orders
from sluiceway.handlers.invoker import PythonInvoker
from sluiceway.handlers.results import FunctionError
from sluiceway.router.outcomes import BatchFailed, BatchSucceeded, PartialFailure
from sluiceway.router.response import interpret

from tests.handlers_fixtures import powertools_fifo

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


QUEUE_ARN = "arn:aws:sqs:us-east-1:111111111111:orders"
ORDER_HANDLERS = [
    "sluiceway.handlers.examples.orders:handler",
    "sluiceway.handlers.examples.powertools_orders:handler",
]


def sqs_record(body: dict[str, Any], receive_count: int = 1, **fifo: str) -> dict[str, Any]:
    """An SQS record with exactly the keys Lambda delivers (FIFO attributes when given)."""
    text = json.dumps(body)
    attributes = {
        "ApproximateReceiveCount": str(receive_count),
        "SentTimestamp": "1545082649183",
        "SenderId": "AIDAIENQZJOLO23YVJ4VO",
        "ApproximateFirstReceiveTimestamp": "1545082649185",
    }
    if fifo:
        attributes |= {
            "SequenceNumber": fifo["sequence_number"],
            "MessageGroupId": fifo["group"],
            "MessageDeduplicationId": fifo["sequence_number"],
        }
    return {
        "messageId": str(uuid.uuid4()),
        "receiptHandle": f"AQEB{uuid.uuid4().hex}",
        "body": text,
        "attributes": attributes,
        "messageAttributes": {
            "Author": {
                "stringValue": "John Grisham",
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": "String",
            }
        },
        "md5OfMessageAttributes": "d25a6aea97eb8f585bfa92d314504a92",
        "md5OfBody": hashlib.md5(text.encode()).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": QUEUE_ARN,
        "awsRegion": "us-east-1",
    }


def ids(records: list[dict[str, Any]]) -> list[str]:
    return [r["messageId"] for r in records]


@pytest.fixture(autouse=True)
def fresh_counters() -> None:
    orders.reset()
    powertools_orders.reset()
    audit.reset()
    powertools_fifo.PROCESSED.clear()


@pytest.mark.parametrize("spec", ORDER_HANDLERS)
async def test_poison_messages_come_back_as_a_partial_failure(spec: str) -> None:
    records = [sqs_record({"order": 1}), sqs_record({"poison": True}), sqs_record({"order": 3})]
    result = await PythonInvoker(spec).invoke({"Records": records})
    outcome = interpret(result, ids(records), report_batch_item_failures=True)
    assert outcome == PartialFailure((records[1]["messageId"],))


@pytest.mark.parametrize("spec", ORDER_HANDLERS)
async def test_a_flaky_message_fails_on_its_first_delivery_only(spec: str) -> None:
    run = PythonInvoker(spec)
    flaky = sqs_record({"flaky": True}, receive_count=1)
    first = [flaky, sqs_record({"order": 2})]
    retry = [{**flaky, "attributes": {**flaky["attributes"], "ApproximateReceiveCount": "2"}}]
    first_outcome = interpret(await run.invoke({"Records": first}), ids(first), True)
    retry_outcome = interpret(await run.invoke({"Records": retry}), ids(retry), True)
    assert first_outcome == PartialFailure((flaky["messageId"],))
    assert retry_outcome == BatchSucceeded()


async def test_the_plain_and_powertools_handlers_count_the_same() -> None:
    records = [
        sqs_record({"order": 1}),
        sqs_record({"poison": True}),
        sqs_record({"flaky": True}),
        sqs_record({"order": 4}),
    ]
    for spec in ORDER_HANDLERS:
        await PythonInvoker(spec).invoke({"Records": records})
    expected = {"processed": 2, "poison": 1, "flaky": 1}
    assert orders.snapshot() == expected
    assert powertools_orders.snapshot() == expected


async def test_when_every_record_fails_powertools_raises_and_the_batch_fails() -> None:
    records = [sqs_record({"poison": True}), sqs_record({"poison": True})]
    result = await PythonInvoker(ORDER_HANDLERS[1]).invoke({"Records": records})
    assert isinstance(result, FunctionError)
    assert result.error_type == "BatchProcessingError"
    assert isinstance(interpret(result, ids(records), True), BatchFailed)


async def test_the_fifo_processor_stops_at_the_first_failure() -> None:
    records = [
        sqs_record({"n": n, "poison": n == 2}, group="g1", sequence_number=f"1868{n:016d}")
        for n in range(1, 5)
    ]
    spec = "tests.handlers_fixtures.powertools_fifo:handler"
    result = await PythonInvoker(spec).invoke({"Records": records})
    outcome = interpret(result, ids(records), report_batch_item_failures=True)
    assert outcome == PartialFailure(tuple(ids(records)[1:]))
    assert ids(records)[:1] == powertools_fifo.PROCESSED


async def test_concurrent_batches_keep_powertools_module_level_processor_correct(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Lambda never shares an environment between invocations; one thread at a time keeps
    Powertools' module-level `BatchProcessor` state to one batch, even while records wait on I/O."""
    record_handler = powertools_orders.record_handler

    def slow_record_handler(record: Any) -> None:
        time.sleep(0.001)
        record_handler(record)

    monkeypatch.setattr(powertools_orders, "record_handler", slow_record_handler)
    run = PythonInvoker(ORDER_HANDLERS[1])
    batches = [[sqs_record({"n": n, "poison": n == 3}) for n in range(8)] for _ in range(10)]
    outcomes: list[Any] = []

    async def invoke(records: list[dict[str, Any]]) -> None:
        outcomes.append(interpret(await run.invoke({"Records": records}), ids(records), True))

    async with anyio.create_task_group() as tg:
        for records in batches:
            tg.start_soon(invoke, records)
    assert sorted(outcomes, key=str) == sorted(
        (PartialFailure((records[3]["messageId"],)) for records in batches), key=str
    )


async def test_the_async_audit_handler_counts_records_by_source() -> None:
    records = [sqs_record({"order": 1}), sqs_record({"order": 2})]
    result = await PythonInvoker("sluiceway.handlers.examples.audit:handler").invoke({"Records": records})
    assert interpret(result, ids(records), True) == BatchSucceeded()
    assert audit.snapshot() == {"aws:sqs": 2}
