"""The process-wide poll budget: how long a quiet shard waits, and who counts towards it."""

from __future__ import annotations

import random
import time
from statistics import mean
from typing import Any

import pytest
from sluiceway.core.stats import MappingStats
from sluiceway.handlers.invoker import Invoker
from sluiceway.handlers.results import InvocationResult, Returned
from sluiceway.pollers.checkpoints import SHARD_END, MemoryCheckpoints
from sluiceway.pollers.pacing import HEADROOM_SECONDS, JITTER, TICK_SECONDS, PollPacer
from sluiceway.pollers.shards import Shard, StartPosition
from sluiceway.pollers.stream import RecordsPage, ShardReader
from sluiceway.router.records import SourceRecord
from sluiceway.router.runner import BatchRunner

FLOOR, CAP = 0.2, 10.0


def pacer_with(readers: int, budget: float = 50.0, seed: int = 7) -> PollPacer:
    pacer = PollPacer(budget, rng=random.Random(seed))
    pacer.readers = readers
    return pacer


def test_a_few_shards_are_polled_at_the_floor_without_jitter() -> None:
    for readers in (1, 4, 10):
        pacer = pacer_with(readers)
        assert {pacer.quiet_wait(FLOOR, CAP) for _ in range(100)} == {FLOOR}
        assert pacer.quiet_wait(FLOOR, CAP, first=True) == FLOOR


def test_many_shards_split_the_budget_on_average() -> None:
    pacer = pacer_with(100)  # 100 readers / 50 polls a second: each every 2 s
    assert pacer.share(FLOOR, CAP) == 2.0
    waits = [pacer.quiet_wait(FLOOR, CAP) for _ in range(4000)]
    assert mean(waits) == pytest.approx(2.0, rel=0.02)


def test_jitter_stays_within_its_bounds_and_spreads_the_waits() -> None:
    pacer = pacer_with(100)
    waits = [pacer.quiet_wait(FLOOR, CAP) for _ in range(4000)]
    assert min(waits) >= 2.0 * (1 - JITTER) and max(waits) <= 2.0 * (1 + JITTER)
    assert max(waits) - min(waits) > 2.0 * JITTER  # not lockstep: they cover most of the range


def test_jitter_never_goes_below_the_floor() -> None:
    pacer = pacer_with(21, budget=100)  # share 0.21 s, just over the floor: jitter reaches 0.189
    waits = [pacer.quiet_wait(FLOOR, CAP) for _ in range(2000)]
    assert min(waits) == FLOOR and max(waits) > FLOOR


def test_the_first_quiet_wait_is_a_random_phase_over_the_whole_interval() -> None:
    pacer = pacer_with(5000)  # capped: later waits stay within 10% of the cap
    phases = [pacer.quiet_wait(FLOOR, CAP, first=True) for _ in range(4000)]
    assert FLOOR <= min(phases) < 0.5 and 9.5 < max(phases) <= CAP
    assert mean(phases) == pytest.approx((FLOOR + CAP) / 2, rel=0.05)


def test_the_mappings_cap_bounds_the_wait_whatever_the_budget() -> None:
    pacer = pacer_with(5000)  # a share of 100 s
    assert pacer.share(FLOOR, CAP) == CAP
    waits = [pacer.quiet_wait(FLOOR, CAP) for _ in range(2000)]
    assert max(waits) == CAP and min(waits) >= CAP * (1 - JITTER)
    assert max(pacer.quiet_wait(FLOOR, CAP, first=True) for _ in range(100)) <= CAP
    assert max(pacer.quiet_wait(FLOOR, 1.0) for _ in range(100)) <= 1.0  # Lambda's once a second
    assert pacer.quiet_wait(FLOOR, 0.1) == FLOOR  # a cap under the API's floor cannot win


def test_a_larger_budget_polls_more_often() -> None:
    assert pacer_with(512, budget=50).share(FLOOR, 300) == pytest.approx(10.24)
    assert pacer_with(512, budget=1000).share(FLOOR, 300) == pytest.approx(0.512)


def test_quiet_polls_wake_on_a_shared_grid_within_the_floor_and_the_cap() -> None:
    draw = random.Random(3)
    for readers in (12, 100, 5000):
        pacer = pacer_with(readers)
        for _ in range(500):
            began = draw.uniform(0, 1000)
            due = pacer.next_poll(began, FLOOR, CAP, first=draw.random() < 0.5)
            assert FLOOR - 1e-9 <= due - began <= CAP
            on_grid = abs(due / TICK_SECONDS - round(due / TICK_SECONDS)) < 1e-6
            assert on_grid or due == began + FLOOR


