"""Kinesis mappings end to end through the production clients: moto for the basics, kinesalite
for resharding (moto's Kinesis mishandles splits)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from sluiceway.pollers.checkpoints import SHARD_END, MemoryCheckpoints

from tests.support import recording
from tests.support.recorded import SHAPES
from tests.support.sqs import eventually, running, settings_for
from tests.support.streams import (
    aws_client,
    make_stream,
    put,
    stream_mapping,
    wait_active,
)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("moto_url", "recorder")]



def seen_count(n: int) -> Any:
    return lambda: len(recording.SEEN) >= n


async def readers_started(service: Any, name: str = "k") -> None:
    """Wait until the mapping reads its shards (LATEST counts from then on)."""
    await eventually(lambda: service.registry.mappings[name].concurrency_target > 0)
    await anyio.sleep(0.5)


async def test_records_match_aws_key_for_key_in_shard_order() -> None:
    async with aws_client("kinesis") as kinesis:
        arn = await make_stream(kinesis, "shape", shards=2)
        items = [(f"key-{i % 5}", f"payload-{i}") for i in range(20)]
        await put(kinesis, arn, items)
        settings = settings_for({"k": stream_mapping(arn)})
        async with running(settings) as service:
            await eventually(seen_count(20))
            stats = service.registry.mappings["k"]
            assert stats.polled == 20 and stats.state == "Enabled"
            assert stats.iterator_age_ms is not None
    expected = SHAPES["kinesis_record_from_s3_payload_native_key_order"]
    record = recording.SEEN[0]
    assert list(record) == list(expected)
    assert list(record["kinesis"]) == list(expected["kinesis"])
    assert record["eventSource"] == "aws:kinesis" and record["eventName"] == "aws:kinesis:record"
    assert record["eventSourceARN"] == arn and record["awsRegion"] == "us-east-1"
    assert isinstance(record["kinesis"]["approximateArrivalTimestamp"], float)
    assert (
        record["eventID"]
        == f"{record['eventID'].split(':')[0]}:{record['kinesis']['sequenceNumber']}"
    )
    assert sorted(recording.kinesis_payloads()) == sorted(data for _, data in items)
    by_shard: dict[str, list[int]] = {}
    for r in recording.SEEN:
        by_shard.setdefault(r["eventID"].split(":")[0], []).append(
            int(r["kinesis"]["sequenceNumber"])
        )
    for sequences in by_shard.values():
        assert sequences == sorted(sequences)


async def test_latest_skips_what_came_before() -> None:
    async with aws_client("kinesis") as kinesis:
        arn = await make_stream(kinesis, "latest")
        await put(kinesis, arn, [("a", "old")])
        settings = settings_for({"k": stream_mapping(arn, starting_position="LATEST")})
        async with running(settings) as service:
            await readers_started(service)
            await put(kinesis, arn, [("a", "new-1"), ("a", "new-2")])
            await eventually(seen_count(2))
    assert recording.kinesis_payloads() == ["new-1", "new-2"]


async def test_at_timestamp_starts_at_the_given_time() -> None:
    async with aws_client("kinesis") as kinesis:
        arn = await make_stream(kinesis, "at-ts")
        await put(kinesis, arn, [("a", "before")])
        await anyio.sleep(1.1)
        start = time.time()
        await anyio.sleep(0.1)
        await put(kinesis, arn, [("a", "after-1"), ("a", "after-2")])
        fields = {"starting_position": "AT_TIMESTAMP", "starting_position_timestamp": start}
        async with running(settings_for({"k": stream_mapping(arn, **fields)})):
            await eventually(seen_count(2))
            await anyio.sleep(0.3)
    assert recording.kinesis_payloads() == ["after-1", "after-2"]


async def test_a_stored_checkpoint_wins_over_the_starting_position() -> None:
    async with aws_client("kinesis") as kinesis:
        arn = await make_stream(kinesis, "ckpt")
        sequences = await put(kinesis, arn, [("a", f"r{i}") for i in range(6)])
        shard = (await kinesis.list_shards(StreamName=arn.rsplit("/", 1)[1]))["Shards"][0]
        store = MemoryCheckpoints()
        await store.set(f"k|{arn}", shard["ShardId"], sequences[2])
        settings = settings_for({"k": stream_mapping(arn)})
        async with running(settings, checkpoints=store):
            await eventually(seen_count(3))
            await anyio.sleep(0.3)
        assert await store.get(f"k|{arn}", shard["ShardId"]) == sequences[-1]
    assert recording.kinesis_payloads() == ["r3", "r4", "r5"]


async def test_restart_resumes_from_sqlite_without_skipping(tmp_path: Path) -> None:
    db = str(tmp_path / "sluiceway.db")
    async with aws_client("kinesis") as kinesis:
        arn = await make_stream(kinesis, "restart")
        total = 60
        await put(kinesis, arn, [(f"k{i % 3}", f"r{i}") for i in range(total)])
        recording.BEHAVIOUR["sleep"] = 0.05
        settings = settings_for(
            {"k": stream_mapping(arn, batch_size=5)},
            SLUICEWAY_CHECKPOINTS__BACKEND="sqlite",
            SLUICEWAY_CHECKPOINTS__PATH=db,
        )
        async with running(settings):
            await eventually(seen_count(20))
        first_run = len(recording.SEEN)
        assert first_run < total
        async with running(settings):
            await eventually(
                lambda: set(recording.kinesis_payloads()) >= {f"r{i}" for i in range(total)}
            )
            await anyio.sleep(0.2)
    payloads = recording.kinesis_payloads()
    assert set(payloads) == {f"r{i}" for i in range(total)}
    duplicates = len(payloads) - total
    assert 0 <= duplicates <= 5  # at most the batch that was in flight
    # Second run resumed in order where the first left off.
    second = payloads[first_run:]
    assert second == sorted(second, key=lambda p: int(p[1:]))


async def test_order_per_key_holds_with_parallelization() -> None:
    async with aws_client("kinesis") as kinesis:
        arn = await make_stream(kinesis, "lanes")
        keys = [f"user-{k}" for k in range(8)]
        items = [(keys[i % 8], f"{keys[i % 8]}:{i // 8}") for i in range(80)]
        await put(kinesis, arn, items)
        recording.BEHAVIOUR["sleep"] = 0.05
        fields = {"parallelization_factor": 4, "batch_size": 3, "handler_threads": 4}
        settings = settings_for({"k": stream_mapping(arn, "track_concurrency", **fields)})
        async with running(settings) as service:
            await eventually(seen_count(80))
            assert service.registry.mappings["k"].concurrency_target == 4
    assert recording.BEHAVIOUR["max_concurrent"] >= 2
    per_key: dict[str, list[int]] = {}
    for payload in recording.kinesis_payloads():
        key, index = payload.split(":")
        per_key.setdefault(key, []).append(int(index))
    assert per_key == {key: list(range(10)) for key in keys}


async def test_failed_batch_is_retried_until_it_succeeds() -> None:
    async with aws_client("kinesis") as kinesis:
        arn = await make_stream(kinesis, "retry")
        await put(kinesis, arn, [("a", f"r{i}") for i in range(3)])
        recording.BEHAVIOUR["fail_batches"] = 2
        async with running(settings_for({"k": stream_mapping(arn)})) as service:
            await eventually(seen_count(9), timeout=20)
            stats = service.registry.mappings["k"]
            assert stats.errors == 2
    assert recording.kinesis_payloads() == ["r0", "r1", "r2"] * 3


# ---------------------------------------------------------------- kinesalite: resharding


@pytest.mark.usefixtures("kinesalite")
async def test_split_reads_the_parent_to_its_end_before_the_children() -> None:
    async with aws_client("kinesis") as kinesis:
        arn = await make_stream(kinesis, "split")
        stream = arn.rsplit("/", 1)[1]
        keys = [f"key-{k}" for k in range(6)]
        await put(kinesis, arn, [(k, f"{k}:before") for k in keys])
        store = MemoryCheckpoints()
        settings = settings_for({"k": stream_mapping(arn)})
        async with running(settings, checkpoints=store):
            await eventually(seen_count(6))
            parent = (await kinesis.list_shards(StreamName=stream))["Shards"][0]["ShardId"]
            await kinesis.split_shard(
                StreamName=stream, ShardToSplit=parent, NewStartingHashKey=str(2**127)
            )
            await put(kinesis, arn, [(k, f"{k}:late") for k in keys[:2]])  # may race the split
            await wait_active(kinesis, stream)
            await put(kinesis, arn, [(k, f"{k}:after") for k in keys])
            await eventually(seen_count(14))
            assert await store.get(f"k|{arn}", parent) == SHARD_END
    shard_of = [r["eventID"].split(":")[0] for r in recording.SEEN]
    last_parent = max(i for i, s in enumerate(shard_of) if s == parent)
    first_child = min(i for i, s in enumerate(shard_of) if s != parent)
    assert last_parent < first_child
    assert len(set(shard_of)) >= 2
    for key in keys:
        mine = [p.split(":")[1] for p in recording.kinesis_payloads() if p.startswith(f"{key}:")]
        assert mine[0] == "before" and mine[-1] == "after"
    assert len(recording.SEEN) == 14


@pytest.mark.usefixtures("kinesalite")
async def test_merge_reads_both_parents_to_their_end_before_the_child() -> None:
    async with aws_client("kinesis") as kinesis:
        arn = await make_stream(kinesis, "merge", shards=2)
        stream = arn.rsplit("/", 1)[1]
        keys = [f"key-{k}" for k in range(8)]
        await put(kinesis, arn, [(k, f"{k}:before") for k in keys])
        store = MemoryCheckpoints()
        settings = settings_for({"k": stream_mapping(arn, batch_size=3)})
        async with running(settings, checkpoints=store):
            await eventually(seen_count(8))
            parents = [s["ShardId"] for s in (await kinesis.list_shards(StreamName=stream))["Shards"]]
            await kinesis.merge_shards(
                StreamName=stream, ShardToMerge=parents[0], AdjacentShardToMerge=parents[1]
            )
            await wait_active(kinesis, stream)
            await put(kinesis, arn, [(k, f"{k}:after") for k in keys])
            await eventually(seen_count(16))
            for parent in parents:
                assert await store.get(f"k|{arn}", parent) == SHARD_END
    shard_of = [r["eventID"].split(":")[0] for r in recording.SEEN]
    last_parent = max(i for i, s in enumerate(shard_of) if s in parents)
    first_child = min(i for i, s in enumerate(shard_of) if s not in parents)
    assert last_parent < first_child
    for key in keys:
        mine = [p.split(":")[1] for p in recording.kinesis_payloads() if p.startswith(f"{key}:")]
        assert mine == ["before", "after"]
