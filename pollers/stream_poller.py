"""A stream mapping: discover shards, start a reader per shard as its parents finish, re-discover.

Source-neutral: `pollers.kinesis` and `pollers.dynamodb` supply the `StreamApi`.
"""

from __future__ import annotations

import logging
import math
import time

import anyio
from sluiceway.config.mapping import MappingConfig
from sluiceway.core.aws_retry import call_with_retry, error_code
from sluiceway.core.logs import bind as bind_log_context
from sluiceway.core.stats import MappingStats
from sluiceway.core.telemetry import upkeep_span
from sluiceway.pollers.checkpoints import (
    SHARD_END,
    CheckpointStore,
    CheckpointStoreFailed,
    ShardLeases,
)
from sluiceway.pollers.pacing import PollPacer
from sluiceway.pollers.poller import Poller
from sluiceway.pollers.shards import Lineage, Shard, StartPosition
from sluiceway.pollers.stream import ShardReader, StreamApi
from sluiceway.router.runner import BatchRunner

log = logging.getLogger(__name__)

DISCOVERY_INTERVAL_SECONDS = 10.0
"""How often the shard list is read again (also at once whenever a shard ends)."""
HANDOFF_GRACE_SECONDS = 10.0
"""Beyond the function timeout and a renewal, how long a replica that asked for a lease waits
for the owner's last batch before taking the lease anyway."""


def starting_position(mapping: MappingConfig) -> StartPosition:
    kind = mapping.starting_position or "TRIM_HORIZON"
    if kind == "AT_TIMESTAMP":
        return StartPosition("AT_TIMESTAMP", timestamp=mapping.starting_position_timestamp)
    return StartPosition(kind)


