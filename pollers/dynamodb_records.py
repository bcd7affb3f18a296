"""DynamoDB Streams GetRecords entries as the records Lambda sends, key for key and in key order.

aiobotocore parses binary attributes to bytes and ApproximateCreationDateTime to a datetime;
Lambda sends base64 strings and epoch seconds.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

import orjson
from sluiceway.router.records import SourceRecord

_STREAM_KEYS = (
    "ApproximateCreationDateTime",
    "Keys",
    "NewImage",
    "OldImage",
    "SequenceNumber",
    "SizeBytes",
    "StreamViewType",
)


def _jsonable(value: Any) -> Any:
    """Typed DynamoDB JSON with bytes as base64, as the wire format has it."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    return value


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value or 0.0)


def item_key(keys: dict[str, Any]) -> str:
    """Canonical text of an item's key: the ordering key for ParallelizationFactor lanes."""
    return orjson.dumps(_jsonable(keys), option=orjson.OPT_SORT_KEYS).decode()


def to_source_record(raw: dict[str, Any], *, stream_arn: str, region: str) -> SourceRecord:
    change = raw.get("dynamodb") or {}
    arrival = _epoch(change.get("ApproximateCreationDateTime"))
    dynamodb: dict[str, Any] = {}
    for key in _STREAM_KEYS:
        if key not in change:
            continue
        value = change[key]
        if key == "ApproximateCreationDateTime":
            value = arrival
        dynamodb[key] = _jsonable(value)
    event: dict[str, Any] = {
        "eventID": raw.get("eventID"),
        "eventName": raw.get("eventName"),
        "eventVersion": raw.get("eventVersion", "1.1"),
        "eventSource": raw.get("eventSource", "aws:dynamodb"),
        "awsRegion": raw.get("awsRegion") or region,
        "dynamodb": dynamodb,
        "eventSourceARN": stream_arn,
    }
    if raw.get("userIdentity"):
        event["userIdentity"] = raw["userIdentity"]
    sequence = str(change.get("SequenceNumber", ""))
    return SourceRecord(
        event=event,
        item_id=sequence,
        size=len(orjson.dumps(event)),
        key=item_key(change.get("Keys") or {}),
        arrival=arrival,
    )
