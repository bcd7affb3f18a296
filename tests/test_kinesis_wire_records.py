"""GetRecords entries in the wire form become Lambda's records without touching the payload."""

from __future__ import annotations

import base64
import datetime
import os
from typing import Any

import orjson
import pytest
from aws_kinesis_agg.aggregator import RecordAggregator
from sluiceway.pollers.kinesis_records import AGGREGATE_PREFIX, event_size, to_source_records
from sluiceway.router.batching import BatchBuilder

from tests.support.recorded import SHAPES

WHERE = {
    "shard_id": "shardId-000000000003",
    "stream_arn": "arn:aws:kinesis:us-east-1:123456789012:stream/s",
    "region": "us-east-1",
    "identity_arn": "arn:aws:iam::123456789012:role/sluiceway",
}
ARRIVAL = 1716000000.125


def wire(data: bytes, sequence: str = "49590", key: str = "k") -> dict[str, Any]:
    """An entry as GetRecords' JSON has it (what `FastCalls.call(..., wire=True)` returns)."""
    return orjson.loads(
        orjson.dumps(
            {
                "SequenceNumber": sequence,
                "ApproximateArrivalTimestamp": ARRIVAL,
                "Data": base64.b64encode(data).decode(),
                "PartitionKey": key,
            }
        )
    )


def botocore_form(entry: dict[str, Any]) -> dict[str, Any]:
    """The same entry as botocore's parser gives it: bytes and a datetime."""
    return {
        **entry,
        "Data": base64.b64decode(entry["Data"]),
        "ApproximateArrivalTimestamp": datetime.datetime.fromtimestamp(
            entry["ApproximateArrivalTimestamp"], datetime.UTC
        ),
    }


def keys(value: Any) -> Any:
    return [(k, keys(v)) for k, v in value.items()] if isinstance(value, dict) else None


@pytest.mark.parametrize("size", [0, 1, 100, 10_000, 1_000_000])
def test_data_is_the_wire_string_itself(size: int) -> None:
    payload = os.urandom(size)
    entry = wire(payload)
    ((record, checkpoint),) = to_source_records(entry, **WHERE)
    kinesis = record.event["kinesis"]
    assert kinesis["data"] is entry["Data"]  # shared, not decoded and encoded again
    assert base64.b64decode(kinesis["data"]) == payload
    assert kinesis["approximateArrivalTimestamp"] == ARRIVAL
    assert type(kinesis["approximateArrivalTimestamp"]) is float
    assert (record.item_id, checkpoint, record.arrival) == ("49590", "49590", ARRIVAL)
    assert keys(record.event) == keys(SHAPES["kinesis_record_from_s3_payload_native_key_order"])


def test_an_epoch_in_whole_seconds_is_still_a_float() -> None:
    entry = {**wire(b"x"), "ApproximateArrivalTimestamp": 1716000000}
    ((record, _),) = to_source_records(entry, **WHERE)
    assert type(record.event["kinesis"]["approximateArrivalTimestamp"]) is float


def test_botocores_form_gives_the_same_record() -> None:
    entry = wire(b"\x00\xff binary \xf3")
    ((ours, _),) = to_source_records(entry, **WHERE)
    ((theirs, _),) = to_source_records(botocore_form(entry), **WHERE)
    assert orjson.dumps(ours.event) == orjson.dumps(theirs.event)
    assert ours.size == theirs.size


def test_sizes_add_up_to_the_invocation_payload_exactly() -> None:
    entries = [wire(os.urandom(n), str(n)) for n in (0, 3, 100, 5000)]
    entries.append({**wire(b"x", "9"), "PartitionKey": 'quo"te \\ and \u00e9\n'})
    builder = BatchBuilder(max_records=100)
    for entry in entries:
        ((record, _),) = to_source_records(entry, **WHERE)
        assert builder.offer(record)
    payload = orjson.dumps({"Records": [r.event for r in builder.records]})
    assert builder.size == len(payload) + 1  # a comma after every record, the last one too


def test_a_size_counts_what_json_escapes_in_data() -> None:
    """Data is the service's base64; were it anything else, the size would still not be under."""
    ((record, _),) = to_source_records({**wire(b""), "Data": '"\\\n\x01'}, **WHERE)
    assert record.size == event_size(record.event) == len(orjson.dumps(record.event))
    assert record.size >= len(orjson.dumps({**record.event, "kinesis": {}})) + len('"\\\n\x01') * 2


def _aggregate(*items: tuple[str, bytes]) -> bytes:
    aggregator = RecordAggregator()
    for key, data in items:
        aggregator.add_user_record(key, data)
    _, _, blob = aggregator.clear_and_get().get_contents()
    return bytes(blob)


def test_every_aggregate_starts_with_the_prefix_checked_before_decoding() -> None:
    blob = _aggregate(("a", b"one"))
    assert base64.b64encode(blob).decode().startswith(AGGREGATE_PREFIX)


def test_wire_aggregates_are_split_when_asked() -> None:
    entry = wire(_aggregate(("a", b"one"), ("b", b"\x00two")), "77")
    pairs = to_source_records(entry, **WHERE, deaggregate_records=True)
    assert [(r.key, base64.b64decode(r.event["kinesis"]["data"])) for r, _ in pairs] == [
        ("a", b"one"),
        ("b", b"\x00two"),
    ]
    assert [(r.item_id, c) for r, c in pairs] == [("77:0", "77:0"), ("77:1", "77")]
    assert all(r.size == len(orjson.dumps(r.event)) for r, _ in pairs)
    # The same aggregate in botocore's form splits alike.
    again = to_source_records(botocore_form(entry), **WHERE, deaggregate_records=True)
    assert [orjson.dumps(r.event) for r, _ in again] == [orjson.dumps(r.event) for r, _ in pairs]


@pytest.mark.parametrize(
    "data",
    [
        base64.b64encode(b"plain, not an aggregate").decode(),
        AGGREGATE_PREFIX + "not base64 at all!",  # starts like one: decoded, found wanting
        base64.b64encode(_aggregate(("a", b"one"))[:-1]).decode(),  # digest does not check out
    ],
)
def test_other_records_stay_whole_with_deaggregation_on(data: str) -> None:
    entry = {**wire(b""), "Data": data}
    ((record, checkpoint),) = to_source_records(entry, **WHERE, deaggregate_records=True)
    assert record.event["kinesis"]["data"] is data
    assert (record.item_id, checkpoint) == ("49590", "49590")
    assert "aggregated" not in record.event["kinesis"]
