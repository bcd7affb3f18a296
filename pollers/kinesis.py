"""Kinesis Data Streams: the calls a shard reader needs, and the mapping's poller."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from botocore.utils import parse_timestamp
from sluiceway.config.mapping import MappingConfig
from sluiceway.core.aws import AwsClients
from sluiceway.core.fast_calls import FastCalls
from sluiceway.core.telemetry import poll_span, source_name
from sluiceway.pollers.kinesis_records import to_source_records
from sluiceway.pollers.shards import Shard, StartPosition, shard_from_listing
from sluiceway.pollers.stream import RecordsPage
from sluiceway.router import tracing

GET_RECORDS_LIMIT = 10_000
"""Kinesis's per-call maximum; batches are cut from what a call returns."""


def epoch_timestamp(value: Any) -> datetime:
    """botocore's timestamp parser without its cost: an epoch number (every timestamp Kinesis
    sends) becomes the same instant as a UTC datetime, instead of building a `tzlocal` per
    record, which was a fifth of a full GetRecords page's CPU; anything else goes to botocore."""
    if type(value) is int or type(value) is float:
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OSError, OverflowError, ValueError):
            pass
    return parse_timestamp(value)


def use_fast_timestamps(client: Any) -> None:
    """Parse this client's timestamps with `epoch_timestamp`: its endpoint gets its own parser
    factory, as the session's is shared by every client (a no-op for clients without one)."""
    endpoint = getattr(client, "_endpoint", None)
    shared = getattr(endpoint, "_response_parser_factory", None)
    if shared is None or not hasattr(shared, "set_parser_defaults"):
        return
    factory = copy.copy(shared)
    factory._defaults = {**getattr(shared, "_defaults", {}), "timestamp_parser": epoch_timestamp}
    endpoint._response_parser_factory = factory


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
        self.deaggregate_records = mapping.deaggregate_records
        self._kinesis: Any = None
        self._fast: FastCalls | None = None
        self._summary: dict[str, Any] = {}

    async def resolve(self) -> None:
        self._kinesis = await self._clients.client("kinesis", region=self.region)
        use_fast_timestamps(self._kinesis)
        self._fast = await self._clients.fast("kinesis", region=self.region)
        summary = await self._kinesis.describe_stream_summary(StreamName=self.stream_name)
        self._summary = summary["StreamDescriptionSummary"]
        self.stream_arn = self._summary.get("StreamARN", self.stream_arn)

    async def describe(self) -> str:
        summary = self._summary
        return f"{summary['StreamStatus']}, {summary.get('OpenShardCount', '?')} open shards"

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
            assert self._fast is not None, "resolve() first"
            response = await self._fast.call(
                "GetRecords", {"ShardIterator": iterator, "Limit": GET_RECORDS_LIMIT}, wire=True
            )
            records = [
                pair
                for raw in response.get("Records", [])
                for pair in to_source_records(
                    raw,
                    shard_id=shard_id,
                    stream_arn=self.stream_arn,
                    region=self.region,
                    identity_arn=self.identity_arn,
                    deaggregate_records=self.deaggregate_records,
                )
            ]
            tracing.received(poll, [record for record, _ in records])
        # A closed shard read to its end has no NextShardIterator (and lists its ChildShards).
        return RecordsPage(
            records, response.get("NextShardIterator"), response.get("MillisBehindLatest")
        )
