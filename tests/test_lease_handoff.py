"""Graceful lease hand-off against moto's DynamoDB (and Kinesis): a steal marks the lease, the
owner finishes its batch, checkpoints and hands the lease over, and no path leaves a mark that
keeps a shard unread — the owner stopping as the mark lands, dying mid-hand-off, or renewing
without ever handing over (the stuck lease of awslabs/amazon-kinesis-client PR 1743)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from sluiceway.core.aws import AwsClients
from sluiceway.pollers.checkpoints_dynamodb import DynamoCheckpoints
from sluiceway.pollers.leases import Lease, LeaseTable, TableLeases
from sluiceway.pollers.shards import Shard

from tests.support import recording
from tests.support.sqs import eventually, running, settings_for, unique
from tests.support.streams import aws_client, make_stream, put, stream_mapping

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("moto_url", "recorder")]

SHARDS = [Shard("s1"), Shard("s2")]


def everything(checkpoints: dict[str, str | None]) -> set[str]:
    return set(checkpoints)


class Clock:
    """A monotonic clock the test moves, so expiry and hand-off timeouts need no sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def table() -> AsyncIterator[LeaseTable]:
    async with AwsClients("us-east-1") as clients:

        async def client() -> Any:
            return await clients.client("dynamodb")

        lease_table = LeaseTable(client, unique("handoff"))
        await lease_table.ensure()
        yield lease_table


async def owner_and_taker(
    table: LeaseTable, *, handoff_timeout: float = 30.0
) -> tuple[TableLeases, TableLeases, Clock, list[str]]:
    """`a` holds both shards; `b`, arriving, asks for one of them."""
    clock = Clock()
    a = TableLeases(table, "scope", "a", lease_seconds=3, clock=clock)
    b = TableLeases(
        table, "scope", "b", lease_seconds=3, clock=clock, handoff_timeout=handoff_timeout
    )
    asked: list[str] = []
    a.on_handoff = asked.append
    await a.sync(SHARDS, everything)
    assert a.held() == {"s1", "s2"}
    await b.sync(SHARDS, everything)
    assert b.held() == set()  # a steal takes nothing at once
    marked = [lease for lease in await table.list("scope") if lease.handoff_to == "b"]
    assert len(marked) == 1 and marked[0].owner == "a"
    return a, b, clock, asked


async def lease_of(table: LeaseTable, shard_id: str) -> Lease:
    lease = await table.get("scope", shard_id)
    assert lease is not None
    return lease


async def test_the_owner_checkpoints_its_last_batch_then_hands_the_lease_to_the_taker(
    table: LeaseTable,
) -> None:
    a, b, clock, asked = await owner_and_taker(table)
    [wanted] = [lease.shard_id for lease in await table.list("scope") if lease.handoff_to]
    assert await a.renew() == set()  # the mark moved the counter: still a's, and seen
    assert asked == [wanted] and a.held() == {"s1", "s2"} - {wanted}
    assert a.handing_off() == {wanted}
    assert await a.write(wanted, checkpoint="42")  # the batch in flight still checkpoints
    await a.release(wanted)
    handed = await lease_of(table, wanted)
    assert (handed.owner, handed.handoff_to, handed.checkpoint) == ("b", None, "42")
    clock.now += 0.5
    await b.sync(SHARDS, everything)
    assert b.held() == {wanted}
    assert (await lease_of(table, wanted)).owner == "b"
    clock.now += 0.5
    await a.sync(SHARDS, everything)  # a does not ask for it back: one each is fair
    assert a.held() == {"s1", "s2"} - {wanted} and a.handing_off() == set()
    assert [lease.handoff_to for lease in await table.list("scope")] == [None, None]


async def test_a_hand_off_asked_for_just_as_the_owner_stops_is_completed_by_its_release(
    table: LeaseTable,
) -> None:
    """The owner never renewed after the mark: its release finds the counter moved, sees the
    mark, and hands the lease over instead of leaving it to expire."""
    a, b, _, _ = await owner_and_taker(table)
    [wanted] = [lease.shard_id for lease in await table.list("scope") if lease.handoff_to]
    started = time.monotonic()
    await a.release_all()
    assert time.monotonic() - started < 2
    owners = {
        lease.shard_id: (lease.owner, lease.handoff_to) for lease in await table.list("scope")
    }
    other = ({"s1", "s2"} - {wanted}).pop()
    assert owners == {wanted: ("b", None), other: (None, None)}
    await b.sync(SHARDS, everything)
    assert b.held() == {"s1", "s2"}


async def test_an_owner_that_dies_mid_hand_off_loses_the_lease_by_expiry(
    table: LeaseTable,
) -> None:
    a, b, clock, _ = await owner_and_taker(table, handoff_timeout=60)
    clock.now += 1
    await b.sync(SHARDS, everything)
    assert b.held() == set()  # the owner may still be finishing its batch
    clock.now += 3  # a's counters stood still for a whole lease
    await b.sync(SHARDS, everything)
    assert b.held() == {"s1", "s2"}
    assert [lease.handoff_to for lease in await table.list("scope")] == [None, None]
    assert await a.renew() == {"s1", "s2"}  # were a alive after all, it would find out


