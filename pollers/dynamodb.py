"""DynamoDB Streams: resolve the table's stream, the calls a shard reader needs, and the poller."""

from __future__ import annotations

from typing import Any

from sluiceway.config.mapping import MappingConfig
from sluiceway.core.aws import AwsClients
from sluiceway.core.errors import SluicewayError
from sluiceway.core.telemetry import poll_span, source_name
from sluiceway.pollers.dynamodb_records import to_source_record
from sluiceway.pollers.shards import Shard, StartPosition, shard_from_listing
from sluiceway.pollers.stream import RecordsPage
from sluiceway.router import tracing

GET_RECORDS_LIMIT = 1000
"""DynamoDB Streams' per-call maximum."""


class StreamNotEnabled(SluicewayError, RuntimeError):
    """The table has no stream; retried, so the mapping starts once one is enabled."""


class DynamoDbStreamApi:
    """DescribeStream / GetShardIterator / GetRecords on one table's stream."""

    min_poll_interval = 0.25  # 4 GetRecords per second per shard

    def __init__(self, clients: AwsClients, mapping: MappingConfig) -> None:
        source = mapping.source_ref
        self._clients = clients
        self._source = source
        self.region = source.region
        self.stream_arn = source.arn if source.stream_label else ""
        self._streams: Any = None

    async def resolve(self) -> None:
        """A table ARN means the table's latest stream (DescribeTable's LatestStreamArn)."""
        self._streams = await self._clients.client("dynamodbstreams", region=self.region)
        if self._source.stream_label:
            return
        dynamodb = await self._clients.client("dynamodb", region=self.region)
        table = (await dynamodb.describe_table(TableName=self._source.table))["Table"]
        arn = table.get("LatestStreamArn")
        if not arn or not table.get("StreamSpecification", {}).get("StreamEnabled", True):
            raise StreamNotEnabled(f"table {self._source.table} has no stream enabled")
        self.stream_arn = arn

    async def describe(self) -> str:
        response = await self._streams.describe_stream(StreamArn=self.stream_arn, Limit=1)
        description = response["StreamDescription"]
        return f"{description['StreamStatus']}, {description.get('StreamViewType', '?')}"

    async def list_shards(self) -> list[Shard]:
        shards: list[Shard] = []
        params: dict[str, Any] = {"StreamArn": self.stream_arn}
        while True:
            response = await self._streams.describe_stream(**params)
            description = response["StreamDescription"]
            shards.extend(shard_from_listing(s) for s in description.get("Shards", []))
            last = description.get("LastEvaluatedShardId")
            if not last:
                return shards
            params = {"StreamArn": self.stream_arn, "ExclusiveStartShardId": last}

    async def get_iterator(self, shard_id: str, position: StartPosition) -> str:
        params: dict[str, Any] = {
            "StreamArn": self.stream_arn,
            "ShardId": shard_id,
            "ShardIteratorType": position.kind,
        }
        if position.sequence is not None:
            params["SequenceNumber"] = position.sequence
        response = await self._streams.get_shard_iterator(**params)
        return str(response["ShardIterator"])

    async def get_records(self, shard_id: str, iterator: str) -> RecordsPage:
        with poll_span(
            source_name(self.stream_arn), "dynamodb", "GetRecords", sluiceway__shard=shard_id
        ) as poll:
            response = await self._streams.get_records(
                ShardIterator=iterator, Limit=GET_RECORDS_LIMIT
            )
            records = [
                to_source_record(raw, stream_arn=self.stream_arn, region=self.region)
                for raw in response.get("Records", [])
            ]
            tracing.received(poll, records)
        # A DynamoDB record's checkpoint is its sequence number (its item id).
        return RecordsPage(
            [(record, record.item_id) for record in records], response.get("NextShardIterator")
        )