def test_at_lambdas_bound_a_quiet_shard_is_polled_early_enough_to_see_within_a_second() -> None:
    pacer = pacer_with(512)  # 512 shards, the default cap of 1 s: every wait is capped
    draw = random.Random(7)
    gaps = []
    for _ in range(1000):
        began = draw.uniform(0, 1000)
        gaps.append(pacer.next_poll(began, FLOOR, 1.0) - began)
    assert max(gaps) <= 1.0 - HEADROOM_SECONDS + 1e-9  # the call itself has the rest
    assert min(gaps) > 1.0 - HEADROOM_SECONDS - TICK_SECONDS - 1e-9  # and no more polls


def test_a_few_shards_keep_their_own_floor_pace_off_the_grid() -> None:
    assert pacer_with(4).next_poll(12.345, FLOOR, CAP) == pytest.approx(12.545)


def test_readers_count_while_reading_and_leave_on_error() -> None:
    pacer = PollPacer()
    with pacer.reading():
        with pacer.reading():
            assert pacer.readers == 2
        assert pacer.readers == 1
    with pytest.raises(RuntimeError), pacer.reading():
        raise RuntimeError("shard failed")
    assert pacer.readers == 0


def test_a_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        PollPacer(0)


# --- the reader's use of it ------------------------------------------------------------------------


class ScriptedStream:
    """A shard whose GetRecords pages are given in advance; the last one ends the shard."""

    stream_arn = "arn:aws:kinesis:us-east-1:123456789012:stream/s"
    min_poll_interval = 0.001

    def __init__(self, pages: list[int], pacer: PollPacer) -> None:
        self.pages = pages
        self.pacer = pacer
        self.readers_seen: list[int] = []

    async def resolve(self) -> None: ...

    async def list_shards(self) -> list[Shard]:
        return [Shard("shard-1", (), True)]

    async def get_iterator(self, shard_id: str, position: StartPosition) -> str:
        return "0"

    async def get_records(self, shard_id: str, iterator: str) -> RecordsPage:
        self.readers_seen.append(self.pacer.readers)
        index = int(iterator)
        records = [
            (SourceRecord(event={"n": n}, item_id=f"{index}-{n}", size=1, key="k"), f"{index}-{n}")
            for n in range(self.pages[index])
        ]
        last = index == len(self.pages) - 1
        return RecordsPage(records, None if last else str(index + 1))


class CountingPacer(PollPacer):
    """Records each quiet wait asked for and answers the floor, so the test runs at once."""

    def __init__(self) -> None:
        super().__init__()
        self.quiet: list[tuple[float, float, bool]] = []

    def quiet_wait(self, floor: float, cap: float, *, first: bool = False) -> float:
        self.quiet.append((floor, cap, first))
        return floor


class Accept(Invoker):
    async def invoke(self, event: dict[str, object]) -> InvocationResult:
        return Returned(None)


def reader_of(api: ScriptedStream, store: MemoryCheckpoints, **options: Any) -> ShardReader:
    """A reader of the scripted shard with the stream's pacer and a mapping's 30 s quiet cap."""
    stats = MappingStats(mapping="k", kind="kinesis")
    return ShardReader(
        api=api,
        shard=Shard("shard-1", (), True),
        start=StartPosition("TRIM_HORIZON"),
        scope="k",
        store=store,
        runner=BatchRunner(invoker=Accept(), stats=stats),
        stats=stats,
        batch_size=10,
        window=0,
        idle_poll_max=30.0,
        pacer=api.pacer,
        **options,
    )


@pytest.mark.anyio
async def test_a_reader_asks_the_pacer_only_after_empty_pages_and_leaves_when_done() -> None:
    pacer = CountingPacer()
    api = ScriptedStream([0, 0, 2, 0, 0, 1, 0, 0], pacer)
    store = MemoryCheckpoints()
    await reader_of(api, store).run()
    assert api.readers_seen == [1] * 8
    # Every empty page but the last (the shard's end) waits as the pacer says, and the first
    # after the start or after records draws a phase; pages with records wait only the floor.
    firsts = [first for floor, cap, first in pacer.quiet if (floor, cap) == (0.001, 30.0)]
    assert firsts == [True, False, True, False, True]
    assert pacer.readers == 0
    assert await store.get("k", "shard-1") == SHARD_END


class Clocked(ScriptedStream):
    """Notes when each GetRecords call starts."""

    def __init__(self, pages: list[int], pacer: PollPacer) -> None:
        super().__init__(pages, pacer)
        self.calls: list[float] = []

    async def get_records(self, shard_id: str, iterator: str) -> RecordsPage:
        self.calls.append(time.monotonic())
        return await super().get_records(shard_id, iterator)


@pytest.mark.anyio
async def test_a_mappings_poll_interval_spaces_every_call_busy_or_quiet() -> None:
    api = Clocked([3, 0, 2, 0], PollPacer())
    await reader_of(api, MemoryCheckpoints(), poll_interval=0.3).run()
    gaps = [later - earlier for earlier, later in zip(api.calls, api.calls[1:], strict=False)]
    assert len(gaps) == 3
    assert all(gap >= 0.29 for gap in gaps)  # never sooner than the mapping's interval
