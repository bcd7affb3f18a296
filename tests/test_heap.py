"""The service's garbage-collector policy: start-up's survivors frozen, young collections rarer."""

from __future__ import annotations

import gc

from sluiceway.core import heap


def test_settle_freezes_survivors_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        survivor = {"kept": [1, 2, 3]}
        heap.settle()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, before[1], before[2])
        assert survivor["kept"] == [1, 2, 3]
        # Cyclic garbage made afterwards is still collected.
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
