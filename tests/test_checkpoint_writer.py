"""Coalesced checkpoint writes: one shard's writer, group commits across shards (also on the real
SQLite file), and the per-batch bookkeeping beside them (finished prefix, backlog, batch limits)."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import anyio
import pytest
from sluiceway.pollers.checkpoint_writer import CheckpointWriter
from sluiceway.pollers.checkpoints_sqlite import CheckpointStoreLost, SqliteCheckpoints
from sluiceway.pollers.group_commit import GroupCommit
from sluiceway.pollers.lanes import Backlog, ShardProgress
from sluiceway.router.batching import MAX_PAYLOAD_BYTES, BatchBuilder
from sluiceway.router.records import SourceRecord

pytestmark = pytest.mark.anyio


class SlowSaves:
    """A store write that takes `seconds`, recording what it was given."""

    def __init__(self, seconds: float = 0.02) -> None:
        self.seconds = seconds
        self.written: list[str] = []
        self.times: list[float] = []
        self.refuse = False

    async def __call__(self, position: str) -> bool:
        self.times.append(time.monotonic())
        await anyio.sleep(self.seconds)
        if self.refuse:
            return False
        self.written.append(position)
        return True


# ---------------------------------------------------------------------- one shard's writer


async def test_positions_that_finish_during_a_write_go_in_the_next_one_and_never_backwards() -> (
    None
):
    saves = SlowSaves()
    writer = CheckpointWriter(saves)
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run)
        for n in range(1, 41):
            writer.offer(str(n))
            await anyio.sleep(0.002)  # a batch every 2 ms, a write every 20 ms
        writer.close()
    numbers = [int(p) for p in saves.written]
    assert numbers == sorted(set(numbers)), numbers  # forward only, each once
    assert numbers[-1] == 40  # closing wrote the last position given
    assert len(numbers) < 15, numbers  # coalesced, not one write per batch


async def test_a_busy_shard_is_written_once_per_spacing_and_its_last_position_on_close() -> None:
    saves = SlowSaves(seconds=0.0)
    writer = CheckpointWriter(saves, spacing=0.05)
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run)
        for n in range(1, 101):
            writer.offer(str(n))
            await anyio.sleep(0.002)  # 0.2 s of batches
        writer.close()
    gaps = [b - a for a, b in zip(saves.times, saves.times[1:], strict=False)]
    assert all(gap >= 0.049 for gap in gaps), gaps
    assert len(saves.written) <= 6, saves.written
    assert saves.written[-1] == "100"


async def test_flush_returns_once_every_position_given_is_written() -> None:
    saves = SlowSaves()
    writer = CheckpointWriter(saves)
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run)
        writer.offer("1")
        await anyio.sleep(0.005)  # "1" is being written
        writer.offer("2")
        assert not writer.idle
        with anyio.fail_after(5):
            await writer.flush()
        assert saves.written == ["1", "2"] and writer.idle
        writer.close()


async def test_a_cancelled_writer_still_writes_the_position_it_was_last_given() -> None:
    saves = SlowSaves()
    writer = CheckpointWriter(saves)
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run)
        writer.offer("1")
        await anyio.sleep(0.005)  # mid-write
        writer.offer("2")
        tg.cancel_scope.cancel()
    assert saves.written[-1] == "2"


async def test_a_write_cut_short_by_cancellation_is_made_again() -> None:
    saves = SlowSaves(seconds=0.05)
    writer = CheckpointWriter(saves)
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run)
        writer.offer("7")
        await anyio.sleep(0.01)  # inside the (cancellable) write of "7"
        tg.cancel_scope.cancel()
    assert saves.written == ["7"]


async def test_after_a_refused_write_nothing_more_is_written() -> None:
    saves = SlowSaves(seconds=0.0)
    writer = CheckpointWriter(saves)
    saves.refuse = True
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.run)
            writer.offer("1")
            await writer.flush()
            assert writer.failed
            saves.refuse = False
            writer.offer("2")
            await writer.flush()
    assert saves.written == []


# ---------------------------------------------------------------------- group commit


class SlowCommits:
    def __init__(self, seconds: float = 0.02) -> None:
        self.seconds = seconds
        self.commits: list[dict[str, int]] = []
        self.started: list[float] = []
        self.fail_next = False
        self.stored: dict[str, int] = {}

    async def __call__(self, values: dict[str, int]) -> None:
        self.started.append(time.monotonic())
        fail, self.fail_next = self.fail_next, False
        await anyio.sleep(self.seconds)
        if fail:
            raise RuntimeError("disk full")
        self.commits.append(dict(values))
        self.stored.update(values)


async def test_values_that_come_during_a_commit_go_together_in_the_next() -> None:
    commits = SlowCommits()
    group = GroupCommit[str, int](commits)

    async def put(key: str, value: int) -> None:
        await group.put(key, value)
        assert commits.stored[key] == value  # returns only once its value is committed

    async with anyio.create_task_group() as tg:
        tg.start_soon(put, "a", 1)
        await anyio.sleep(0.005)  # "a" is being committed
        for key in "bcd":
            tg.start_soon(put, key, 2)
    assert commits.commits == [{"a": 1}, {"b": 2, "c": 2, "d": 2}]


async def test_a_commit_error_reaches_every_caller_of_its_group_and_no_other() -> None:
    commits = SlowCommits()
    group = GroupCommit[str, int](commits)
    errors: dict[str, BaseException] = {}

    async def put(key: str) -> None:
        try:
            await group.put(key, 1)
        except RuntimeError as exc:
            errors[key] = exc

    async with anyio.create_task_group() as tg:
        tg.start_soon(put, "first")
        await anyio.sleep(0.005)
        commits.fail_next = True  # the commit after "first": b and c
        tg.start_soon(put, "b")
        tg.start_soon(put, "c")
    assert sorted(errors) == ["b", "c"]
    await group.put("d", 1)  # the store goes on
    assert commits.stored == {"first": 1, "d": 1}


async def test_a_caller_is_not_kept_committing_for_others_that_keep_coming() -> None:
    commits = SlowCommits(seconds=0.01)
    group = GroupCommit[str, int](commits)
    done = anyio.Event()

    async def others(tg: anyio.abc.TaskGroup) -> None:
        """Shards that finish batches all the time, each while another's commit runs."""
        n = 0
        while not done.is_set():
            n += 1
            tg.start_soon(group.put, f"k{n % 16}", n)
            await anyio.sleep(0.002)

    async with anyio.create_task_group() as tg:
        with anyio.fail_after(1):  # its own commit, not every commit the others need
            async with anyio.create_task_group() as first:
                first.start_soon(group.put, "a", 1)  # "a" leads: nothing is being committed
                await anyio.sleep(0.001)
                tg.start_soon(others, tg)
        done.set()
    assert commits.commits[0] == {"a": 1}


