"""Pure stream bookkeeping: lanes by key, the finished prefix, lineage, KPL de-aggregation."""

from __future__ import annotations

import hashlib

from sluiceway.pollers.checkpoints import SHARD_END
from sluiceway.pollers.kinesis_agg import MAGIC, deaggregate
from sluiceway.pollers.kinesis_records import to_source_records
from sluiceway.pollers.lanes import ShardProgress, lane_for
from sluiceway.pollers.shards import TRIM_HORIZON, Lineage, Shard, StartPosition


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


def test_checkpoint_never_stops_inside_an_aggregate() -> None:
    progress = ShardProgress()
    first = progress.add("10", checkpointable=False)
    second = progress.add("10", checkpointable=True)
    assert progress.finish([first]) is None
    assert progress.finish([second]) == "10"


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


def test_aggregated_kinesis_record_becomes_sub_records() -> None:
    raw = {
        "SequenceNumber": "7",
        "PartitionKey": "outer",
        "Data": aggregate(["a", "b"], [(0, b"one"), (1, b"two")]),
        "ApproximateArrivalTimestamp": 1.5,
    }
    pairs = to_source_records(
        raw, shard_id="shardId-1", stream_arn="arn", region="r", identity_arn="role"
    )
    assert [(r.key, r.event["kinesis"]["data"], ok) for r, ok in pairs] == [
        ("a", "b25l", False),
        ("b", "dHdv", True),
    ]
    assert pairs[0][0].event["eventID"] == "shardId-1:7"
