"""Where a stream mapping remembers how far each shard is finished, and who may read it.

A checkpoint is the sequence number of the last record that is finished (handled, filtered out or
sent to a destination), or `SHARD_END` once a closed shard has been read and finished to its end.
Readers resume AFTER the checkpoint, so a crash re-delivers at most what was in flight or
finished but not yet written (a shard's writes are coalesced: `pollers.checkpoint_writer`).

A store also hands out the leases of a scope: a store on one machine (memory, SQLite) holds every
shard itself; a shared one (DynamoDB) splits them between replicas.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import TYPE_CHECKING

from sluiceway.core.errors import SluicewayError
from sluiceway.pollers.shards import SHARD_END, Shard

if TYPE_CHECKING:
    from sluiceway.pollers.leases import Lease

__all__ = [
    "SHARD_END",
    "CheckpointStore",
    "CheckpointStoreFailed",
    "MemoryCheckpoints",
    "ShardLeases",
]

ReadyFor = Callable[[dict[str, str | None]], set[str]]
"""Given every shard's checkpoint as the store has it, the shards that may be read now."""


class CheckpointStoreFailed(SluicewayError, RuntimeError):
    """The store can no longer keep checkpoints (its file vanished, is corrupt or cannot be
    written). Stream mappings on it stop and the service exits non-zero, so an orchestrator
    restarts it; nothing is checkpointed after the failure."""


class ShardLeases(abc.ABC):
    """What a stream poller asks of leases for one scope (mapping + stream)."""

    owner: str
    renew_interval: float
    """Seconds between renewals (and scans): well inside the lease duration."""
    last_scan: list[Lease]
    """Every lease of the scope as last read (empty for a single owner)."""
    on_lost: Callable[[str], None] | None = None
    """Called the moment a loss is seen, so the shard's reader stops before its next batch."""
    on_handoff: Callable[[str], None] | None = None
    """Called the moment another replica asks for a held lease (a rebalancing steal): the
    shard's reader stops after its batches in flight, and `release` hands the lease over."""
    handoff_timeout: float = 30.0
    """How long a taker waits for the owner to hand a lease over before taking it anyway."""

    @abc.abstractmethod
    async def sync(self, shards: list[Shard], ready: ReadyFor) -> None:
        """Make sure every listed shard has a lease, take a fair share of the ready ones.

        `ready` is given every shard's checkpoint as the store has it and names the shards that
        may be read now (their parents are finished).
        """

    @abc.abstractmethod
    def held(self) -> set[str]:
        """The shards this replica holds and reads now (not those it is handing over)."""

    def handing_off(self) -> set[str]:
        """Held shards another replica asked for: read no more, released once their batches end."""
        return set()

    @abc.abstractmethod
    def expires_in(self, shard_id: str) -> float | None:
        """Seconds until the lease counts as expired (None when free or not leased)."""

    @abc.abstractmethod
    async def renew(self) -> set[str]:
        """Renew every held lease; returns the shards whose leases were lost."""

    @abc.abstractmethod
    async def release(self, shard_id: str) -> None:
        """Give up one shard (finished, or lost) so another replica may take it at once."""

    @abc.abstractmethod
    async def release_all(self) -> None:
        """Give up every shard (graceful stop)."""


class CheckpointStore(abc.ABC):
    """Checkpoints keyed by (scope, shard id); scope names the mapping and its stream."""

    write_spacing: float = 0.005
    """Shortest time between two checkpoint writes of one busy shard: the positions it finishes
    meanwhile go in the next write. A crash reads again at most what this long finished, beyond
    the batches in flight; a stop still writes the last position."""

    async def start(self) -> None:
        """Make the store ready (create or check a table); stores that need nothing do nothing."""
        return None

    def leases_for(self, scope: str) -> ShardLeases:
        """The leases of one scope; a store on one machine holds every shard itself."""
        return SingleOwnerLeases(self, scope)

    @abc.abstractmethod
    async def get(self, scope: str, shard_id: str) -> str | None: ...

    @abc.abstractmethod
    async def set(self, scope: str, shard_id: str, checkpoint: str) -> None: ...

    @abc.abstractmethod
    async def get_window(self, scope: str, shard_id: str) -> str | None:
        """A tumbling window's saved state (JSON text), None when no window is open."""

    @abc.abstractmethod
    async def set_window(self, scope: str, shard_id: str, window: str | None) -> None:
        """Save (or, with None, drop) a tumbling window's state beside the shard's checkpoint."""

    @abc.abstractmethod
    async def close(self) -> None: ...


class SingleOwnerLeases(ShardLeases):
    """Every shard is always held: one process owns the whole checkpoint store."""

    owner = "local"
    renew_interval = 3600.0

    def __init__(self, store: CheckpointStore, scope: str) -> None:
        self._store = store
        self._scope = scope
        self._checkpoints: dict[str, str | None] = {}
        self._held: set[str] = set()
        self.last_scan = []

    async def sync(self, shards: list[Shard], ready: ReadyFor) -> None:
        for shard in shards:
            if shard.shard_id not in self._checkpoints:
                self._checkpoints[shard.shard_id] = await self._store.get(
                    self._scope, shard.shard_id
                )
        ready(dict(self._checkpoints))
        self._held |= {shard.shard_id for shard in shards}

    def held(self) -> set[str]:
        return set(self._held)

    def expires_in(self, shard_id: str) -> float | None:
        return None

    async def renew(self) -> set[str]:
        return set()

    async def release(self, shard_id: str) -> None:
        return None

    async def release_all(self) -> None:
        return None


class MemoryCheckpoints(CheckpointStore):
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