async def test_an_owner_that_renews_but_never_hands_over_is_taken_over_after_the_timeout(
    table: LeaseTable,
) -> None:
    """awslabs/amazon-kinesis-client PR 1743: the old owner keeps renewing a marked lease
    whose consumer is gone; the taker waits `handoff_timeout`, then takes it."""
    a, b, clock, _ = await owner_and_taker(table, handoff_timeout=5)
    [wanted] = [lease.shard_id for lease in await table.list("scope") if lease.handoff_to]
    lost: list[str] = []
    a.on_lost = lost.append
    for _ in range(4):
        clock.now += 1
        assert await a.renew() == set()
        await b.sync(SHARDS, everything)
        assert b.held() == set()
    clock.now += 1.5
    await b.sync(SHARDS, everything)
    assert b.held() == {wanted}
    assert await a.renew() == {wanted} and lost == [wanted]


async def test_a_taker_that_stops_takes_its_request_back(table: LeaseTable) -> None:
    a, b, _, _ = await owner_and_taker(table)
    await b.release_all()
    assert [lease.handoff_to for lease in await table.list("scope")] == [None, None]
    assert await a.renew() == set()
    assert a.held() == {"s1", "s2"}


# ---------------------------------------------------------------------- a running replica


async def test_a_running_replica_hands_a_lease_over_only_after_its_batch_in_flight() -> None:
    """The mark lands while a 0.5 s batch is in the handler: that batch finishes and is
    checkpointed, no new one starts, and only then does the lease change hands."""
    name = unique("handoff-run")
    recording.BEHAVIOUR["sleep"] = 0.5
    async with aws_client("kinesis") as kinesis:
        arn = await make_stream(kinesis, "handoff-run")
        await put(kinesis, arn, [(f"k{i % 3}", f"r{i}") for i in range(40)])
        settings = settings_for(
            {"k": stream_mapping(arn, "record_timed", batch_size=2)},
            SLUICEWAY_CHECKPOINTS__BACKEND="dynamodb",
            SLUICEWAY_CHECKPOINTS__TABLE=name,
            SLUICEWAY_CHECKPOINTS__LEASE_SECONDS="3",
        )
        store = DynamoCheckpoints(name, "us-east-1", lease_seconds=3)
        scope = f"k|{arn}"
        async with running(settings, checkpoints=store):
            await eventually(lambda: len(recording.SPANS) >= 2, timeout=30)
            lease = await _mark(store, scope, "taker")
            asked_at = time.time()

            async def handed_over() -> bool:
                seen = await store.table.get(scope, lease.shard_id)
                return seen is not None and seen.owner == "taker"

            await eventually(handed_over, timeout=10, interval=0.02)
            handed_at = time.time()
            spans = list(recording.SPANS)
            await anyio.sleep(1)
            assert spans == recording.SPANS  # no batch after the hand-over
        after = await store.table.get(scope, lease.shard_id)
        await store.close()
    assert after is not None and after.handoff_to is None
    last = max(int(seq) for _, _, seqs in spans for seq in seqs)
    assert int(after.checkpoint or 0) == last  # everything handled is checkpointed
    assert all(end <= handed_at for _, end, _ in spans)
    assert handed_at - asked_at < 3  # a renewal (≈1 s) and the batch in flight (0.5 s)
    print(f"hand-off took {handed_at - asked_at:.2f}s after the mark")


async def test_a_replica_stopping_as_the_mark_lands_hands_the_lease_over() -> None:
    name = unique("handoff-stop")
    recording.BEHAVIOUR["sleep"] = 0.5
    async with aws_client("kinesis") as kinesis:
        arn = await make_stream(kinesis, "handoff-stop")
        await put(kinesis, arn, [(f"k{i % 3}", f"r{i}") for i in range(40)])
        settings = settings_for(
            {"k": stream_mapping(arn, "record_timed", batch_size=2)},
            SLUICEWAY_CHECKPOINTS__BACKEND="dynamodb",
            SLUICEWAY_CHECKPOINTS__TABLE=name,
            SLUICEWAY_CHECKPOINTS__LEASE_SECONDS="3",
        )
        store = DynamoCheckpoints(name, "us-east-1", lease_seconds=3)
        scope = f"k|{arn}"
        async with running(settings, checkpoints=store) as service:
            await eventually(lambda: len(recording.SPANS) >= 2, timeout=30)
            lease = await _mark(store, scope, "taker")
            service.stop()
        stopped_at = time.time()
        after = await store.table.get(scope, lease.shard_id)
        await store.close()
    assert after is not None
    assert (after.owner, after.handoff_to) == ("taker", None)
    last = max(int(seq) for _, _, seqs in recording.SPANS for seq in seqs)
    assert int(after.checkpoint or 0) == last
    assert all(end <= stopped_at for _, end, _ in recording.SPANS)


async def _mark(store: DynamoCheckpoints, scope: str, taker: str) -> Lease:
    """Mark the scope's one lease for `taker`, as a taker does: the mark is conditional on the
    lease's counter, so an owner's renewal in between means reading it again and retrying."""
    for _ in range(20):
        [lease] = await store.table.list(scope)
        marked = await store.table.request_handoff(lease, taker)
        if marked is not None:
            return marked
        await anyio.sleep(0.05)
    raise AssertionError("the hand-off mark never landed")
