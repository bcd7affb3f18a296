"""A stream mapping: discover shards, start a reader per shard as its parents finish, re-discover.

Source-neutral: `pollers.kinesis` and `pollers.dynamodb` supply the `StreamApi`.
"""

from __future__ import annotations

import logging

import anyio

from config.mapping import MappingConfig
from pollers.checkpoints import CheckpointStore
from pollers.retry import call_with_retry, error_code
from pollers.shards import Lineage, Shard, StartPosition
from pollers.stream import ShardReader, StreamApi
from router.processor import BatchProcessor
from router.stats import MappingStats

log = logging.getLogger(__name__)

DISCOVERY_INTERVAL_SECONDS = 10.0
"""How often the shard list is read again (also at once whenever a shard ends)."""


def starting_position(mapping: MappingConfig) -> StartPosition:
    kind = mapping.starting_position or "TRIM_HORIZON"
    if kind == "AT_TIMESTAMP":
        return StartPosition("AT_TIMESTAMP", timestamp=mapping.starting_position_timestamp)
    return StartPosition(kind)


class StreamPoller:
    """Runs one Kinesis or DynamoDB stream mapping until `stop()` (graceful) or cancellation."""

    def __init__(
        self,
        mapping: MappingConfig,
        api: StreamApi,
        processor: BatchProcessor,
        stats: MappingStats,
        store: CheckpointStore,
        *,
        discovery_interval: float = DISCOVERY_INTERVAL_SECONDS,
    ) -> None:
        self.mapping = mapping
        self.api = api
        self._processor = processor
        self._stats = stats
        self._store = store
        self._interval = discovery_interval
        self._lineage = Lineage(starting_position(mapping))
        self._readers: dict[str, ShardReader] = {}
        self._checkpoints: dict[str, str | None] = {}
        self._stopping = anyio.Event()
        self._wake = anyio.Event()
        self._resolve_scope = anyio.CancelScope()
        self._discovery_scope = anyio.CancelScope()

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
        async with anyio.create_task_group() as tg:
            while not self._stopping.is_set():
                self._wake = anyio.Event()
                self._discovery_scope = anyio.CancelScope()
                with self._discovery_scope:
                    await self._discover(tg)
                with anyio.move_on_after(self._interval):
                    await self._wake.wait()
        self._stats.state = "Disabled"

    async def _discover(self, tg: anyio.abc.TaskGroup) -> None:
        shards: list[Shard] = await call_with_retry(
            self.api.list_shards, on_error=self._note_error, retry_all=True
        )
        for shard in shards:
            if shard.shard_id not in self._checkpoints:
                self._checkpoints[shard.shard_id] = await self._store.get(
                    self.scope, shard.shard_id
                )
        if self._stopping.is_set():
            return
        for shard, position in self._lineage.plan(shards, self._checkpoints):
            reader = ShardReader(
                api=self.api,
                shard=shard,
                start=position,
                scope=self.scope,
                store=self._store,
                processor=self._processor,
                stats=self._stats,
                batch_size=self.mapping.effective_batch_size,
                window=float(self.mapping.maximum_batching_window_in_seconds),
                parallelization=self.mapping.parallelization_factor,
            )
            self._readers[shard.shard_id] = reader
            self._stats.concurrency_target += self.mapping.parallelization_factor
            log.info("mapping %s: reading %s from %s", self.mapping.name, shard.shard_id, position)
            tg.start_soon(self._run_reader, reader)

    async def _run_reader(self, reader: ShardReader) -> None:
        try:
            await reader.run()
        finally:
            self._readers.pop(reader.shard.shard_id, None)
            self._stats.concurrency_target -= self.mapping.parallelization_factor
        if reader.ended:
            self._lineage.mark_finished(reader.shard.shard_id)
            self._wake.set()
