"""Batch limits shared by every source: record count, Lambda's 6 MB payload, and the window."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter

from sluiceway.router.records import SourceRecord

MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
"""Lambda's synchronous invocation payload limit, fixed for every event source mapping."""
_EVENT_OVERHEAD = len(b'{"Records":[]}')
_size = attrgetter("size")


@dataclass
class BatchBuilder:
    """Accumulates records until BatchSize or the 6 MB payload limit is reached.

    A record that would push the batch past 6 MB is refused (the caller carries it over to the
    next batch); an empty batch always takes a record, so one huge record can never wedge a source.
    """

    max_records: int
    max_bytes: int = MAX_PAYLOAD_BYTES
    records: list[SourceRecord] = field(default_factory=list)
    size: int = _EVENT_OVERHEAD

    def offer(self, record: SourceRecord) -> bool:
        """Add `record` if it fits; False means the batch is complete without it."""
        if self.records and (
            len(self.records) >= self.max_records or self.size + record.size + 1 > self.max_bytes
        ):
            return False
        self.records.append(record)
        self.size += record.size + 1
        return True

    def offer_many(self, records: Sequence[SourceRecord]) -> int:
        """Add as many of `records` as fit, in order; returns how many (the next one completes
        the batch without it). All at once when they fit, as most batches do."""
        chunk = records[: self.remaining] if len(records) > self.remaining else records
        size = sum(map(_size, chunk)) + len(chunk)
        if chunk and self.size + size <= self.max_bytes:
            self.records.extend(chunk)
            self.size += size
            return len(chunk)
        taken = 0
        for record in chunk:
            if not self.offer(record):
                break
            taken += 1
        return taken

    @property
    def full(self) -> bool:
        return len(self.records) >= self.max_records

    @property
    def remaining(self) -> int:
        return max(0, self.max_records - len(self.records))

    def __len__(self) -> int:
        return len(self.records)


def split_by_key(records: list[SourceRecord]) -> list[list[SourceRecord]]:
    """Group records by ordering key, keeping arrival order inside each group and across groups."""
    groups: dict[str | None, list[SourceRecord]] = {}
    for record in records:
        groups.setdefault(record.key, []).append(record)
    return list(groups.values())
