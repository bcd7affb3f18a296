"""The DynamoDB lease table against moto: conditional writes, sharing shards between replicas,
failover and graceful hand-off."""

from __future__ import annotations

import base64
import time
from typing import Any

import anyio
import pytest
from sluiceway.core.aws import AwsClients
from sluiceway.pollers.checkpoints_dynamodb import DynamoCheckpoints
from sluiceway.pollers.leases import Lease, LeaseTable, LeaseTableError
from sluiceway.pollers.shards import Shard

from tests.support import recording
from tests.support.sqs import eventually, running, settings_for, unique
from tests.support.streams import aws_client, make_stream, put, stream_mapping

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("moto_url", "recorder")]


async def test_table_is_created_then_checked_and_writes_are_conditional() -> None:
    name = unique("leases")
    async with AwsClients("us-east-1") as clients:

        async def client() -> Any:
            return await clients.client("dynamodb")

        table = LeaseTable(client, name)
        await table.ensure()
        await table.ensure()  # exists: checked, not recreated
        described = (await (await client()).describe_table(TableName=name))["Table"]
        assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        assert await table.create("scope", Shard("s1", ("p1",)))
        assert not await table.create("scope", Shard("s1"))
        [lease] = await table.list("scope")
        assert lease == Lease("scope", "s1", None, 0, parents=("p1",))
        mine = await table.take(lease, "a")
        assert mine is not None and mine.counter == 1
        assert await table.take(lease, "b") is None  # stale counter: refused
        written = await table.write(mine, checkpoint="42")
        assert written is not None and written.counter == 2
        assert await table.write(mine, checkpoint="43") is None  # stale: never written
        stolen = await table.take(written, "b")
        assert stolen is not None
        assert await table.renew(written) is None  # the old owner finds out on its next renewal
        assert await table.write(written, checkpoint="99") is None
        seen = await table.get("scope", "s1")
        assert seen is not None and seen.checkpoint == "42" and seen.owner == "b"
        assert await table.release(stolen)
        seen = await table.get("scope", "s1")
        assert seen is not None and seen.owner is None and seen.checkpoint == "42"

        wrong = unique("wrong")
        await (await client()).create_table(
            TableName=wrong,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        with pytest.raises(LeaseTableError, match="key schema"):
            await LeaseTable(client, wrong).ensure()


def _owners(store: DynamoCheckpoints, scope: str) -> list[str | None]:
    return [lease.owner for lease in store.leases_for(scope).last_scan]


async def test_two_replicas_share_shards_and_hand_off_on_stop() -> None:
    table = unique("lease-share")
    async with aws_client("kinesis") as kinesis:
        arn = await make_stream(kinesis, "share", shards=4)
        settings = settings_for(
            {"k": stream_mapping(arn, batch_size=10)},
            SLUICEWAY_CHECKPOINTS__BACKEND="dynamodb",
            SLUICEWAY_CHECKPOINTS__TABLE=table,
            SLUICEWAY_CHECKPOINTS__LEASE_SECONDS="3",
        )
        scope = f"k|{arn}"
        first = DynamoCheckpoints(table, "us-east-1", lease_seconds=3)
        second = DynamoCheckpoints(table, "us-east-1", lease_seconds=3)
        async with running(settings, checkpoints=first) as a:
            await eventually(lambda: len(first.leases_for(scope).held()) == 4, timeout=30)
            async with running(settings, checkpoints=second):
                # the newcomer steals one at a time until the shares are even
                await eventually(
                    lambda: (
                        len(second.leases_for(scope).held()) == 2
                        and len(first.leases_for(scope).held()) == 2
                    ),
                    timeout=60,
                )
                items = [(f"key-{i % 8}", f"r{i}") for i in range(80)]
                await put(kinesis, arn, items)
                await eventually(
                    lambda: set(recording.kinesis_payloads()) >= {d for _, d in items}, timeout=60
                )
                stopped_at = time.monotonic()
            # the second replica released its leases on stop: taken at once, not after expiry
            await eventually(lambda: len(first.leases_for(scope).held()) == 4, timeout=30)
            hand_off = time.monotonic() - stopped_at
            print(f"graceful hand-off took {hand_off:.2f}s (lease duration 3s)")
            more = [(f"key-{i % 8}", f"r{i}") for i in range(80, 100)]
            await put(kinesis, arn, more)
            await eventually(
                lambda: set(recording.kinesis_payloads()) >= {d for _, d in more}, timeout=60
            )
            assert a.registry.mappings["k"].state == "Enabled"
        await first.close()
        await second.close()
    payloads = recording.kinesis_payloads()
    assert set(payloads) == {f"r{i}" for i in range(100)}
    by_key: dict[str, list[int]] = {}
    for record in recording.SEEN:
        data = base64.b64decode(record["kinesis"]["data"]).decode()
        by_key.setdefault(record["kinesis"]["partitionKey"], []).append(int(data[1:]))
    for numbers in by_key.values():
        firsts = list(dict.fromkeys(numbers))
        assert firsts == sorted(firsts)


async def test_a_lost_lease_stops_the_reader_and_never_checkpoints_again() -> None:
    table = unique("lease-lost")
    async with aws_client("kinesis") as kinesis:
        arn = await make_stream(kinesis, "lost", shards=1)
        settings = settings_for(
            {"k": stream_mapping(arn, batch_size=1)},
            SLUICEWAY_CHECKPOINTS__BACKEND="dynamodb",
            SLUICEWAY_CHECKPOINTS__TABLE=table,
            SLUICEWAY_CHECKPOINTS__LEASE_SECONDS="3",
        )
        scope = f"k|{arn}"
        store = DynamoCheckpoints(table, "us-east-1", lease_seconds=3)
        recording.BEHAVIOUR["sleep"] = 0.3
        await put(kinesis, arn, [("a", f"r{i}") for i in range(5)])
        async with running(settings, checkpoints=store):
            await eventually(lambda: len(recording.SEEN) >= 2, timeout=30)
            # another replica takes the lease behind this one's back
            [lease] = await store.table.list(scope)
            stolen = await store.table.take(lease, "thief")
            assert stolen is not None
            seen_at_theft = len(recording.SEEN)

            async def thief_renews() -> None:
                nonlocal stolen
                while True:
                    await anyio.sleep(0.5)
                    assert stolen is not None
                    stolen = await store.table.renew(stolen) or stolen

            async with anyio.create_task_group() as thief:
                thief.start_soon(thief_renews)
                await eventually(lambda: not store.leases_for(scope).held(), timeout=10)
                await anyio.sleep(0.5)
                # at most the batch in flight and the one that found the loss at its checkpoint
                assert len(recording.SEEN) <= seen_at_theft + 2
                seen_after_loss = len(recording.SEEN)
                [after] = await store.table.list(scope)
                assert after.owner == "thief"
                await anyio.sleep(4)  # longer than the lease: the live thief keeps it
                assert len(recording.SEEN) == seen_after_loss
                [later] = await store.table.list(scope)
                assert later.owner == "thief" and later.checkpoint == after.checkpoint
                thief.cancel_scope.cancel()
        await store.close()


async def test_a_clean_stop_also_releases_a_lease_whose_take_reply_was_lost() -> None:
    from sluiceway.pollers.leases import TableLeases

    async with AwsClients("us-east-1") as clients:

        async def client() -> Any:
            return await clients.client("dynamodb")

        table = LeaseTable(client, unique("leases"))
        await table.ensure()
        await table.create("scope", Shard("s1"))
        leases = TableLeases(table, "scope", "me", lease_seconds=3)
        # The take reached the table, but the replica never saw the answer (a stop cut it off).
        [lease] = await table.list("scope")
        assert await table.take(lease, "me") is not None
        assert leases.held() == set()
        await leases.release_all()
        seen = await table.get("scope", "s1")
        assert seen is not None and seen.owner is None
