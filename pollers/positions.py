"""Extended sequence numbers: where a record sits in a shard, down to one KPL sub-record.

A Kinesis sequence number names one stored record. A KPL-aggregated record holds several user
records, which the Kinesis Client Library tells apart by a sub-sequence number (their index in the
aggregate). With de-aggregation on, a sub-record's identity (its `itemIdentifier`, and the position
a checkpoint stores) is `SEQUENCE:SUB`; a whole record's is its plain sequence number.

A checkpoint `SEQUENCE` means that record is finished: reading resumes after it. A checkpoint
`SEQUENCE:SUB` means the aggregate is finished up to that sub-record: reading resumes at the
aggregate and drops its sub-records up to SUB, so none is delivered twice and none is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

from sluiceway.router.records import SourceRecord

SEPARATOR = ":"


def extended(sequence: str, sub: int) -> str:
    """The position of sub-record `sub` of the aggregate stored at `sequence`."""
    return f"{sequence}{SEPARATOR}{sub}"


def split(position: str) -> tuple[str, int | None]:
    """(sequence number, sub-sequence number or None for a whole record)."""
    sequence, sep, sub = position.partition(SEPARATOR)
    if sep and sub.isdigit():
        return sequence, int(sub)
    return position, None


@dataclass(frozen=True, slots=True)
class FinishedSubRecords:
    """Sub-records of one aggregate that were finished before the reader (re)started there."""

    sequence: str
    through: int

    def drop(self, records: list[tuple[SourceRecord, str]]) -> list[tuple[SourceRecord, str]]:
        """`records` (a page read from the aggregate on) without the finished sub-records."""
        start = 0
        for record, _ in records:
            sequence, sub = split(record.item_id)
            if sequence != self.sequence or sub is None or sub > self.through:
                break
            start += 1
        return records[start:] if start else records
