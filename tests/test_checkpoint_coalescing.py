"""Coalesced checkpoints end to end against moto's Kinesis: batches that finish faster than the
store writes share writes (SQLite file, DynamoDB lease table), the checkpoint only moves forward,
a stop writes the last finished position, and a kill -9 re-delivers only what was not written,
from exactly the stored checkpoint on."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from sluiceway.pollers.checkpoints_dynamodb import DynamoCheckpoints
from sluiceway.pollers.checkpoints_sqlite import SqliteCheckpoints

from tests.support import recording
from tests.support.crash_handlers import handled_numbers
from tests.support.sqs import eventually, running, settings_for, unique
from tests.support.streams import (
    aws_client,
    make_stream,
    put,
    stored_checkpoint,
    stream_mapping,
)

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]
RECORDS = 60


class SlowSqliteCheckpoints(SqliteCheckpoints):
    """The real SQLite store, each commit 20 ms slower (a busy disk); notes what it committed."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.committed: list[dict[tuple[str, str], str]] = []

    def _set_many(self, checkpoints: dict[tuple[str, str], str]) -> None:
        time.sleep(0.02)
        super()._set_many(checkpoints)
        self.committed.append(dict(checkpoints))


def _stored(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT shard_id, checkpoint FROM checkpoints").fetchall())


@pytest.mark.usefixtures("moto_url", "recorder")
@pytest.mark.parametrize("lanes", [1, 4])
async def test_sqlite_writes_fewer_checkpoints_than_batches_only_forward_and_the_last_on_stop(
    tmp_path: Path, lanes: int
) -> None:
    db = tmp_path / "sluiceway.db"
    store = SlowSqliteCheckpoints(db).open()
    async with aws_client("kinesis") as kinesis:
        arn = await make_stream(kinesis, "coalesce")
        sequences = await put(kinesis, arn, [(f"k{n % 8}", f"r{n}") for n in range(RECORDS)])
        mapping = stream_mapping(arn, batch_size=1, parallelization_factor=lanes)
        async with running(settings_for({"c": mapping}), checkpoints=store):
            await eventually(lambda: len(recording.SEEN) >= RECORDS)
        await store.close()
    positions = [int(c) for commit in store.committed for c in commit.values()]
    assert positions == sorted(positions)  # never backwards
    assert len(store.committed) < RECORDS / 2  # 60 batches, far fewer writes
    assert list(_stored(db).values()) == [sequences[-1]]  # the stop wrote the last one


@pytest.mark.usefixtures("moto_url", "recorder")
async def test_dynamodb_writes_fewer_checkpoints_than_batches_and_releases_with_the_last() -> None:
    table = unique("coalesce-leases")
    writes: list[str] = []

    class CountedDynamoCheckpoints(DynamoCheckpoints):
        async def set(self, scope: str, shard_id: str, checkpoint: str) -> None:
            await super().set(scope, shard_id, checkpoint)
            writes.append(checkpoint)

    store = CountedDynamoCheckpoints(table, "us-east-1", lease_seconds=3)
    async with aws_client("kinesis") as kinesis:
        arn = await make_stream(kinesis, "coalesce-ddb")
        sequences = await put(kinesis, arn, [(f"k{n % 8}", f"r{n}") for n in range(RECORDS)])
        settings = settings_for(
            {"c": stream_mapping(arn, batch_size=1)},
            SLUICEWAY_CHECKPOINTS__BACKEND="dynamodb",
            SLUICEWAY_CHECKPOINTS__TABLE=table,
        )
        async with running(settings, checkpoints=store):
            await eventually(lambda: len(recording.SEEN) >= RECORDS)
        [lease] = await store.table.list(f"c|{arn}")  # one shard
        await store.close()
    assert [int(w) for w in writes] == sorted(int(w) for w in writes)
    assert len(writes) < RECORDS
    assert lease.checkpoint == sequences[-1] and lease.owner is None


async def test_after_a_kill_the_restart_resumes_exactly_after_the_storedstored_checkpoint(
    moto_url: str, tmp_path: Path
) -> None:
    db = tmp_path / "sluiceway.db"
    total, batch = 200, 5
    async with aws_client("kinesis") as kinesis:
        arn = await make_stream(kinesis, "kill")
        sequences = await put(
            kinesis,
            arn,
            [(f"k{n % 4}", json.dumps({"k": f"k{n % 4}", "n": n})) for n in range(total)],
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICEWAY_")}
        env.update(
            AWS_ENDPOINT_URL=moto_url,
            SLUICEWAY_LOG_FORMAT="text",
            SLUICEWAY_HTTP__ENABLED="false",
            SLUICEWAY_MAPPINGS__K__SOURCE=arn,
            SLUICEWAY_MAPPINGS__K__HANDLER="tests.support.crash_handlers:handle",
            SLUICEWAY_MAPPINGS__K__STARTING_POSITION="TRIM_HORIZON",
            SLUICEWAY_MAPPINGS__K__BATCH_SIZE=str(batch),
            SLUICEWAY_CHECKPOINTS__BACKEND="sqlite",
            SLUICEWAY_CHECKPOINTS__PATH=str(db),
            REPLICA_TEST_BATCH_SLEEP="0.02",
        )
        runs: list[Path] = []
        for attempt in range(2):
            out = tmp_path / f"run{attempt}"
            out.mkdir()
            runs.append(out)
            with (tmp_path / f"run{attempt}.log").open("wb") as log:
                process = await anyio.open_process(
                    [sys.executable, "-m", "sluiceway.app", "run"],
                    env={**env, "REPLICA_TEST_OUT_DIR": str(out)},
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            try:
                if attempt == 0:
                    await eventually(
                        lambda out=out: len(handled_numbers(out)) >= total // 2, timeout=60
                    )
                else:  # the rest, to its end and checkpointed
                    await eventually(lambda: stored_checkpoint(db) == sequences[-1], timeout=60)
            finally:
                process.kill()  # kill -9: no flush, no goodbye
                with anyio.fail_after(10):
                    await process.wait()
            if attempt == 0:
                stored = stored_checkpoint(db)
    first, second = handled_numbers(runs[0]), handled_numbers(runs[1])
    assert stored is not None
    resume_at = sequences.index(stored) + 1
    assert first[:resume_at] == list(range(resume_at))  # one shard: read order
    assert second == list(range(resume_at, total))  # exactly after the stored checkpoint
    redelivered = len(first) - resume_at  # finished (or in flight) but not yet written
    assert 0 <= redelivered <= 3 * batch, redelivered