async def test_busy_commits_are_spaced_and_one_after_a_quiet_spell_is_at_once() -> None:
    commits = SlowCommits(seconds=0.001)
    group = GroupCommit[str, int](commits, spacing=0.05)
    async with anyio.create_task_group() as tg:
        for n in range(40):
            tg.start_soon(group.put, f"k{n % 4}", n)
            await anyio.sleep(0.005)
    gaps = [b - a for a, b in zip(commits.started, commits.started[1:], strict=False)]
    assert len(commits.started) <= 6, commits.commits  # 0.2 s of puts, one commit per 50 ms
    assert all(gap >= 0.049 for gap in gaps), gaps
    await anyio.sleep(0.1)
    began = time.monotonic()
    await group.put("late", 1)
    assert time.monotonic() - began < 0.04  # no wait for a spacing after a quiet spell


async def test_sqlite_commits_concurrent_shards_together_and_each_set_is_on_disk_when_it_returns(
    tmp_path: Path,
) -> None:
    store = SqliteCheckpoints(tmp_path / "c.db").open()
    commits: list[int] = []
    commit_rows = store._set_many

    def counted(rows: dict[tuple[str, str], str]) -> None:
        commits.append(len(rows))
        commit_rows(rows)

    store._set_many = counted  # type: ignore[method-assign]

    def on_disk(shard: str) -> str | None:
        with sqlite3.connect(tmp_path / "c.db") as conn:
            row = conn.execute(
                "SELECT checkpoint FROM checkpoints WHERE shard_id = ?", (shard,)
            ).fetchone()
        return None if row is None else str(row[0])

    async def write(shard: str) -> None:
        for n in range(1, 21):
            await store.set("scope", shard, str(n))
            assert on_disk(shard) == str(n)  # committed (another connection sees it)

    try:
        async with anyio.create_task_group() as tg:
            for shard in ("s0", "s1", "s2", "s3"):
                tg.start_soon(write, shard)
        assert [await store.get("scope", s) for s in ("s0", "s1", "s2", "s3")] == ["20"] * 4
        assert sum(commits) == 80 and len(commits) < 80  # four shards shared commits
        assert max(commits) > 1
    finally:
        await store.close()


