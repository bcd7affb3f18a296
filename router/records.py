"""The source-neutral record the router batches, filters and invokes with.

Pollers turn SQS messages and stream records into `SourceRecord`s; the router only ever sees these,
so batching, filtering and retry policy are written once for every source kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import SpanContext


@dataclass(slots=True)
class SourceRecord:
    """One record exactly as Lambda would put it in `event["Records"]`, plus what the router needs."""

    event: dict[str, Any]
    """The Lambda-shaped record (key for key what AWS sends)."""
    item_id: str
    """The `itemIdentifier` a handler returns in `batchItemFailures` (messageId or sequence number)."""
    size: int
    """Bytes this record adds to the invocation payload (counts toward the 6 MB limit)."""
    key: str | None = None
    """Ordering key: FIFO message group id, Kinesis partition key or DynamoDB item key."""
    arrival: float = 0.0
    """When the source received the record, epoch seconds (record age, iterator age, windows)."""
    handle: Any = field(default=None, repr=False)
    """Source-specific handle (SQS receipt handle, stream position) the poller settles with."""
    alias: str | None = None
    """Another identifier a partial batch response may name this record by: a KPL sub-record's
    aggregate sequence number, which names the aggregate from its first sub-record in the batch."""
    receive: SpanContext | None = field(default=None, repr=False)
    """The traced poll (receive span) that read this record; its batch's process span links it."""
