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

    async def close(self) -> None: ...


class MemoryCheckpoints:
    """Checkpoints that live as long as the process: tests, demos, throw-away runs."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], str] = {}

    async def get(self, scope: str, shard_id: str) -> str | None:
        return self._data.get((scope, shard_id))

    async def set(self, scope: str, shard_id: str, checkpoint: str) -> None:
        self._data[(scope, shard_id)] = checkpoint

    async def close(self) -> None:
        return None
