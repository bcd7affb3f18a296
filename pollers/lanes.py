"""Pure bookkeeping for one shard: which lane a record goes to, and how far the shard is finished.

With ParallelizationFactor > 1 batches of one shard finish out of order; the checkpoint may only
move to the end of the contiguous finished prefix, or a crash would skip unfinished records.
"""

from __future__ import annotations

import zlib
from collections import deque
from dataclasses import dataclass


def lane_for(key: str | None, lanes: int) -> int:
    """Stable across processes (unlike `hash`), so a key keeps its lane and its order."""
    if lanes <= 1 or key is None:
        return 0
    return zlib.crc32(key.encode()) % lanes


@dataclass(slots=True)
class _Entry:
    checkpoint: str
    done: bool = False


class ShardProgress:
    """Records in read order, by position; tells the checkpoint once a prefix is finished.

    Each record is tracked with the checkpoint that marks it (and everything before it)
    finished: its sequence number, or for a KPL sub-record before the last of its aggregate the
    extended `SEQUENCE:SUB` (`pollers.positions`), from which a reader resumes inside the
    aggregate instead of after it.
    """

    def __init__(self) -> None:
        self._entries: deque[_Entry] = deque()
        self._base = 0
        self.last_read: str | None = None
        self.checkpoint: str | None = None

    def add(self, checkpoint: str) -> int:
        """Track a record just read; returns its position."""
        self._entries.append(_Entry(checkpoint))
        self.last_read = checkpoint
        return self._base + len(self._entries) - 1

    def add_many(self, checkpoints: list[str]) -> int:
        """Track a page of records just read (their checkpoints); returns the first's position."""
        first = self._base + len(self._entries)
        if checkpoints:
            self._entries.extend([_Entry(checkpoint) for checkpoint in checkpoints])
            self.last_read = checkpoints[-1]
        return first

    def finish(self, positions: list[int]) -> str | None:
        """Mark records finished; returns the new checkpoint if it moved."""
        for position in positions:
            index = position - self._base
            if 0 <= index < len(self._entries):
                self._entries[index].done = True
        moved: str | None = None
        while self._entries and self._entries[0].done:
            moved = self._entries.popleft().checkpoint
            self._base += 1
        if moved is not None:
            self.checkpoint = moved
        return moved

    @property
    def outstanding(self) -> int:
        """Records read but not yet finished."""
        return len(self._entries)
