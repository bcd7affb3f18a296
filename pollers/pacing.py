"""One budget of empty GetRecords calls per second, shared by every shard reader in the process.

A GetRecords call costs about a millisecond of CPU whether or not it returns records, so polling
each quiet shard at a fixed rate makes idle CPU grow with the shard count. Instead, quiet shards
share `polls_per_second`: a few shards are polled at the API's floor (first records seen within
a fifth of a second), hundreds each a few times a minute, and never less often than the mapping's
`idle_poll_max_seconds`. A shard that returns records is polled at the floor regardless.

Hundreds of shards started together (or woken by one burst of records) would otherwise poll in
lockstep, a burst of calls every interval: the first quiet wait after the start or after records
is drawn from the whole interval, which spreads them at once, and every later wait varies a little
so that they do not gather again. Quiet polls still wake on a shared grid of short ticks, so that
each wake-up of the event loop serves a few readers: a poll alone costs about half as much again.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from contextlib import contextmanager

IDLE_POLLS_PER_SECOND = 50.0
"""Default budget: 5 to 10% of a core, at 1 to 2 ms of CPU per call (botocore, the event loop)."""
JITTER = 0.1
"""Later quiet waits vary by up to ±10%: enough to keep readers from gathering again, small
enough that a wait clipped to the cap keeps the average near it."""
TICK_SECONDS = 0.1
"""The grid quiet polls wake on: a tick holds about budget / 10 calls (5 by default), never a
lockstep burst; 512 idle shards took 10% of a core without it, 6% with it."""


HEADROOM_SECONDS = 2 * TICK_SECONDS
"""A quiet wait that reaches the cap ends this much earlier: the cap bounds when the first record
after a quiet spell is seen, so the call that sees it must start, and answer, within the cap (at
512 shards a GetRecords answered within 30 ms at the median and 170 ms at p99 on kinesalite)."""


class PollPacer:
    """Counts the readers polling and tells each how long to wait after an empty page."""

    def __init__(
        self, polls_per_second: float = IDLE_POLLS_PER_SECOND, *, rng: random.Random | None = None
    ) -> None:
        if polls_per_second <= 0:
            raise ValueError("polls_per_second must be positive")
        self.polls_per_second = polls_per_second
        self.readers = 0
        self._random = rng or random.Random()

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Held while a reader polls, so the budget is split among the readers that exist."""
        self.readers += 1
        try:
            yield
        finally:
            self.readers -= 1

    def share(self, floor: float, cap: float) -> float:
        """Each reader's fair interval, within the API's floor and the mapping's cap."""
        return min(max(cap, floor), max(floor, self.readers / self.polls_per_second))

    def quiet_wait(self, floor: float, cap: float, *, first: bool = False) -> float:
        """Seconds from the start of an empty GetRecords to the next one: the share, jittered,
        never below the floor (the API's limit) nor above the cap (the mapping's promise).
        `first` (the start, or records just stopped) draws a random phase instead."""
        wait = self.share(floor, cap)
        if wait <= floor:
            return floor  # few readers: the API's own limit paces them, nothing to spread
        if first:
            return self._random.uniform(floor, wait)
        wait *= self._random.uniform(1 - JITTER, 1 + JITTER)
        return min(max(cap, floor), max(floor, wait))

    def next_poll(self, began: float, floor: float, cap: float, *, first: bool = False) -> float:
        """When (monotonic) a quiet reader whose GetRecords began at `began` polls next: a quiet
        wait later (a wait at the cap leaves the call its headroom), moved back to the tick
        before (so the cap holds), never sooner than the floor."""
        wait = self.quiet_wait(floor, cap, first=first)
        if wait <= floor:
            return began + floor
        wait = min(wait, max(floor, cap - HEADROOM_SECONDS))
        return max(began + floor, math.floor((began + wait) / TICK_SECONDS) * TICK_SECONDS)
