"""The stream failure rules as tables: retry policy, bisect, failure records, windows, stores."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from sluiceway.core.stats import MappingStats
from sluiceway.handlers.invoker import Invoker
from sluiceway.handlers.results import FunctionError, InvokeFailure, Returned
from sluiceway.pollers.checkpoints import MemoryCheckpoints
from sluiceway.pollers.checkpoints_sqlite import SqliteCheckpoints
from sluiceway.pollers.windows import (
    MAX_STATE_BYTES,
    Window,
    WindowTracker,
    runs_by_window,
    state_too_large,
)
from sluiceway.router.bisect import bisect, failure_index
from sluiceway.router.failure_record import (
    RECORD_AGE_EXCEEDED,
    RETRY_ATTEMPTS_EXHAUSTED,
    FailureContext,
    mapping_uuid,
    s3_key,
    sqs_failure_record,
    stream_failure_record,
    with_payload,
)
from sluiceway.router.outcomes import BatchFailed, BatchSucceeded, PartialFailure
from sluiceway.router.records import SourceRecord
from sluiceway.router.retry_policy import Decision, FailurePolicy, backoff_seconds, decide
from sluiceway.router.runner import BatchRunner

from tests.support.recorded import SHAPES

ERROR = BatchFailed("boom", FunctionError("RuntimeError", "boom"))
THROTTLE = BatchFailed("throttled", InvokeFailure("throttled", throttled=True))
INVALID = BatchFailed("invalid partial batch response")
PARTIAL = PartialFailure(("s2",))

# (name, outcome, failed_at, size, retries, policy, expected)
TABLE: list[tuple[str, Any, int | None, int, int, FailurePolicy, Decision]] = [
    ("success", BatchSucceeded(), None, 5, 0, FailurePolicy(), Decision("done", 5)),
    ("forever", ERROR, None, 5, 99, FailurePolicy(), Decision("retry", 0, 100)),
    ("first-retry", ERROR, None, 5, 0, FailurePolicy(2), Decision("retry", 0, 1)),
    ("last-retry", ERROR, None, 5, 1, FailurePolicy(2), Decision("retry", 0, 2)),
    ("exhausted", ERROR, None, 5, 2, FailurePolicy(2), Decision("give_up", 0)),
    ("zero-retries", ERROR, None, 5, 0, FailurePolicy(0), Decision("give_up", 0)),
    ("throttle-not-an-attempt", THROTTLE, None, 5, 2, FailurePolicy(2), Decision("retry", 0, 2)),
    ("invalid-response-is-an-attempt", INVALID, None, 5, 2, FailurePolicy(2), Decision("give_up")),
    ("bisect", ERROR, None, 5, 0, FailurePolicy(0, bisect=True), Decision("bisect", 0)),
    ("bisect-single-retries", ERROR, None, 1, 0, FailurePolicy(1, bisect=True),
     Decision("retry", 0, 1)),
    ("bisect-single-exhausted", ERROR, None, 1, 1, FailurePolicy(1, bisect=True),
     Decision("give_up", 0)),
    ("partial-checkpoints-and-retries", PARTIAL, 2, 5, 0, FailurePolicy(3),
     Decision("retry", 2, 1)),
    ("partial-exhausted", PARTIAL, 2, 5, 3, FailurePolicy(3), Decision("give_up", 2)),
    ("partial-bisect-splits-at-sequence", PARTIAL, 2, 5, 3, FailurePolicy(3, bisect=True),
     Decision("split", 2)),
    ("partial-bisect-first-failed", PARTIAL, 0, 5, 0, FailurePolicy(3, bisect=True),
     Decision("bisect", 0)),
    ("partial-bisect-single", PARTIAL, 0, 1, 0, FailurePolicy(0, bisect=True),
     Decision("give_up", 0)),
]


@pytest.mark.parametrize(
    ("outcome", "failed_at", "size", "retries", "policy", "expected"),
    [case[1:] for case in TABLE],
    ids=[case[0] for case in TABLE],
)
def test_decide(
    outcome: Any, failed_at: int | None, size: int, retries: int, policy: FailurePolicy,
    expected: Decision,
) -> None:
    assert decide(outcome, failed_at, size, retries, policy) == expected


@pytest.mark.parametrize(
    ("max_age", "age", "expired"),
    [(-1, 10**7, False), (60, 59, False), (60, 61, True), (604800, 604801, True)],
)
def test_record_age(max_age: int, age: float, expired: bool) -> None:
    assert FailurePolicy(maximum_record_age_seconds=max_age).expired(1000.0, 1000.0 + age) is expired


def test_backoff_grows_and_is_capped() -> None:
    waits = [backoff_seconds(n, initial=0.5, maximum=4) for n in range(1, 10)]
    assert 0.5 <= waits[0] <= 1.0
    assert all(w <= 4 for w in waits) and waits[-1] == 4


@pytest.mark.parametrize(
    ("size", "left", "right"), [(1, 0, 1), (2, 1, 1), (5, 2, 3), (8, 4, 4)]
)
def test_bisect_keeps_order(size: int, left: int, right: int) -> None:
    items = list(range(size))
    a, b = bisect(items)
    assert (len(a), len(b)) == (left, right) and a + b == items


@pytest.mark.parametrize(
    ("ids", "failed", "index"),
    [
        (["1", "2", "3"], ["3", "2"], 1),  # the lowest sequence number is the checkpoint
        (["1", "2", "2", "3"], ["2"], 1),  # KPL sub-records: the first of the aggregate
        (["1", "2"], ["1"], 0),
    ],
)
def test_failure_index(ids: list[str], failed: list[str], index: int) -> None:
    assert failure_index(ids, failed) == index


def test_failure_index_of_kpl_sub_records() -> None:
    ids = ["1", "2:0", "2:1", "2:2", "3"]
    aliases = [None, "2", "2", "2", None]
    assert failure_index(ids, ["2:1"], aliases) == 2  # one sub-record, by its own identity
    assert failure_index(ids, ["2"], aliases) == 1  # the aggregate: its first sub-record
    assert failure_index(ids, ["3", "2:2"], aliases) == 3


def kinesis_event(sequence: str) -> dict[str, Any]:
    return {"kinesis": {"sequenceNumber": sequence, "data": "e30="}, "eventSource": "aws:kinesis"}


def keys(value: Any) -> Any:
    """Key structure of a record, to compare with the recorded shapes."""
    if isinstance(value, dict):
        return {k: keys(v) for k, v in value.items()}
    return None


def ordered_keys(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [(k, ordered_keys(v)) for k, v in value.items()]
    return []


def test_function_error_record_matches_aws_key_for_key() -> None:
    context = FailureContext(RETRY_ATTEMPTS_EXHAUSTED, "arn:aws:lambda:us-east-1:1:function:f", 2,
                             "Unhandled")
    record = stream_failure_record(
        [kinesis_event("1"), kinesis_event("2")], [1657720081.0, 1657720082.5],
        shard_id="shardId-000000000000", stream_arn="arn:aws:kinesis:us-east-1:1:stream/s",
        context=context, now=1657720083.0,
    )
    assert ordered_keys(record) == ordered_keys(SHAPES["kinesis_onfailure_sqs_function_error"])
    info = record["KinesisBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"]) == ("1", "2", 2)
    assert info["approximateArrivalOfLastRecord"] == "2022-07-13T13:48:02.500Z"
    assert record["timestamp"] == "2022-07-13T13:48:03.000Z"
    assert record["responseContext"] == {
        "statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"
    }
    assert re.fullmatch(r"[0-9a-f-]{36}", record["requestContext"]["requestId"])


def test_age_record_has_no_response_context() -> None:
    context = FailureContext(RECORD_AGE_EXCEEDED, "arn", 0, invoked=False)
    record = stream_failure_record(
        [kinesis_event("1")], [0.0], shard_id="s", stream_arn="a", context=context, now=1.0
    )
    assert ordered_keys(record) == ordered_keys(SHAPES["kinesis_onfailure_record_age_exceeded"])
    assert record["requestContext"]["condition"] == "RecordAgeExceeded"


def test_dynamodb_record_and_s3_object_match_aws() -> None:
    event = {"eventSource": "aws:dynamodb", "dynamodb": {"SequenceNumber": "7"}}
    context = FailureContext(RETRY_ATTEMPTS_EXHAUSTED, "arn", 2, "Unhandled")
    record = stream_failure_record(
        [event], [1657720081.0], shard_id="s", stream_arn="a", context=context, now=1657720081.0
    )
    assert ordered_keys(record) == ordered_keys(SHAPES["ddb_onfailure_sqs"])
    assert record["DDBStreamBatchInfo"]["approximateArrivalOfFirstRecord"] == "2022-07-13T13:48:01Z"
    s3 = with_payload(record, [event])
    expected = SHAPES["ddb_onfailure_s3_object"]
    assert list(s3) == list(expected)
    assert json.loads(s3["payload"]) == {"Records": [event]}


def test_s3_key_layout_and_stable_mapping_uuid() -> None:
    assert mapping_uuid("clicks") == mapping_uuid("clicks") != mapping_uuid("orders")
    key = s3_key(mapping_uuid("clicks"), "shardId-000000000001", 1657720081.0)
    pattern = (
        rf"aws/lambda/{mapping_uuid('clicks')}/shardId-000000000001/2022/07/13/"
        r"2022-07-13T13\.48\.01-[0-9a-f-]{36}"
    )
    assert re.fullmatch(pattern, key)


def test_sqs_failure_record_carries_the_message() -> None:
    event = {"messageId": "m1", "body": "x",
             "attributes": {"ApproximateReceiveCount": "3", "SentTimestamp": "1657720081000"}}
    context = FailureContext(RETRY_ATTEMPTS_EXHAUSTED, "arn", 3, "Unhandled")
    record = sqs_failure_record(event, queue_arn="arn:q", context=context, now=1657720081.0)
    assert list(record) == [
        "requestContext", "responseContext", "version", "timestamp", "SQSBatchInfo", "payload"
    ]
    assert record["SQSBatchInfo"]["approximateReceiveCount"] == 3
    assert json.loads(record["payload"]) == {"Records": [event]}


def rec(arrival: float, sequence: str = "1") -> SourceRecord:
    return SourceRecord(event={}, item_id=sequence, size=1, arrival=arrival)


def test_windows_group_records_by_arrival() -> None:
    records = [rec(100.0), rec(119.9), rec(120.0), rec(125.0), rec(181.0)]
    runs = runs_by_window(records, 60)
    assert [len(r) for r in runs] == [2, 2, 1]
    tracker = WindowTracker(60)
    window = tracker.window_for(records[0])
    assert (window.start, window.end) == (60.0, 120.0)
    tracker.current = window
    assert not tracker.must_close_before(records[1]) and tracker.must_close_before(records[2])
    assert tracker.due(121.0, 1.0) and not tracker.due(120.5, 1.0)
    fields = Window(0.0, 60.0, {"n": 1}).event_fields("shard-1", "arn", final=True)
    assert fields == {
        "window": {"start": "1970-01-01T00:00:00Z", "end": "1970-01-01T00:01:00Z"},
        "state": {"n": 1}, "shardId": "shard-1", "eventSourceARN": "arn",
        "isFinalInvokeForWindow": True, "isWindowTerminatedEarly": False,
    }
    assert Window.loads(Window(1.0, 2.0, {"a": [1]}).dumps()) == Window(1.0, 2.0, {"a": [1]})
    assert state_too_large({"x": "a" * MAX_STATE_BYTES}) and not state_too_large({"x": 1})


@pytest.mark.anyio
async def test_window_state_is_kept_by_both_stores(tmp_path: Path) -> None:
    memory = MemoryCheckpoints()
    await memory.set_window("m|s", "shard-1", '{"state": 1}')
    assert await memory.get_window("m|s", "shard-1") == '{"state": 1}'
    await memory.set_window("m|s", "shard-1", None)
    assert await memory.get_window("m|s", "shard-1") is None
    path = tmp_path / "c.db"
    store = SqliteCheckpoints(path).open()
    await store.set("m|s", "shard-1", "42")
    await store.set_window("m|s", "shard-1", '{"n": 2}')
    await store.close()
    reopened = SqliteCheckpoints(path).open()
    assert await reopened.get_window("m|s", "shard-1") == '{"n": 2}'
    assert await reopened.get("m|s", "shard-1") == "42"
    await reopened.set_window("m|s", "shard-1", None)
    assert await reopened.get_window("m|s", "shard-1") is None
    await reopened.close()


class Answer(Invoker):
    def __init__(self, payload: Any) -> None:
        self.payload = payload

    async def invoke(self, event: dict[str, Any]) -> Returned:
        return Returned(self.payload)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("payload", "ok"),
    [({"state": {}}, True), ({"state": {"n": 1}, "batchItemFailures": []}, True),
     (None, False), ({}, False), ({"state": None}, False), ({"state": []}, False)],
)
async def test_a_windowed_response_without_state_fails(payload: Any, ok: bool) -> None:
    runner = BatchRunner(invoker=Answer(payload), stats=MappingStats("m", "kinesis"),
                         report_batch_item_failures=True)
    outcome, _ = await runner.invoke([rec(1.0)], {"state": {}}, require_state=True)
    assert isinstance(outcome, BatchSucceeded) is ok
