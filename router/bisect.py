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


def failure_index(
    item_ids: Sequence[str],
    failed_ids: Sequence[str],
    aliases: Sequence[str | None] = (),
) -> int:
    """Index of the first record reported failed: streams checkpoint just before it.

    The record with the lowest sequence number comes first in shard order. A record is named by
    its id or by its alias: a KPL sub-record's extended sequence number names it alone, its
    aggregate's sequence number names the first sub-record of that aggregate in the range.
    """
    failed = set(failed_ids)
    for index, item_id in enumerate(item_ids):
        alias = aliases[index] if index < len(aliases) else None
        if item_id in failed or (alias is not None and alias in failed):
            return index
    return 0
