"""Where a stream mapping remembers how far each shard is finished.

A checkpoint is the sequence number of the last record that is finished (handled, filtered out or,
later, sent to a destination), or `SHARD_END` once a closed shard has been read and finished to its
end. Readers resume AFTER the checkpoint, so a crash re-delivers at most what was in flight.
"""

from __future__ import annotations

from typing import Protocol

SHARD_END = "SHARD_END"
"""Checkpoint of a closed shard that is finished; its children may start."""


class CheckpointStore(Protocol):
    """Checkpoints keyed by (scope, shard id); scope names the mapping and its stream."""

    async def get(self, scope: str, shard_id: str) -> str | None: ...

    async def set(self, scope: str, shard_id: str, checkpoint: str) -> None: ...

    async def get_window(self, scope: str, shard_id: str) -> str | None:
        """A tumbling window's saved state (JSON text), None when no window is open."""
        ...

    async def set_window(self, scope: str, shard_id: str, window: str | None) -> None:
        """Save (or, with None, drop) a tumbling window's state beside the shard's checkpoint."""
        ...

    async def close(self) -> None: ...


class MemoryCheckpoints:
    """Checkpoints that live as long as the process: tests, demos, throw-away runs."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], str] = {}
        self._windows: dict[tuple[str, str], str] = {}

    async def get(self, scope: str, shard_id: str) -> str | None:
        return self._data.get((scope, shard_id))

    async def set(self, scope: str, shard_id: str, checkpoint: str) -> None:
        self._data[(scope, shard_id)] = checkpoint

    async def get_window(self, scope: str, shard_id: str) -> str | None:
        return self._windows.get((scope, shard_id))

    async def set_window(self, scope: str, shard_id: str, window: str | None) -> None:
        if window is None:
            self._windows.pop((scope, shard_id), None)
        else:
            self._windows[(scope, shard_id)] = window

    async def close(self) -> None:
        return None
