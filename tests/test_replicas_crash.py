"""Three replicas as real processes share Kinesis, DynamoDB Streams, SQS and SQS FIFO mappings
through one DynamoDB lease table; one of them is killed -9 and restarted several times while a
producer writes numbered records. Nothing is lost, order per key / group holds in every
replica's view, and duplicates stay within what was in flight at the kills."""

from __future__ import annotations

import json
import signal
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.support.replicas import (
    by_shard,
    label,
    overlaps,
    owner_changes,
    read_batches,
    read_views,
    replica_env,
    seen_numbers,
    start_replica,
    stop_all,
)
from tests.support.sqs import eventually, make_queue, sqs_client, unique
from tests.support.streams import aws_client, make_stream, make_table

pytestmark = pytest.mark.anyio

REPLICAS = 3
KILLS = 3
RECORDS = 240
"""Per source; keys / groups are n % KEYS."""
KEYS = 6
LEASE_SECONDS = 3
BATCH = 10


async def produce(clients: dict[str, Any], arns: dict[str, str], urls: dict[str, str]) -> None:
    """Numbered records to every source, a few at a time, for a while."""
    stream = arns["kin"].rsplit("/", 1)[1]
    table = arns["table"].rsplit("/", 1)[1]
    for n in range(RECORDS):
        key = f"k{n % KEYS}"
        body = json.dumps({"k": key, "n": n})
        await clients["kinesis"].put_record(StreamName=stream, PartitionKey=key, Data=body.encode())
        await clients["dynamodb"].put_item(
            TableName=table, Item={"id": {"S": key}, "n": {"N": str(n)}}
        )
        await clients["sqs"].send_message(QueueUrl=urls["std"], MessageBody=body)
        await clients["sqs"].send_message(
            QueueUrl=urls["fifo"],
            MessageBody=body,
            MessageGroupId=key,
            MessageDeduplicationId=str(n),
        )
        if n % 4 == 3:
            await anyio.sleep(0.1)


async def owners_of(dynamodb: Any, table: str) -> list[str]:
    try:
        items = (await dynamodb.scan(TableName=table, ConsistentRead=True)).get("Items", [])
    except dynamodb.exceptions.ResourceNotFoundException:
        return []  # not created yet
    return [item["leaseOwner"]["S"] for item in items if "leaseOwner" in item]