async def test_a_lost_sqlite_file_fails_every_shard_waiting_on_the_commit(tmp_path: Path) -> None:
    store = SqliteCheckpoints(tmp_path / "c.db").open()
    await store.set("scope", "s0", "1")
    os.unlink(tmp_path / "c.db")
    failed: list[str] = []

    async def write(shard: str) -> None:
        try:
            await store.set("scope", shard, "2")
        except CheckpointStoreLost:
            failed.append(shard)

    try:
        async with anyio.create_task_group() as tg:
            for shard in ("s0", "s1", "s2"):
                tg.start_soon(write, shard)
        assert sorted(failed) == ["s0", "s1", "s2"]
    finally:
        await store.close()


# ---------------------------------------------------------------------- per-batch bookkeeping


def test_the_finished_prefix_is_right_in_order_out_of_order_and_after_compaction() -> None:
    progress = ShardProgress()
    first = progress.add_many([str(n) for n in range(10_000)])
    lanes = [list(range(first + lane, first + 10_000, 4)) for lane in range(4)]
    # lanes 1-3 finish their first halves before lane 0 starts: nothing moves
    for lane in lanes[1:]:
        assert progress.finish(lane[:1250]) is None
    assert progress.finish(lanes[0][:1]) == "3"  # 0 closes the gap up to 3
    assert progress.finish(lanes[0][1:1250]) == "4999"
    for lane in lanes:
        progress.finish(lane[1250:])
    assert progress.checkpoint == "9999" and progress.outstanding == 0
    more = progress.add_many(["a", "b", "c"])
    assert more == first + 10_000
    assert progress.finish([more + 1, more]) == "b"  # out of order within one call
    assert progress.finish([more, more + 2]) == "c"  # a position finished twice is harmless


def test_the_backlog_hands_out_pages_in_order_in_slices() -> None:
    def records(*ids: str) -> list[SourceRecord]:
        return [SourceRecord(event={}, item_id=i, size=1) for i in ids]

    backlog = Backlog()
    assert not backlog and backlog.peek(5) == []
    backlog.add(records("1", "2", "3"))
    backlog.add(records("4", "5"))
    assert [r.item_id for r in backlog.peek(2)] == ["1", "2"]
    backlog.skip(1)
    assert [r.item_id for r in backlog.peek(10)] == ["2", "3"]  # one page at a time
    backlog.skip(2)
    assert [r.item_id for r in backlog.peek(10)] == ["4", "5"]
    backlog.skip(2)
    assert not backlog


def test_a_slice_of_records_honours_the_count_and_the_payload_limit() -> None:
    small = [SourceRecord(event={}, item_id=str(n), size=100) for n in range(30)]
    builder = BatchBuilder(10)
    assert builder.offer_many(small) == 10 and builder.full
    big = [SourceRecord(event={}, item_id=str(n), size=MAX_PAYLOAD_BYTES // 3) for n in range(5)]
    builder = BatchBuilder(10)
    assert builder.offer_many(big) == 2  # a third would pass 6 MB
    assert builder.size <= MAX_PAYLOAD_BYTES
    huge = [SourceRecord(event={}, item_id="h", size=MAX_PAYLOAD_BYTES + 1)]
    assert BatchBuilder(10).offer_many(huge) == 1  # an empty batch always takes one record
