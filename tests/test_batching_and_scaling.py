"""Pure router logic: batch limits, group splitting, concurrency scaling, retry classification."""

from __future__ import annotations

import anyio
import pytest
from botocore.exceptions import ClientError
from sluiceway.core.aws_retry import call_with_retry, is_retryable
from sluiceway.pollers.scaling import ConcurrencyScaler
from sluiceway.pollers.sqs_records import to_lambda_record
from sluiceway.router.batching import MAX_PAYLOAD_BYTES, BatchBuilder, split_by_key
from sluiceway.router.records import SourceRecord


def rec(item: str, size: int = 10, key: str | None = None) -> SourceRecord:
    return SourceRecord(event={"id": item}, item_id=item, size=size, key=key)


def test_batch_stops_at_batch_size() -> None:
    builder = BatchBuilder(max_records=3)
    assert [builder.offer(rec(str(i))) for i in range(4)] == [True, True, True, False]
    assert builder.full and len(builder) == 3


def test_batch_refuses_a_record_that_would_pass_six_megabytes() -> None:
    builder = BatchBuilder(max_records=10_000)
    assert builder.offer(rec("a", size=4 * 1024 * 1024))
    assert not builder.offer(rec("b", size=2 * 1024 * 1024))
    assert builder.offer(rec("c", size=1024))
    assert builder.size < MAX_PAYLOAD_BYTES


def test_a_single_oversized_record_still_forms_a_batch() -> None:
    builder = BatchBuilder(max_records=10)
    assert builder.offer(rec("huge", size=MAX_PAYLOAD_BYTES + 1))


def test_split_by_key_keeps_order_within_and_across_groups() -> None:
    records = [rec("a1", key="A"), rec("b1", key="B"), rec("a2", key="A"), rec("b2", key="B")]
    groups = split_by_key(records)
    assert [[r.item_id for r in g] for g in groups] == [["a1", "a2"], ["b1", "b2"]]


def test_scaler_starts_at_lambdas_floor_of_two_grows_with_backlog_and_sheds_when_idle() -> None:
    scaler = ConcurrencyScaler(maximum=4)
    assert scaler.target == 2
    assert scaler.backlog() and scaler.backlog()
    assert not scaler.backlog()
    assert scaler.target == 4
    scaler.idle()
    assert scaler.target == 3
    scaler.failing()
    assert scaler.target == 2
    scaler.idle()
    assert scaler.target == 2


def test_scaler_floor_never_exceeds_a_maximum_of_one() -> None:
    scaler = ConcurrencyScaler(maximum=1)
    assert scaler.target == 1
    assert not scaler.backlog()
    scaler.idle()
    assert scaler.target == 1


def _client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, "ReceiveMessage")


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (_client_error("ThrottlingException"), True),
        (_client_error("InternalError"), True),
        (ConnectionResetError(), True),
        (_client_error("AccessDenied"), False),
        (_client_error("ReceiptHandleIsInvalid"), False),
        (TypeError("bug"), False),
    ],
)
def test_retry_classification(error: BaseException, retryable: bool) -> None:
    assert is_retryable(error) is retryable


@pytest.mark.anyio
async def test_transient_errors_are_retried_until_the_call_succeeds() -> None:
    calls = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise _client_error("ServiceUnavailable")
        return "ok"

    assert await call_with_retry(flaky, max_wait=0.01) == "ok"
    assert len(calls) == 3


@pytest.mark.anyio
async def test_cancellation_is_never_retried() -> None:
    calls = []

    async def slow() -> None:
        calls.append(1)
        await anyio.sleep(10)

    with anyio.move_on_after(0.1):
        await call_with_retry(slow, retry_all=True)
    assert calls == [1]


def test_binary_message_attributes_are_base64_as_lambda_sends_them() -> None:
    message = {
        "MessageId": "m",
        "ReceiptHandle": "r",
        "Body": "b",
        "MD5OfBody": "x",
        "MD5OfMessageAttributes": "y",
        "Attributes": {"SentTimestamp": "1", "AWSTraceHeader": "Root=1-abc"},
        "MessageAttributes": {"Blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"}},
    }
    record = to_lambda_record(message, queue_arn="arn:aws:sqs:eu-west-1:1:q", region="eu-west-1", fifo=False)
    assert record["messageAttributes"]["Blob"] == {
        "binaryValue": "AAE=",
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": "Binary",
    }
    assert record["attributes"]["AWSTraceHeader"] == "Root=1-abc"
