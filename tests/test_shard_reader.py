"""The shard reader's edge cases, against a scripted stream API (no emulator can trim on demand)."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError
from sluiceway.core.stats import MappingStats
from sluiceway.handlers.invoker import Invoker
from sluiceway.handlers.results import InvocationResult, Returned
from sluiceway.pollers.checkpoints import SHARD_END, MemoryCheckpoints
from sluiceway.pollers.shards import Shard, StartPosition
from sluiceway.pollers.stream import RecordsPage, ShardReader
from sluiceway.router.records import SourceRecord
from sluiceway.router.runner import BatchRunner

pytestmark = pytest.mark.anyio


class TrimmedStream:
    """A DynamoDB-like shard whose retention has passed the stored checkpoint."""

    stream_arn = "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/1"
    min_poll_interval = 0.01

    def __init__(self) -> None:
        self.positions: list[str] = []

    async def resolve(self) -> None: ...

    async def list_shards(self) -> list[Shard]:
        return [Shard("shard-1", (), True)]

    async def get_iterator(self, shard_id: str, position: StartPosition) -> str:
        self.positions.append(position.kind)
        if position.kind == "AFTER_SEQUENCE_NUMBER":
            raise ClientError(
                {"Error": {"Code": "TrimmedDataAccessException", "Message": "trimmed"}},
                "GetShardIterator",
            )
        return "oldest"

    async def get_records(self, shard_id: str, iterator: str) -> RecordsPage:
        record = SourceRecord(event={"n": 1}, item_id="900", size=10, key="k")
        return RecordsPage([(record, record.item_id)], None)


class Recorder(Invoker):
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def invoke(self, event: dict[str, Any]) -> InvocationResult:
        self.events.append(event)
        return Returned(None)


async def test_a_checkpoint_past_retention_resumes_from_the_oldest_record() -> None:
    api, store, invoker = TrimmedStream(), MemoryCheckpoints(), Recorder()
    stats = MappingStats(mapping="d", kind="dynamodb")
    reader = ShardReader(
        api=api,
        shard=Shard("shard-1", (), True),
        start=StartPosition.after("100"),
        scope="d",
        store=store,
        runner=BatchRunner(invoker=invoker, stats=stats),
        stats=stats,
        batch_size=10,
        window=0,
    )
    await reader.run()
    assert api.positions == ["AFTER_SEQUENCE_NUMBER", "TRIM_HORIZON"]
    assert invoker.events == [{"Records": [{"n": 1}]}]
    assert await store.get("d", "shard-1") == SHARD_END