class StreamPoller(Poller):
    """Runs one Kinesis or DynamoDB stream mapping until `stop()` (graceful) or cancellation."""

    def __init__(
        self,
        mapping: MappingConfig,
        api: StreamApi,
        runner: BatchRunner,
        stats: MappingStats,
        store: CheckpointStore,
        *,
        discovery_interval: float = DISCOVERY_INTERVAL_SECONDS,
        pacer: PollPacer | None = None,
    ) -> None:
        self.mapping = mapping
        self.api = api
        self._runner = runner
        self._stats = stats
        self._store = store
        self._interval = discovery_interval
        self._pacer = pacer or PollPacer()  # the service shares one among all its stream mappings
        self._lineage = Lineage(starting_position(mapping))
        self._readers: dict[str, ShardReader] = {}
        self._checkpoints: dict[str, str | None] = {}
        self._leases: ShardLeases | None = None
        self._shards: list[Shard] = []
        self._listed_at = -math.inf
        self._stopping = anyio.Event()
        self._wake = anyio.Event()
        self._resolve_scope = anyio.CancelScope()
        self._discovery_scope = anyio.CancelScope()
        self.failure: CheckpointStoreFailed | None = None
        """Why the mapping stopped on its own: its checkpoint store failed (`run` raises it)."""

    @property
    def scope(self) -> str:
        """Checkpoint scope: the mapping and the stream, so a new stream never inherits positions."""
        return f"{self.mapping.name}|{self.api.stream_arn}"

    def stop(self) -> None:
        self._stopping.set()
        self._resolve_scope.cancel()
        self._discovery_scope.cancel()
        self._wake.set()
        for reader in list(self._readers.values()):
            reader.stop()

    def _note_error(self, exc: BaseException) -> None:
        self._stats.last_error = f"{error_code(exc)}: {exc}"

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        self._stats.state = "Enabling"
        with self._resolve_scope:
            await call_with_retry(self.api.resolve, on_error=self._note_error, retry_all=True)
        task_status.started()
        if self._stopping.is_set():
            self._stats.state = "Disabled"
            return
        self._stats.state = "Enabled"
        self._stats.concurrency_target = 0
        leases = self._leases = await self._open_leases()
        tick = min(self._interval, leases.renew_interval)
        try:
            async with anyio.create_task_group() as renewing:
                renewing.start_soon(self._renew_loop, leases)
                async with anyio.create_task_group() as tg:
                    while not self._stopping.is_set():
                        self._discovery_scope = anyio.CancelScope()
                        with self._discovery_scope:
                            await self._discover(tg)
                        with anyio.move_on_after(tick):
                            await self._wake.wait()
                renewing.cancel_scope.cancel()  # readers are done: their leases can go
        finally:
            # Graceful hand-off: owners cleared so other replicas take the shards at once.
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                await leases.release_all()
            self._stats.leases = len(leases.held())
        if self.failure is not None:
            raise self.failure
        self._stats.state = "Disabled"

    def _store_failed(self, failure: CheckpointStoreFailed) -> None:
        """The store cannot checkpoint any more: stop every shard (their batches in flight end
        unsaved, so they are read again after a restart), not ready, and `run` raises it."""
        if self.failure is not None:
            return
        self.failure = failure
        self._stats.state = "Failed"
        self._stats.last_error = str(failure)
        log.error("mapping %s: stopping: %s", self.mapping.name, failure)
        self.stop()

    async def _open_leases(self) -> ShardLeases:
        """The store's leases for this scope: every shard (memory, SQLite) or a share (DynamoDB)."""
        await call_with_retry(self._store.start, on_error=self._note_error, retry_all=True)
        leases = self._store.leases_for(self.scope)
        leases.on_lost = self._lease_lost
        leases.on_handoff = self._hand_off
        # A stopped reader's last batch runs one invocation at most (retries end on a stop).
        leases.handoff_timeout = (
            self.mapping.function_timeout + 2 * leases.renew_interval + HANDOFF_GRACE_SECONDS
        )
        return leases

    def _hand_off(self, shard_id: str) -> None:
        """Another replica asked for this shard: stop reading it; `_run_reader` hands the lease
        over once the batches in flight are finished and checkpointed."""
        reader = self._readers.get(shard_id)
        if reader is not None and not reader.stopping:
            log.info(
                "mapping %s: handing %s over after the batches in flight",
                self.mapping.name,
                shard_id,
            )
            reader.stop()

    def _lease_lost(self, shard_id: str) -> None:
        reader = self._readers.get(shard_id)
        if reader is not None:
            log.warning("mapping %s: lease of %s lost; stopping", self.mapping.name, shard_id)
            reader.stop()

    async def _renew_loop(self, leases: ShardLeases) -> None:
        """Renew well inside the lease duration; a lost lease stops its reader before its next
        batch (its in-flight batch can no longer checkpoint)."""
        while True:
            await anyio.sleep(leases.renew_interval)
            try:
                with upkeep_span("renew leases", sluiceway__mapping=self.mapping.name):
                    await leases.renew()
            except Exception as exc:  # renewal is retried next interval
                self._note_error(exc)
            self._stop_unheld(leases)
            await self._hand_over_idle(leases)

    def _stop_unheld(self, leases: ShardLeases) -> None:
        held = leases.held()
        handing_off = leases.handing_off()
        self._stats.leases = len(held)
        for shard_id in list(self._readers):
            if shard_id in handing_off:
                self._hand_off(shard_id)
            elif shard_id not in held:
                self._lease_lost(shard_id)

    async def _hand_over_idle(self, leases: ShardLeases) -> None:
        """A lease asked for while no reader runs it (not started yet, or already stopped) is
        handed over at once: a mark must never outlive the reader it waits for."""
        for shard_id in leases.handing_off() - set(self._readers):
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                await leases.release(shard_id)

    async def _discover(self, tg: anyio.abc.TaskGroup) -> None:
        """List shards when due (or woken by a shard end), sync leases, start held shards."""
        assert self._leases is not None
        if self._wake.is_set() or time.monotonic() - self._listed_at >= self._interval:
            self._wake = anyio.Event()
            with upkeep_span("list shards", sluiceway__mapping=self.mapping.name):
                self._shards = await call_with_retry(
                    self.api.list_shards, on_error=self._note_error, retry_all=True
                )
            self._listed_at = time.monotonic()
        shards = self._shards

        def ready(checkpoints: dict[str, str | None]) -> set[str]:
            """Finished parents first (every replica's checkpoints count), then the shards that
            may be read now: the ones worth a lease."""
            self._checkpoints.update(checkpoints)
            self._lineage.plan(shards, self._checkpoints, held=())
            return self._lineage.ready(shards)

        try:
            with upkeep_span("sync leases", sluiceway__mapping=self.mapping.name):
                await self._leases.sync(shards, ready)
        except Exception as exc:  # the lease table is tried again next tick
            self._note_error(exc)
            log.warning("mapping %s: lease sync failed: %s", self.mapping.name, error_code(exc))
            return
        self._stop_unheld(self._leases)
        await self._hand_over_idle(self._leases)
        self._describe_shards(shards)
        if self._stopping.is_set():
            return
        held = self._leases.held()
        for shard, position in self._lineage.plan(shards, self._checkpoints, held=held):
            reader = ShardReader(
                api=self.api,
                shard=shard,
                start=position,
                scope=self.scope,
                store=self._store,
                runner=self._runner,
                stats=self._stats,
                batch_size=self.mapping.effective_batch_size,
                window=float(self.mapping.maximum_batching_window_in_seconds),
                parallelization=self.mapping.parallelization_factor,
                tumbling_window_seconds=self.mapping.tumbling_window_in_seconds or 0,
                idle_poll_max=self.mapping.idle_poll_max_seconds,
                poll_interval=self.mapping.poll_interval_seconds,
                pacer=self._pacer,
                on_store_failed=self._store_failed,
            )
            self._readers[shard.shard_id] = reader
            self._stats.concurrency_target += self.mapping.parallelization_factor
            log.info("mapping %s: reading %s from %s", self.mapping.name, shard.shard_id, position)
            tg.start_soon(self._run_reader, reader)

    def _describe_shards(self, shards: list[Shard]) -> None:
        """Refresh /status's per-shard view from the latest listing and lease scan."""
        assert self._leases is not None
        held = self._leases.held()
        scan = {lease.shard_id: lease for lease in self._leases.last_scan}
        for shard in shards:
            view = self._stats.shard(shard.shard_id)
            view["parents"] = list(shard.parents)
            here = shard.shard_id in held
            view["read_here"] = here
            view.setdefault("checkpoint", self._checkpoints.get(shard.shard_id))
            lease = scan.get(shard.shard_id)
            # A lease taken in this very sync is newer than the scan: trust what is held.
            view["owner"] = self._leases.owner if here else (lease.owner if lease else None)
            if lease is None:
                continue
            view["lease_counter"] = lease.counter
            view["handoff_to"] = lease.handoff_to
            if lease.checkpoint is not None:
                view["checkpoint"] = lease.checkpoint
            view["lease_expires_in_seconds"] = self._leases.expires_in(shard.shard_id)

    async def _run_reader(self, reader: ShardReader) -> None:
        try:
            with bind_log_context(mapping=self.mapping.name, shard=reader.shard.shard_id):
                await reader.run()
        finally:
            self._readers.pop(reader.shard.shard_id, None)
            self._stats.concurrency_target -= self.mapping.parallelization_factor
        shard_id = reader.shard.shard_id
        if reader.ended:
            self._lineage.mark_finished(shard_id)
            self._checkpoints[shard_id] = SHARD_END
            self._wake.set()
        else:
            self._lineage.release(shard_id)
        if self._leases is not None and (reader.ended or shard_id not in self._leases.held()):
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                await self._leases.release(shard_id)
            self._stats.leases = len(self._leases.held())
