"""Pure stream bookkeeping: lanes by key, the finished prefix, lineage, KPL de-aggregation."""

from __future__ import annotations

import base64
import hashlib

from aws_kinesis_agg.aggregator import RecordAggregator
from sluiceway.pollers import positions
from sluiceway.pollers.checkpoints import SHARD_END
from sluiceway.pollers.kinesis_agg import MAGIC, deaggregate
from sluiceway.pollers.kinesis_records import to_source_records
from sluiceway.pollers.lanes import ShardProgress, lane_for
from sluiceway.pollers.shards import TRIM_HORIZON, Lineage, Shard, StartPosition
from sluiceway.router.records import SourceRecord


def test_lane_is_stable_and_in_range() -> None:
    lanes = {lane_for(f"key-{i}", 4) for i in range(100)}
    assert lanes == {0, 1, 2, 3}
    assert lane_for("abc", 4) == lane_for("abc", 4) == 891568578 % 4  # crc32, not hash()
    assert lane_for("abc", 1) == 0 and lane_for(None, 4) == 0


def test_checkpoint_moves_only_over_the_finished_prefix() -> None:
    progress = ShardProgress()
    positions = [progress.add(str(seq)) for seq in range(1, 7)]
    assert progress.finish([positions[2], positions[3]]) is None  # 3 and 4 done, 1 not
    assert progress.finish([positions[0]]) == "1"
    assert progress.finish([positions[1]]) == "4"  # 2 closes the gap up to 4
    assert progress.outstanding == 2
    assert progress.finish([positions[5], positions[4]]) == "6"
    assert progress.outstanding == 0 and progress.checkpoint == "6"


def test_checkpoint_inside_an_aggregate_names_the_sub_record() -> None:
    progress = ShardProgress()
    first = progress.add("10:0")
    second = progress.add("10:1")
    last = progress.add("10")  # the last sub-record finishes the whole aggregate
    assert progress.finish([second]) is None
    assert progress.finish([first]) == "10:1"
    assert progress.finish([last]) == "10"
    assert progress.last_read == "10"


def test_extended_sequence_numbers() -> None:
    assert positions.extended("49590", 3) == "49590:3"
    assert positions.split("49590:3") == ("49590", 3)
    assert positions.split("49590") == ("49590", None)
    assert positions.split("49590:x") == ("49590:x", None)


def test_resuming_from_a_checkpoint() -> None:
    assert StartPosition.resume("42") == StartPosition.after("42")
    assert StartPosition.after("42").finished is None
    inside = StartPosition.resume("42:2")
    assert (inside.kind, inside.sequence) == ("AT_SEQUENCE_NUMBER", "42")
    assert inside.finished == positions.FinishedSubRecords("42", 2)


def test_finished_sub_records_are_dropped_and_nothing_else() -> None:
    def page(*ids: str) -> list[tuple[SourceRecord, str]]:
        return [(SourceRecord(event={}, item_id=i, size=1), i) for i in ids]

    finished = positions.FinishedSubRecords("42", 1)
    kept = finished.drop(page("42:0", "42:1", "42:2", "42:3", "43"))
    assert [r.item_id for r, _ in kept] == ["42:2", "42:3", "43"]
    # Read without de-aggregation, the aggregate is one record: delivered again, whole.
    assert [r.item_id for r, _ in finished.drop(page("42", "43"))] == ["42", "43"]
    assert [r.item_id for r, _ in finished.drop(page("43"))] == ["43"]


def test_child_starts_only_after_every_parent_is_finished() -> None:
    lineage = Lineage(TRIM_HORIZON)
    shards = [
        Shard("p1", closed=True),
        Shard("p2", closed=True),
        Shard("child", ("p1", "p2")),
    ]
    started = [s.shard_id for s, _ in lineage.plan(shards, {})]
    assert started == ["p1", "p2"]
    lineage.mark_finished("p1")
    assert lineage.plan(shards, {}) == []
    lineage.mark_finished("p2")
    assert [(s.shard_id, p) for s, p in lineage.plan(shards, {})] == [("child", TRIM_HORIZON)]


