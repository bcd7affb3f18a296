"""Reaching a mapping's source: the one probe `check` reports and `run` starts from.

Both go through the same calls (`read_queue`, a stream API's `resolve`), so a source that `check`
accepts is one that `run` can read, and the reverse.
"""

from __future__ import annotations

from collections.abc import Callable

from sluiceway.config.mapping import MappingConfig
from sluiceway.core.aws import AwsClients
from sluiceway.pollers.dynamodb import DynamoDbStreamApi
from sluiceway.pollers.kinesis import KinesisApi
from sluiceway.pollers.queue_info import read_queue
from sluiceway.pollers.stream import StreamApi

STREAM_APIS: dict[str, Callable[[AwsClients, MappingConfig], StreamApi]] = {
    "kinesis": KinesisApi,
    "dynamodb": DynamoDbStreamApi,
}
"""The stream API each stream source kind is read through; one StreamPoller serves both."""


async def probe_source(mapping: MappingConfig, clients: AwsClients) -> tuple[str, str]:
    """(what was reached, how it looks); raises what AWS answered when it cannot be read."""
    if mapping.kind == "sqs":
        source = mapping.source_ref
        info = await read_queue(await clients.client("sqs", region=source.region), source)
        return f"source {info.url}", info.describe()
    api = STREAM_APIS[mapping.kind](clients, mapping)
    await api.resolve()
    return f"source {api.stream_arn}", await api.describe()
