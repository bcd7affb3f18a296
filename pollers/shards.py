"""Shards and their lineage: which shard may be read now, and from where.

As the Kinesis Client Library does, a child shard (from a split or a merge) starts only after
every parent is finished — read to its end and checkpointed `SHARD_END` — so records of one key
are handled in order across a reshard. Parents that are no longer listed (past retention) count
as finished.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sluiceway.pollers.positions import FinishedSubRecords, split

SHARD_END = "SHARD_END"
"""Checkpoint of a closed shard that is finished; its children may start."""

IteratorType = Literal[
    "TRIM_HORIZON", "LATEST", "AT_TIMESTAMP", "AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"
]


@dataclass(frozen=True, slots=True)
class Shard:
    shard_id: str
    parents: tuple[str, ...] = ()
    closed: bool = False
    """The listing gave an ending sequence number: no records will be added."""


@dataclass(frozen=True, slots=True)
class StartPosition:
    """Where a shard iterator starts."""

    kind: IteratorType
    sequence: str | None = None
    timestamp: float | None = None
    finished_through: int | None = None
    """AT_SEQUENCE_NUMBER of an aggregate: its sub-records up to this one are finished."""

    @classmethod
    def after(cls, sequence: str) -> StartPosition:
        return cls("AFTER_SEQUENCE_NUMBER", sequence=sequence)

    @classmethod
    def resume(cls, checkpoint: str) -> StartPosition:
        """Where reading resumes from a checkpoint: after a whole record, or at an aggregate
        finished part of the way (`pollers.positions`), since after it would skip the rest."""
        sequence, sub = split(checkpoint)
        if sub is None:
            return cls.after(sequence)
        return cls("AT_SEQUENCE_NUMBER", sequence=sequence, finished_through=sub)

    @property
    def finished(self) -> FinishedSubRecords | None:
        """The sub-records to drop when reading from here (None: nothing to drop)."""
        if self.sequence is None or self.finished_through is None:
            return None
        return FinishedSubRecords(self.sequence, self.finished_through)

    def __str__(self) -> str:
        """As a user writes it: `TRIM_HORIZON`, `AT_TIMESTAMP 2026-01-01T00:00:00Z`,
        `AFTER_SEQUENCE_NUMBER 4959…`."""
        if self.timestamp is not None:
            return f"{self.kind} {utc_text(self.timestamp)}"
        if self.sequence is not None:
            return f"{self.kind} {self.sequence}"
        return self.kind


def utc_text(timestamp: float) -> str:
    """Unix seconds as ISO 8601 in UTC, with milliseconds only when there are any."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    spec = "seconds" if moment.microsecond == 0 else "milliseconds"
    return moment.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


TRIM_HORIZON = StartPosition("TRIM_HORIZON")


def shard_from_listing(entry: dict[str, object]) -> Shard:
    """A Shard from a ListShards (Kinesis) or DescribeStream (DynamoDB Streams) entry."""
    parents = tuple(
        str(entry[k]) for k in ("ParentShardId", "AdjacentParentShardId") if entry.get(k)
    )
    ranges = entry.get("SequenceNumberRange")
    closed = isinstance(ranges, dict) and bool(ranges.get("EndingSequenceNumber"))
    return Shard(str(entry["ShardId"]), parents, closed)


class Lineage:
    """Decides, from the latest listing and the stored checkpoints, which shards to start.

    Starting positions: a stored checkpoint always wins. Without one, a shard starts at the
    mapping's position, except under LATEST: a child of a parent this mapping read starts at
    TRIM_HORIZON (everything in it came after the point the mapping started from), and a shard
    already closed when first seen, with no parent read, is passed over (nothing in it is new).
    """

    def __init__(self, starting: StartPosition) -> None:
        self.starting = starting
        self.started: set[str] = set()
        self.finished: set[str] = set()
        self._read: set[str] = set()

    def mark_finished(self, shard_id: str) -> None:
        self.finished.add(shard_id)

    def release(self, shard_id: str) -> None:
        """The shard stopped before its end (its lease moved away): it may be started again."""
        self.started.discard(shard_id)

    def ready(self, shards: Iterable[Shard]) -> set[str]:
        """Shards not finished whose listed parents are all finished: the ones worth a lease."""
        by_id = {s.shard_id: s for s in shards}
        return {
            sid
            for sid, shard in by_id.items()
            if sid not in self.finished
            and all(p in self.finished for p in shard.parents if p in by_id)
        }

    def plan(
        self,
        shards: Iterable[Shard],
        checkpoints: dict[str, str | None],
        held: Container[str] | None = None,
    ) -> list[tuple[Shard, StartPosition]]:
        """Shards to start now, with their positions; call again when a shard finishes.

        With `held`, only those shards are started (the others' leases belong to other replicas),
        though every shard's checkpoint still counts towards which are finished.
        """
        by_id = {s.shard_id: s for s in shards}
        out: list[tuple[Shard, StartPosition]] = []
        changed = True
        while changed:
            changed = False
            for shard in by_id.values():
                sid = shard.shard_id
                if sid in self.started or sid in self.finished:
                    continue
                checkpoint = checkpoints.get(sid)
                if checkpoint == SHARD_END:
                    self.finished.add(sid)
                    self._read.add(sid)
                    changed = True
                    continue
                parents = [p for p in shard.parents if p in by_id]
                if any(p not in self.finished for p in parents):
                    continue
                position = self._position(shard, parents, checkpoint)
                if position is None:
                    self.finished.add(sid)
                    changed = True
                    continue
                if held is not None and sid not in held:
                    continue
                self.started.add(sid)
                self._read.add(sid)
                out.append((shard, position))
        return out

    def _position(
        self, shard: Shard, parents: list[str], checkpoint: str | None
    ) -> StartPosition | None:
        if checkpoint:
            return StartPosition.resume(checkpoint)
        if self.starting.kind != "LATEST":
            return self.starting
        if any(p in self._read for p in parents):
            return TRIM_HORIZON
        return None if shard.closed else self.starting
