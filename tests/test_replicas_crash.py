"""Three replicas as real processes share Kinesis, DynamoDB Streams, SQS and SQS FIFO mappings
through one DynamoDB lease table; one of them is killed -9 and restarted several times while a
producer writes numbered records. Nothing is lost, order per key / group holds in every
replica's view, and duplicates stay within what was in flight at the kills."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import anyio
import pytest

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


def replica_env(tmp_path: Path, sources: dict[str, str], table: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICEWAY_")}
    env.update(
        {
            "SLUICEWAY_HTTP__ENABLED": "false",
            "SLUICEWAY_LOG_FORMAT": "text",
            "SLUICEWAY_LOG_LEVEL": "WARNING",
            "SLUICEWAY_CHECKPOINTS__BACKEND": "dynamodb",
            "SLUICEWAY_CHECKPOINTS__TABLE": table,
            "SLUICEWAY_CHECKPOINTS__LEASE_SECONDS": str(LEASE_SECONDS),
            "REPLICA_TEST_OUT_DIR": str(tmp_path),
        }
    )
    for name, source in sources.items():
        prefix = f"SLUICEWAY_MAPPINGS__{name.upper()}__"
        env[prefix + "SOURCE"] = source
        env[prefix + "HANDLER"] = "tests.support.crash_handlers:handle"
        env[prefix + "BATCH_SIZE"] = str(BATCH)
        if name in ("kin", "ddb"):
            env[prefix + "STARTING_POSITION"] = "TRIM_HORIZON"
    return env


def start_replica(env: dict[str, str], tmp_path: Path, index: int) -> subprocess.Popen[bytes]:
    log = open(tmp_path / f"replica-{index}.log", "ab")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        [sys.executable, "-m", "sluiceway.app", "run"],
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def read_views(tmp_path: Path) -> dict[str, list[dict[str, Any]]]:
    """Every process's handled records, in its order (a torn last line of a killed one skipped)."""
    views: dict[str, list[dict[str, Any]]] = {}
    for path in tmp_path.glob("*.jsonl"):
        entries = []
        for line in path.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        views[path.stem] = entries
    return views


def label(source: str) -> str:
    """A queue by its name whether given as a URL or seen as an ARN; streams by their ARN."""
    if ":sqs:" in source or "/sqs" in source or source.startswith("http"):
        return source.rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return source


def seen_numbers(views: dict[str, list[dict[str, Any]]]) -> dict[str, set[int]]:
    out: dict[str, set[int]] = defaultdict(set)
    for entries in views.values():
        for entry in entries:
            out[label(entry["source"])].add(entry["n"])
    return out


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


def stop_all(replicas: list[subprocess.Popen[bytes]]) -> list[int]:
    """SIGTERM every live replica (a graceful stop), kill what outlives 30 s; exit codes."""
    for process in replicas:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    codes = []
    for process in replicas:
        try:
            codes.append(process.wait(timeout=30))
        except subprocess.TimeoutExpired:
            process.kill()
            codes.append(process.wait())
    return codes


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
        env = replica_env(tmp_path, sources, lease_table)
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
    print(
        f"\nfailover after kill -9 (lease {LEASE_SECONDS}s): "
        + ", ".join(f"{f:.1f}s" for f in failovers)
        + f"; duplicates per source: {duplicates}"
    )
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
