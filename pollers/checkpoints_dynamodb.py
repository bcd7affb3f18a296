"""Checkpoints kept in the DynamoDB lease table, so several replicas can share a stream's shards.

A checkpoint (or tumbling-window state) is written only while this replica holds the shard's
lease, conditionally on the lease counter it last saw; a replica that lost the lease drops the
write (and its reader stops before the next batch). Checkpoints never expire: a lease's owner
changes, its checkpoint stays.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
from sluiceway.core.aws import AwsClients
from sluiceway.core.aws_retry import call_with_retry
from sluiceway.pollers.checkpoints import CheckpointStore
from sluiceway.pollers.leases import LeaseTable, TableLeases, replica_id

log = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 10.0


class DynamoCheckpoints(CheckpointStore):
    """`CheckpointStore` on a lease table; `leases_for(scope)` hands out each scope's leases."""

    write_spacing = 0.05
    """A conditional write costs about a millisecond of CPU and a round trip: a busy shard
    writes its checkpoint at most 20 times a second."""

    def __init__(
        self,
        table: str,
        region: str,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        owner: str | None = None,
        clients: AwsClients | None = None,
    ) -> None:
        self.owner = owner or replica_id()
        self.lease_seconds = lease_seconds
        self._own_clients = clients is None
        self._clients = clients or AwsClients(region)
        self._entered = False
        self.table = LeaseTable(self._dynamodb, table)
        self._scopes: dict[str, TableLeases] = {}
        self._ready = False
        self._open_lock = anyio.Lock()

    async def _dynamodb(self) -> Any:
        if self._own_clients and not self._entered:
            await self._clients.__aenter__()
            self._entered = True
        return await self._clients.client("dynamodb")

    async def start(self) -> None:
        """Create or check the table (retrying transient errors a while); once per process."""
        async with self._open_lock:
            if not self._ready:
                await call_with_retry(self.table.ensure, attempts=8, max_wait=5.0)
                self._ready = True

    def leases_for(self, scope: str) -> TableLeases:
        if scope not in self._scopes:
            self._scopes[scope] = TableLeases(
                self.table, scope, self.owner, lease_seconds=self.lease_seconds
            )
        return self._scopes[scope]

    async def get(self, scope: str, shard_id: str) -> str | None:
        await self.start()
        lease = await call_with_retry(self.table.get, scope, shard_id, attempts=5)
        return None if lease is None else lease.checkpoint

    async def set(self, scope: str, shard_id: str, checkpoint: str) -> None:
        if not await self.leases_for(scope).write(shard_id, checkpoint=checkpoint):
            log.warning("checkpoint %s of %s dropped: lease not held", checkpoint, shard_id)

    async def get_window(self, scope: str, shard_id: str) -> str | None:
        await self.start()
        lease = await call_with_retry(self.table.get, scope, shard_id, attempts=5)
        return None if lease is None else lease.window

    async def set_window(self, scope: str, shard_id: str, window: str | None) -> None:
        if not await self.leases_for(scope).write(shard_id, windowState=window):
            log.warning("window state of %s dropped: lease not held", shard_id)

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            for leases in self._scopes.values():
                with anyio.move_on_after(5):
                    await leases.release_all()
            if self._own_clients and self._entered:
                await self._clients.__aexit__(None, None, None)
                self._entered = False
