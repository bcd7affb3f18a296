"""Pure bookkeeping for one shard: which lane a record goes to, and how far the shard is finished.

With ParallelizationFactor > 1 batches of one shard finish out of order; the checkpoint may only
move to the end of the contiguous finished prefix, or a crash would skip unfinished records.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Sequence

from sluiceway.router.records import SourceRecord


def lane_for(key: str | None, lanes: int) -> int:
    """Stable across processes (unlike `hash`), so a key keeps its lane and its order."""
    if lanes <= 1 or key is None:
        return 0
    return zlib.crc32(key.encode()) % lanes


class ShardProgress:
    """Records in read order, by position; tells the checkpoint once a prefix is finished.

    Each record is tracked with the checkpoint that marks it (and everything before it)
    finished: its sequence number, or for a KPL sub-record before the last of its aggregate the
    extended `SEQUENCE:SUB` (`pollers.positions`), from which a reader resumes inside the
    aggregate instead of after it.

    Per page and per batch, not per record: a page's checkpoints are appended in one call, and
    a batch that finishes the oldest outstanding records (the usual case: one lane, or the
    lane that holds the oldest record) moves the prefix without touching each record. Only
    positions finished ahead of an unfinished one are remembered one by one.
    """

    __slots__ = ("_ahead", "_base", "_checkpoints", "_head", "checkpoint", "last_read")

    _COMPACT_AT = 4096
    """Finished checkpoints dropped from the front of the list once this many pile up."""

    def __init__(self) -> None:
        self._checkpoints: list[str] = []
        self._head = 0
        """Index in `_checkpoints` of the oldest outstanding record."""
        self._base = 0
        """Position of the oldest outstanding record."""
        self._ahead: set[int] = set()
        """Finished positions past the first unfinished one."""
        self.last_read: str | None = None
        self.checkpoint: str | None = None

    def add(self, checkpoint: str) -> int:
        """Track a record just read; returns its position."""
        return self.add_many([checkpoint])

    def add_many(self, checkpoints: list[str]) -> int:
        """Track a page of records just read (their checkpoints); returns the first's position."""
        first = self._base + self.outstanding
        if checkpoints:
            self._checkpoints.extend(checkpoints)
            self.last_read = checkpoints[-1]
        return first

    def finish(self, positions: Sequence[int]) -> str | None:
        """Mark the records at `positions` finished; returns the new checkpoint if it moved."""
        if not positions:
            return None
        base = self._base
        count = len(positions)
        if (
            positions[0] == base
            and count <= self.outstanding
            and list(positions) == list(range(base, base + count))
        ):
            done = count  # the oldest outstanding records, in order: the prefix moves past them
        else:
            end = base + self.outstanding
            self._ahead.update(p for p in positions if base <= p < end)
            done = 0
        ahead = self._ahead
        if ahead:
            while base + done in ahead:
                ahead.discard(base + done)
                done += 1
        if not done:
            return None
        self._base = base + done
        self._head += done
        moved = self._checkpoints[self._head - 1]
        if self._head >= self._COMPACT_AT and self._head * 2 >= len(self._checkpoints):
            del self._checkpoints[: self._head]
            self._head = 0
        self.checkpoint = moved
        return moved

    @property
    def outstanding(self) -> int:
        """Records read but not yet finished."""
        return len(self._checkpoints) - self._head


class Backlog:
    """A lane's records received from the reader and not batched yet, in order.

    Whole pages are kept as they came and a batch is read off them in slices, so batching costs
    a few calls per batch rather than a pop per record.
    """

    __slots__ = ("_at", "_page", "_pages")

    def __init__(self) -> None:
        self._page: list[SourceRecord] = []
        self._at = 0
        """Index in `_page` of the next record."""
        self._pages: deque[list[SourceRecord]] = deque()

    def __bool__(self) -> bool:
        return self._at < len(self._page) or bool(self._pages)

    def add(self, page: list[SourceRecord]) -> None:
        if self._at < len(self._page):
            self._pages.append(page)
        else:
            self._page, self._at = page, 0

    def peek(self, most: int) -> list[SourceRecord]:
        """Up to `most` next records (from one page; empty only when the backlog is)."""
        if self._at >= len(self._page):
            if not self._pages:
                return []
            self._page, self._at = self._pages.popleft(), 0
        at = self._at
        if at == 0 and most >= len(self._page):
            return self._page
        return self._page[at : at + most]

    def skip(self, count: int) -> None:
        """Drop the first `count` records of the last `peek`."""
        self._at += count