def test_stored_checkpoint_wins_and_shard_end_releases_children() -> None:
    lineage = Lineage(StartPosition("LATEST"))
    shards = [Shard("p", closed=True), Shard("c", ("p",)), Shard("other")]
    plan = dict((s.shard_id, p) for s, p in lineage.plan(shards, {"p": SHARD_END, "other": "42"}))
    # The parent was read before: its child starts at TRIM_HORIZON, not LATEST.
    assert plan == {"c": TRIM_HORIZON, "other": StartPosition.after("42")}
    inside = Lineage(TRIM_HORIZON).plan([Shard("s")], {"s": "42:3"})
    assert [p for _, p in inside] == [StartPosition.resume("42:3")]


def test_latest_passes_over_shards_closed_before_the_mapping_started() -> None:
    lineage = Lineage(StartPosition("LATEST"))
    shards = [Shard("old", closed=True), Shard("new", ("old",))]
    assert [(s.shard_id, p.kind) for s, p in lineage.plan(shards, {})] == [("new", "LATEST")]


def test_missing_parent_counts_as_finished() -> None:
    lineage = Lineage(TRIM_HORIZON)
    assert [s.shard_id for s, _ in lineage.plan([Shard("c", ("gone",))], {})] == ["c"]


# ---------------------------------------------------------------- KPL aggregation


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def aggregate(keys: list[str], records: list[tuple[int, bytes]]) -> bytes:
    """A KPL aggregated record built by hand from the protobuf wire format."""
    body = b"".join(_field(1, k.encode()) for k in keys)
    for key_index, data in records:
        body += _field(3, _field(1, key_index) + _field(3, data))
    return MAGIC + body + hashlib.md5(body).digest()


def test_deaggregates_a_hand_built_kpl_record() -> None:
    blob = aggregate(["a", "b"], [(0, b"one"), (1, b"two"), (0, b"x" * 300)])
    parts = deaggregate(blob)
    assert parts is not None
    assert [(p.partition_key, p.data) for p in parts] == [
        ("a", b"one"),
        ("b", b"two"),
        ("a", b"x" * 300),
    ]
    assert deaggregate(b"plain") is None
    assert deaggregate(blob[:-1] + b"\x00") is None  # digest mismatch: deliver as is


def test_explicit_hash_keys_are_read() -> None:
    aggregator = RecordAggregator()
    aggregator.add_user_record("a", b"one", explicit_hash_key="12345")
    aggregator.add_user_record("b", b"two")
    _, _, blob = aggregator.clear_and_get().get_contents()
    parts = deaggregate(blob)
    assert parts is not None
    assert [(p.partition_key, p.data, p.explicit_hash_key) for p in parts] == [
        ("a", b"one", "12345"),
        ("b", b"two", None),
    ]


RAW = {
    "SequenceNumber": "7",
    "PartitionKey": "outer",
    "Data": aggregate(["a", "b"], [(0, b"one"), (1, b"two")]),
    "ApproximateArrivalTimestamp": 1.5,
}
WHERE = {"shard_id": "shardId-1", "stream_arn": "arn", "region": "r", "identity_arn": "role"}


def test_an_aggregated_record_is_one_record_by_default() -> None:
    ((record, checkpoint),) = to_source_records(RAW, **WHERE)
    assert record.event["kinesis"]["data"] == base64.b64encode(RAW["Data"]).decode()
    assert record.event["kinesis"]["partitionKey"] == "outer"
    assert record.event["eventID"] == "shardId-1:7"
    assert (record.item_id, record.alias, checkpoint) == ("7", None, "7")


def test_deaggregated_sub_records_have_their_own_identity() -> None:
    pairs = to_source_records(RAW, **WHERE, deaggregate_records=True)
    assert [(r.key, r.event["kinesis"]["data"]) for r, _ in pairs] == [
        ("a", "b25l"),
        ("b", "dHdv"),
    ]
    assert [(r.item_id, r.alias, c) for r, c in pairs] == [("7:0", "7", "7:0"), ("7:1", "7", "7")]
    assert [r.event["eventID"] for r, _ in pairs] == ["shardId-1:7:0", "shardId-1:7:1"]
    kinesis = pairs[1][0].event["kinesis"]
    assert (kinesis["sequenceNumber"], kinesis["subSequenceNumber"]) == ("7", 1)
    assert kinesis["aggregated"] is True
    # A record that is not an aggregate is unchanged with de-aggregation on.
    plain = {**RAW, "Data": b"plain"}
    ((record, checkpoint),) = to_source_records(plain, **WHERE, deaggregate_records=True)
    assert (record.item_id, checkpoint, record.event["eventID"]) == ("7", "7", "shardId-1:7")
    assert "subSequenceNumber" not in record.event["kinesis"]
