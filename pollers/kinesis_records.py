"""Kinesis GetRecords entries as the records Lambda puts in `event["Records"]`, key for key.

aiobotocore gives `Data` as bytes and `ApproximateArrivalTimestamp` as a datetime; Lambda sends
base64 and float epoch seconds. KPL-aggregated records are split into their sub-records, which
share the aggregate's sequence number.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

import orjson
from sluiceway.pollers.kinesis_agg import deaggregate
from sluiceway.router.records import SourceRecord


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value or 0.0)


def kinesis_event(
    *,
    partition_key: str,
    sequence: str,
    data: bytes,
    arrival: float,
    shard_id: str,
    stream_arn: str,
    region: str,
    identity_arn: str,
) -> dict[str, Any]:
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": partition_key,
            "sequenceNumber": sequence,
            "data": base64.b64encode(data).decode("ascii"),
            "approximateArrivalTimestamp": arrival,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{sequence}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": identity_arn,
        "awsRegion": region,
        "eventSourceARN": stream_arn,
    }


def to_source_records(
    raw: dict[str, Any], *, shard_id: str, stream_arn: str, region: str, identity_arn: str
) -> list[tuple[SourceRecord, bool]]:
    """(record, checkpointable) pairs: only the last sub-record of an aggregate is checkpointable."""
    sequence = str(raw["SequenceNumber"])
    data = bytes(raw.get("Data") or b"")
    arrival = _epoch(raw.get("ApproximateArrivalTimestamp"))
    parts = deaggregate(data)
    pieces = (
        [(raw["PartitionKey"], data)]
        if parts is None
        else [(p.partition_key, p.data) for p in parts]
    )
    out: list[tuple[SourceRecord, bool]] = []
    for index, (key, payload) in enumerate(pieces):
        event = kinesis_event(
            partition_key=key,
            sequence=sequence,
            data=payload,
            arrival=arrival,
            shard_id=shard_id,
            stream_arn=stream_arn,
            region=region,
            identity_arn=identity_arn,
        )
        record = SourceRecord(
            event=event,
            item_id=sequence,
            size=len(orjson.dumps(event)),
            key=key,
            arrival=arrival,
        )
        out.append((record, index == len(pieces) - 1))
    return out
