"""Checkpoint stores: memory and SQLite, the SQLite file's one-process lock, and a file that
vanishes under a running store."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from sluiceway.app.service import UnsupportedMapping, build_checkpoints
from sluiceway.pollers.checkpoints import SHARD_END, CheckpointStore, MemoryCheckpoints
from sluiceway.pollers.checkpoints_sqlite import (
    CheckpointLockError,
    CheckpointStoreLost,
    SqliteCheckpoints,
)

from tests.support.sqs import settings_for

pytestmark = pytest.mark.anyio


async def _roundtrip(store: CheckpointStore) -> None:
    assert await store.get("m|arn", "shardId-0") is None
    await store.set("m|arn", "shardId-0", "100")
    await store.set("m|arn", "shardId-0", "200")
    await store.set("m|arn", "shardId-1", SHARD_END)
    assert await store.get("m|arn", "shardId-0") == "200"
    assert await store.get("m|arn", "shardId-1") == SHARD_END
    assert await store.get("other|arn", "shardId-0") is None


async def test_memory_store() -> None:
    await _roundtrip(MemoryCheckpoints())


async def test_sqlite_store_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "sluiceway.db"
    store = SqliteCheckpoints(path).open()
    await _roundtrip(store)
    await store.close()
    again = SqliteCheckpoints(path).open()
    assert await again.get("m|arn", "shardId-0") == "200"
    mode = again._db().execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    await again.close()


def test_second_process_refuses_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "sluiceway.db"
    store = SqliteCheckpoints(path).open()
    try:
        code = textwrap.dedent(
            f"""
            from sluiceway.pollers.checkpoints_sqlite import CheckpointLockError, SqliteCheckpoints
            try:
                SqliteCheckpoints({str(path)!r}).open()
            except CheckpointLockError as exc:
                print(exc)
                raise SystemExit(3)
            """
        )
        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=Path(__file__).resolve().parents[1],
        )
        assert result.returncode == 3, result.stderr
        assert "in use by another Sluiceway process" in result.stdout
        assert str(path) in result.stdout
    finally:
        store.close_sync()
    SqliteCheckpoints(path).open().close_sync()  # free again once the owner closes


def test_service_refuses_to_start_on_a_locked_file(tmp_path: Path) -> None:
    path = tmp_path / "sluiceway.db"
    settings = settings_for(
        {}, SLUICEWAY_CHECKPOINTS__BACKEND="sqlite", SLUICEWAY_CHECKPOINTS__PATH=str(path)
    )
    owner = SqliteCheckpoints(path).open()
    try:
        with pytest.raises(UnsupportedMapping, match="in use by another Sluiceway process"):
            build_checkpoints(settings)
        with pytest.raises(CheckpointLockError):
            SqliteCheckpoints(path).open()  # a second open in one process is refused too
    finally:
        owner.close_sync()


def test_dynamodb_backend_builds_a_lease_store() -> None:
    from sluiceway.pollers.checkpoints_dynamodb import DynamoCheckpoints

    settings = settings_for(
        {},
        SLUICEWAY_CHECKPOINTS__BACKEND="dynamodb",
        SLUICEWAY_CHECKPOINTS__TABLE="leases",
        SLUICEWAY_CHECKPOINTS__LEASE_SECONDS="6",
    )
    store = build_checkpoints(settings)
    assert isinstance(store, DynamoCheckpoints)
    assert store.table.table == "leases" and store.lease_seconds == 6
    assert store.leases_for("scope").renew_interval < 6 / 2


@pytest.mark.parametrize(
    ("vanish", "said"),
    [
        (lambda d: shutil.rmtree(d), "checkpoint file {db} was removed"),
        (lambda d: (d / "sluiceway.db").unlink(), "checkpoint file {db} was removed"),
        (lambda d: (d / "sluiceway.db.lock").unlink(), "its lock file {db}.lock was removed"),
        (
            lambda d: (
                shutil.copyfile(d / "sluiceway.db", d / "x"),
                (d / "x").replace(d / "sluiceway.db"),
            ),
            "checkpoint file {db} was replaced by another file",
        ),
    ],
    ids=["directory removed", "file removed", "lock removed", "file replaced"],
)
async def test_a_store_whose_file_vanished_refuses_every_later_write(
    tmp_path: Path, vanish: Any, said: str
) -> None:
    directory = tmp_path / "store"
    db = directory / "sluiceway.db"
    store = SqliteCheckpoints(db).open()
    try:
        await store.set("m|arn", "shardId-0", "100")
        vanish(directory)
        for write in (
            store.set("m|arn", "shardId-0", "200"),
            store.set_window("m|arn", "shardId-0", "{}"),
            store.set("m|arn", "shardId-0", "300"),
        ):
            with pytest.raises(CheckpointStoreLost, match=re.escape(said.format(db=db))):
                await write
    finally:
        store.close_sync()
    if db.exists():  # replaced: the new file never saw a write after the swap
        again = SqliteCheckpoints(db).open()
        assert await again.get("m|arn", "shardId-0") == "100"
        again.close_sync()
