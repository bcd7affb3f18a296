"""The pure lease rules, table-driven: expiry by a counter that stopped moving, fair shares,
free leases before stealing, one steal at a time from the busiest, no flapping."""

from __future__ import annotations

import random

import pytest
from sluiceway.pollers.lease_balance import ExpiryTracker, LeaseView, Plan, plan_takes


def leases(spec: str) -> list[LeaseView]:
    """'a b - a' → lease 0 owned by a, 1 by b, 2 free, 3 by a."""
    return [
        LeaseView(f"s{i}", None if owner == "-" else owner, 1)
        for i, owner in enumerate(spec.split())
    ]


@pytest.mark.parametrize(
    ("spec", "expired", "takes", "steals", "target"),
    [
        # no leases: nothing to do
        ("", set(), 0, 0, 0),
        # alone: take everything free
        ("- - - -", set(), 4, 0, 4),
        # two replicas, four leases: fair share 2
        ("b b - -", set(), 2, 0, 2),
        # own share reached: nothing
        ("me me b b", set(), 0, 0, 2),
        # a dead replica's leases (expired) are taken like free ones, up to the share
        ("b b b b", {"s0", "s1", "s2", "s3"}, 4, 0, 4),
        ("b b c c", {"s0", "s1"}, 2, 0, 2),
        # a newcomer steals one, from the busiest, only when nothing is free
        ("b b b b", set(), 0, 1, 2),
        ("b b b c", set(), 0, 1, 2),
        # gap of one: stealing would only swap who is short
        ("me b b", set(), 0, 0, 2),
        ("me me b b c", set(), 0, 0, 2),
        # free leases win over stealing even when someone is busy
        ("b b b -", set(), 1, 0, 2),
        # uneven share rounds up: 5 leases, 2 replicas
        ("- - - - -", set(), 5, 0, 5),
        ("b b b - -", set(), 2, 0, 3),
    ],
)
def test_plan_takes(spec: str, expired: set[str], takes: int, steals: int, target: int) -> None:
    plan = plan_takes(leases(spec), "me", expired, rng=random.Random(1))
    assert (len(plan.take), len(plan.steal), plan.target) == (takes, steals, target)
    for lease in plan.take:
        assert lease.owner is None or lease.key in expired or lease.owner == "me"
    for lease in plan.steal:
        owners = [v.owner for v in leases(spec)]
        assert owners.count(lease.owner) == max(owners.count(o) for o in set(owners) - {"me"})


def test_a_lease_recorded_as_mine_but_not_held_is_taken_back() -> None:
    views = leases("me me b b")
    plan = plan_takes(views, "me", set(), held={"s0"})
    assert [v.key for v in plan.take] == ["s1"]


def test_steals_converge_without_flapping() -> None:
    """Three replicas joining one by one end with 4/4/4 of 12 leases and then stay put."""
    owners = ["a"] * 12
    rng = random.Random(7)
    for _ in range(40):
        for me in ("a", "b", "c"):
            views = [LeaseView(f"s{i}", o, 1) for i, o in enumerate(owners)]
            plan = plan_takes(views, me, set(), rng=rng)
            for lease in (*plan.take, *plan.steal):
                owners[int(lease.key[1:])] = me
    assert sorted(owners.count(o) for o in "abc") == [4, 4, 4]
    for me in ("a", "b", "c"):
        views = [LeaseView(f"s{i}", o, 1) for i, o in enumerate(owners)]
        plan = plan_takes(views, me, set(), rng=rng)
        assert not plan.take and not plan.steal


@pytest.mark.parametrize(
    ("scans", "at", "expired"),
    [
        # (time, counter, owner) per scan; expired at `at`?
        ([(0, 1, "b")], 5, False),  # first seen owned: counts as renewed at that scan
        ([(0, 1, "b")], 10, True),  # stood still for the whole duration
        ([(0, 1, "b"), (6, 2, "b")], 12, False),  # moved at 6: alive until 16
        ([(0, 1, "b"), (6, 2, "b")], 16, True),
        ([(0, 1, None)], 0, True),  # free is always available
        ([(0, 1, "b"), (9, 1, "c")], 12, False),  # a new owner restarts the clock
    ],
)
def test_expiry_is_judged_by_the_local_clock(
    scans: list[tuple[float, int, str | None]], at: float, expired: bool
) -> None:
    tracker = ExpiryTracker(duration=10)
    for now, counter, owner in scans:
        tracker.observe([LeaseView("s", owner, counter)], now)
    _, counter, owner = scans[-1]
    assert tracker.expired(LeaseView("s", owner, counter), at) is expired


def test_a_lease_being_handed_over_counts_for_its_taker() -> None:
    """b asked a for s0: b has its share, a third replica steals from no one, and a does not
    take the lease back (it is a's no more, whatever the owner field says)."""
    views = [
        LeaseView("s0", "a", 2, handoff_to="b"),
        LeaseView("s1", "a", 1),
        LeaseView("s2", "b", 1),
        LeaseView("s3", "a", 1),
    ]
    assert plan_takes(views, "b", set(), rng=random.Random(1)) == Plan(target=2)
    assert plan_takes(views, "a", set(), held={"s0", "s1", "s3"}) == Plan(target=2)
    newcomer = plan_takes(views, "c", set(), rng=random.Random(1))
    assert newcomer.take == () and [v.key for v in newcomer.steal] in (["s1"], ["s3"])


def test_a_lease_being_handed_over_is_never_asked_for_twice() -> None:
    views = [LeaseView("s0", "a", 2, handoff_to="b"), LeaseView("s1", "a", 1)]
    views += [LeaseView(f"s{i}", "a", 1, handoff_to="b") for i in (2, 3)]
    # b, busiest once its hand-offs land, has nothing c may ask for yet; a's last one is not
    # worth moving (a has 1, c 0)
    assert plan_takes(views, "c", set(), rng=random.Random(1)).steal == ()


def test_an_expired_lease_being_handed_over_is_free_for_anyone() -> None:
    """The owner died mid-hand-off: its counter stopped, so the mark holds nothing back."""
    views = [LeaseView("s0", "a", 2, handoff_to="b"), LeaseView("s1", "c", 1)]
    plan = plan_takes(views, "c", {"s0"}, rng=random.Random(1))
    assert [v.key for v in plan.take] == ["s0"]
