"""Tumbling windows for stream mappings: which window a record falls in, and the window's state.

Pure bookkeeping; the shard reader does the invoking. Windows are aligned to multiples of
TumblingWindowInSeconds from the epoch and chosen by each record's arrival time. A window's `state`
is what the handler returned last; it is carried into the next invocation of the same window and
saved beside the shard's checkpoint, so a restart resumes the window where it was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sluiceway.router.records import SourceRecord

MAX_STATE_BYTES = 1024 * 1024
"""Lambda's cap on a window's state per shard; a bigger state ends the window early."""


def window_start(arrival: float, seconds: int) -> float:
    return math.floor(arrival / seconds) * seconds


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Window:
    """One open window: its bounds and the state the handler returned last."""

    start: float
    end: float
    state: dict[str, Any] = field(default_factory=dict)

    def event_fields(
        self, shard_id: str, stream_arn: str, *, final: bool = False, early: bool = False
    ) -> dict[str, Any]:
        """The keys Lambda adds to a windowed invocation's event."""
        return {
            "window": {"start": _iso(self.start), "end": _iso(self.end)},
            "state": self.state,
            "shardId": shard_id,
            "eventSourceARN": stream_arn,
            "isFinalInvokeForWindow": final,
            "isWindowTerminatedEarly": early,
        }

    def dumps(self) -> str:
        return orjson.dumps({"start": self.start, "end": self.end, "state": self.state}).decode()

    @classmethod
    def loads(cls, text: str) -> Window:
        data = orjson.loads(text)
        return cls(float(data["start"]), float(data["end"]), dict(data.get("state") or {}))


def runs_by_window(records: list[SourceRecord], seconds: int) -> list[list[SourceRecord]]:
    """Consecutive records of one window stay together; a batch never spans two windows."""
    runs: list[list[SourceRecord]] = []
    current: float | None = None
    for record in records:
        start = window_start(record.arrival, seconds)
        if start != current or not runs:
            runs.append([])
            current = start
        runs[-1].append(record)
    return runs


def state_too_large(state: dict[str, Any]) -> bool:
    return len(orjson.dumps(state)) > MAX_STATE_BYTES


@dataclass
class WindowTracker:
    """The window of one lane of one shard."""

    seconds: int
    current: Window | None = None

    def window_for(self, record: SourceRecord) -> Window:
        """The window `record` falls in: the open one, or a fresh one (state {})."""
        start = window_start(record.arrival, self.seconds)
        if self.current is not None and self.current.start == start:
            return self.current
        return Window(start, start + self.seconds)

    def must_close_before(self, record: SourceRecord) -> bool:
        """A record of another window arrived: the open window gets its final invoke first."""
        return self.current is not None and self.current.start != window_start(
            record.arrival, self.seconds
        )

    def due(self, now: float, grace: float) -> bool:
        """The open window's end has passed (plus `grace` for records still on their way)."""
        return self.current is not None and now >= self.current.end + grace

    def seconds_until_due(self, now: float, grace: float) -> float | None:
        if self.current is None:
            return None
        return max(0.0, self.current.end + grace - now)
