"""Kinesis Data Streams: the calls a shard reader needs, and the mapping's poller."""

from __future__ import annotations

from typing import Any

from config.mapping import MappingConfig
from pollers.aws import AwsClients
from pollers.checkpoints import CheckpointStore
from pollers.kinesis_records import to_source_records
from pollers.shards import Shard, StartPosition, shard_from_listing
from pollers.stream import RecordsPage
from pollers.stream_poller import StreamPoller
from router.processor import BatchProcessor
from router.stats import MappingStats
from router.telemetry import poll_span, set_count, source_name

GET_RECORDS_LIMIT = 10_000
"""Kinesis's per-call maximum; batches are cut from what a call returns."""


class KinesisApi:
    """ListShards / GetShardIterator / GetRecords on one stream, by name (every emulator has it)."""

    min_poll_interval = 0.2  # 5 GetRecords per second per shard

    def __init__(self, clients: AwsClients, mapping: MappingConfig) -> None:
        source = mapping.source_ref
        self._clients = clients
        self.stream_name = source.name
        self.stream_arn = source.arn
        self.region = source.region
        # Lambda names the function's execution role; Sluiceway has none, so it names itself.
        self.identity_arn = f"arn:{source.partition}:iam::{source.account}:role/sluiceway"
        self._kinesis: Any = None

    async def resolve(self) -> None:
        self._kinesis = await self._clients.client("kinesis")
        summary = await self._kinesis.describe_stream_summary(StreamName=self.stream_name)
        self.stream_arn = summary["StreamDescriptionSummary"].get("StreamARN", self.stream_arn)

    async def list_shards(self) -> list[Shard]:
        shards: list[Shard] = []
        params: dict[str, Any] = {"StreamName": self.stream_name}
        while True:
            response = await self._kinesis.list_shards(**params)
            shards.extend(shard_from_listing(s) for s in response.get("Shards", []))
            token = response.get("NextToken")
            if not token:
                return shards
            params = {"NextToken": token}

    async def get_iterator(self, shard_id: str, position: StartPosition) -> str:
        params: dict[str, Any] = {
            "StreamName": self.stream_name,
            "ShardId": shard_id,
            "ShardIteratorType": position.kind,
        }
        if position.sequence is not None:
            params["StartingSequenceNumber"] = position.sequence
        if position.timestamp is not None:
            params["Timestamp"] = position.timestamp
        response = await self._kinesis.get_shard_iterator(**params)
        return str(response["ShardIterator"])

    async def get_records(self, shard_id: str, iterator: str) -> RecordsPage:
        with poll_span(
            source_name(self.stream_arn), "kinesis", "GetRecords", sluiceway__shard=shard_id
        ) as poll:
            response = await self._kinesis.get_records(
                ShardIterator=iterator, Limit=GET_RECORDS_LIMIT
            )
            set_count(poll, len(response.get("Records", [])))
        records = [
            pair
            for raw in response.get("Records", [])
            for pair in to_source_records(
                raw,
                shard_id=shard_id,
                stream_arn=self.stream_arn,
                region=self.region,
                identity_arn=self.identity_arn,
            )
        ]
        # A closed shard read to its end has no NextShardIterator (and lists its ChildShards).
        return RecordsPage(
            records, response.get("NextShardIterator"), response.get("MillisBehindLatest")
        )


def kinesis_poller(
    mapping: MappingConfig,
    clients: AwsClients,
    processor: BatchProcessor,
    stats: MappingStats,
    store: CheckpointStore,
) -> StreamPoller:
    return StreamPoller(
        mapping, KinesisApi(clients, mapping), processor, stats, store, clients=clients
    )
