"""Cutting a failed range of stream records: in halves (bisect) or at the lowest failed record.

Pure; order is kept: the left part is always retried before the right one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def bisect(items: Sequence[T]) -> tuple[list[T], list[T]]:
    """[0, n/2) and [n/2, n): AWS's split of a batch on a function error."""
    middle = len(items) // 2
    return list(items[:middle]), list(items[middle:])


def failure_index(item_ids: Sequence[str], failed_ids: Sequence[str]) -> int:
    """Index of the first record whose id was reported failed: streams checkpoint just before it.

    The record with the lowest sequence number comes first in shard order; KPL sub-records share
    their aggregate's sequence number, so the first of them is the cut.
    """
    failed = set(failed_ids)
    for index, item_id in enumerate(item_ids):
        if item_id in failed:
            return index
    return 0