async def test_kill_9_replicas_loses_nothing(tmp_path: Path, ministack_sqs: str) -> None:
    lease_table = unique("crash-leases")
    async with (
        aws_client("kinesis") as kinesis,
        aws_client("dynamodb") as dynamodb,
        sqs_client() as sqs,
    ):
        kin = await make_stream(kinesis, "crash", shards=3)
        table_arn, ddb_stream = await make_table(dynamodb, "crash", view="NEW_IMAGE")
        std, _ = await make_queue(sqs, "crash-std", visibility=4)
        fifo, _ = await make_queue(sqs, "crash-fifo", fifo=True, visibility=4)
        sources = {"kin": kin, "ddb": ddb_stream, "std": std, "fifo": fifo}
        env = replica_env(
            tmp_path, sources, lease_table, lease_seconds=LEASE_SECONDS, batch_size=BATCH
        )
        replicas = [start_replica(env, tmp_path, i) for i in range(REPLICAS)]
        failovers: list[float] = []
        killed_pids: list[int] = []
        try:
            clients = {"kinesis": kinesis, "dynamodb": dynamodb, "sqs": sqs}
            arns = {"kin": kin, "table": table_arn}
            async with anyio.create_task_group() as tg:
                tg.start_soon(produce, clients, arns, {"std": std, "fifo": fifo})

                async def all_owned() -> bool:
                    return len(await owners_of(dynamodb, lease_table)) >= 4

                await eventually(all_owned, timeout=60, interval=0.5)  # started, leases taken
                await anyio.sleep(2)
                for kill in range(KILLS):
                    victim = kill % REPLICAS
                    pid = replicas[victim].pid
                    replicas[victim].send_signal(signal.SIGKILL)
                    replicas[victim].wait(timeout=10)
                    killed_pids.append(pid)
                    killed_at = time.monotonic()

                    async def taken_over(pid: int = pid) -> bool:
                        owners = await owners_of(dynamodb, lease_table)
                        return not any(f":{pid}:" in o for o in owners)

                    await eventually(taken_over, timeout=30, interval=0.2)
                    failovers.append(time.monotonic() - killed_at)
                    replicas[victim] = start_replica(env, tmp_path, victim)
                    await anyio.sleep(2)
            expected = set(range(RECORDS))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                seen = seen_numbers(read_views(tmp_path))
                if all(seen.get(label(arn), set()) >= expected for arn in sources.values()):
                    break
                await anyio.sleep(0.5)
        finally:
            exit_codes = stop_all(replicas)
        logs = (tmp_path / "replica-0.log").read_text()[-3000:]
        assert exit_codes == [0] * REPLICAS, logs
        # after a graceful stop of everyone, nobody owns a lease
        assert await owners_of(dynamodb, lease_table) == []

    views = read_views(tmp_path)
    seen = seen_numbers(views)
    for name, arn in sources.items():
        missing = set(range(RECORDS)) - seen.get(label(arn), set())
        assert not missing, f"{name}: {len(missing)} records never handled: {sorted(missing)[:20]}"
    # order per key / group in each replica's view: first deliveries come in producer order
    for pid, entries in views.items():
        for name in ("kin", "ddb", "fifo"):
            firsts: dict[str, list[int]] = defaultdict(list)
            once: set[tuple[str, int]] = set()
            for entry in entries:
                source = label(entry["source"])
                if source == label(sources[name]) and (entry["k"], entry["n"]) not in once:
                    once.add((entry["k"], entry["n"]))
                    firsts[entry["k"]].append(entry["n"])
            for key, numbers in firsts.items():
                assert numbers == sorted(numbers), f"{name} {key} out of order in {pid}"
    duplicates = {}
    for name, arn in sources.items():
        total = sum(
            1 for entries in views.values() for e in entries if label(e["source"]) == label(arn)
        )
        duplicates[name] = total - RECORDS
    # Overlap: batches of one shard (or, for DynamoDB, one key) running in two replicas at
    # once. Steals hand leases over gracefully and a killed replica runs nothing, so none.
    batches = read_batches(tmp_path)
    streams = {label(sources[name]): name for name in ("kin", "ddb")}
    overlapping = {name: 0 for name in streams.values()}
    changes = {name: 0 for name in streams.values()}
    for source, name in streams.items():
        mine = [b for b in batches if b.source == source]
        overlapping[name] = len(overlaps(mine, by_shard, longest=0.1))
        changes[name] = owner_changes(mine, by_shard)
    print(
        f"\nfailover after kill -9 (lease {LEASE_SECONDS}s): "
        + ", ".join(f"{f:.1f}s" for f in failovers)
        + f"; duplicates per source: {duplicates}"
        + "; duplicates per crash: "
        + ", ".join(f"{name} {d / KILLS:.1f}" for name, d in duplicates.items())
        + "; overlapping handler calls per owner change: "
        + ", ".join(f"{name} {overlapping[name]}/{changes[name]}" for name in overlapping)
    )
    assert overlapping == {name: 0 for name in streams.values()}, overlapping
    # Duplicates come only from ownership changes (a kill, or a lease moving to a restarted
    # replica): a record is never handled twice by the same process, and every record handled
    # twice was handled at least once by a replica that was killed or gave the shard up.
    killed = {str(pid) for pid in killed_pids}
    for name, arn in sources.items():
        handlers: dict[tuple[str, int], list[str]] = defaultdict(list)
        for pid, entries in views.items():
            for e in entries:
                if label(e["source"]) == label(arn):
                    handlers[(e["k"], e["n"])].append(pid)
        for record, pids in handlers.items():
            if len(pids) > 1:
                assert len(set(pids)) == len(pids), f"{name} {record} handled twice by one replica"
                if name in ("std", "fifo"):  # no leases: only a kill can repeat a message
                    assert killed & set(pids), f"{name} {record} repeated without a kill"
    # at most the batches in flight per shard at each kill and each hand-over
    bound = (KILLS + REPLICAS) * 3 * BATCH
    assert all(0 <= d <= bound for d in duplicates.values()), duplicates
