"""Pure lease decisions: which leases are expired, which to take, which one to steal.

Kept free of I/O so every rule can be tested from a table. As the Kinesis Client Library does,
expiry is judged by this process's own clock only: a lease whose counter has not moved for the
lease duration is expired, whatever the owner's clock says. A replica takes its fair share of the
ready leases (the total divided by the replicas seen renewing, rounded up), free or expired ones
first, and steals only when none is free — one lease at a time, from the busiest replica, and
only when that narrows the gap — so replicas converge without a leader and without flapping.

A steal is a hand-off (`pollers.leases`): the lease is marked for the taker and stays with its
owner until the owner's batch in flight is finished. A lease being handed over counts for the
replica it goes to, and nobody else may ask for it meanwhile.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class LeaseView:
    """What a scan of the lease table says about one lease."""

    key: str
    owner: str | None
    counter: int
    handoff_to: str | None = None
    """The replica this lease is being handed over to (a steal in progress)."""


@dataclass(slots=True)
class _Seen:
    counter: int
    owner: str | None
    moved_at: float


@dataclass
class ExpiryTracker:
    """Remembers, by the local monotonic clock, when each lease's counter was last seen moving.

    A lease first seen with an owner counts as renewed at that scan (a new replica does not grab
    live leases); a lease without an owner is free at once.
    """

    duration: float
    _seen: dict[str, _Seen] = field(default_factory=dict)

    def observe(self, leases: Iterable[LeaseView], now: float) -> None:
        current: dict[str, _Seen] = {}
        for lease in leases:
            old = self._seen.get(lease.key)
            if old is None or old.counter != lease.counter or old.owner != lease.owner:
                current[lease.key] = _Seen(lease.counter, lease.owner, now)
            else:
                current[lease.key] = old
        self._seen = current

    def expired(self, lease: LeaseView, now: float) -> bool:
        if lease.owner is None:
            return True
        seen = self._seen.get(lease.key)
        if seen is None or seen.counter != lease.counter:
            return False
        return now - seen.moved_at >= self.duration

    def quiet_for(self, key: str, now: float) -> float:
        """Seconds since the lease's counter last moved (0 when never seen)."""
        seen = self._seen.get(key)
        return 0.0 if seen is None else max(0.0, now - seen.moved_at)


@dataclass(frozen=True, slots=True)
class Plan:
    take: tuple[LeaseView, ...] = ()
    """Free or expired leases to take."""
    steal: tuple[LeaseView, ...] = ()
    """Live leases of the busiest replica to take over (at most one)."""
    target: int = 0


def plan_takes(
    leases: Sequence[LeaseView],
    me: str,
    expired: set[str],
    *,
    held: set[str] | None = None,
    max_steal: int = 1,
    rng: random.Random | None = None,
) -> Plan:
    """Decide what `me` takes now, from the ready leases of one scan.

    `expired` names leases whose counters stopped moving (and free ones); `held` names the leases
    this process really holds — a lease the table says is `me`'s but that is not held (a write
    whose answer was lost, a previous life of this replica) is taken back like a free one.
    """
    rng = rng or random.Random()
    held = {lease.key for lease in leases if lease.owner == me} if held is None else held
    available: list[LeaseView] = []
    live: Counter[str] = Counter()
    for lease in leases:
        if lease.handoff_to is not None and lease.key not in expired:
            live[lease.handoff_to] += 1  # on its way there: neither free nor to be stolen
        elif lease.key in held:
            live[me] += 1
        elif lease.owner is None or lease.owner == me or lease.key in expired:
            available.append(lease)
        else:
            live[lease.owner] += 1
    workers = set(live) | {me}
    total = len(leases)
    if total == 0:
        return Plan()
    target = math.ceil(total / len(workers))
    mine = live[me]
    needed = target - mine
    if needed <= 0:
        return Plan(target=target)
    if available:
        rng.shuffle(available)
        return Plan(take=tuple(available[:needed]), target=target)
    others = [(count, owner) for owner, count in live.items() if owner != me]
    if not others or max_steal <= 0:
        return Plan(target=target)
    busiest_count = max(count for count, _ in others)
    if busiest_count - mine < 2:
        return Plan(target=target)  # moving one lease would only swap who is short
    victims = sorted(owner for count, owner in others if count == busiest_count)
    victim = rng.choice(victims)
    candidates = [
        lease
        for lease in leases
        if lease.owner == victim and lease.key not in held and lease.handoff_to is None
    ]
    rng.shuffle(candidates)
    return Plan(steal=tuple(candidates[: min(max_steal, needed)]), target=target)
